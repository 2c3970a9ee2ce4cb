"""MLflow: where runs go, what each run records, and a tracked training.

Embedded by default (SQLite store and artifacts under `tracking.dir`, no server); any tracking
server through `tracking.uri`. Per-epoch metrics enter through a Keras callback, so train.py
stays unaware of MLflow.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from cifar_exp import plots, provenance
from cifar_exp.config import flatten, mask, to_dict, to_yaml, validate
from cifar_exp.data import CLASS_NAMES, Splits, load_cifar10
from cifar_exp.train import TrainResult, train

log = logging.getLogger(__name__)

for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.models.model"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def tracking_uri(cfg: Any) -> str:
    """The URI runs go to: `tracking.uri`, else the embedded SQLite store in `tracking.dir`."""
    if cfg.uri:
        return str(cfg.uri)
    return f"sqlite:///{(Path(cfg.dir) / 'mlflow.db').resolve()}"


def setup(cfg: Any) -> str:
    """Point MLflow at the configured store; returns the id of `tracking.experiment_name`."""
    uri = tracking_uri(cfg)
    artifacts = None
    if not cfg.uri:
        root = Path(cfg.dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        artifacts = (root / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(cfg.experiment_name, artifact_location=artifacts)


class MlflowLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics (the Keras history keys, lr, epoch_time) with step=epoch."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), stamp, epoch + 1)
            for k, v in (logs or {}).items()
            if math.isfinite(float(v))
        ]
        MlflowClient().log_batch(self.run_id, metrics=metrics, synchronous=True)


@contextmanager
def run(
    name: str | None,
    experiment_id: str,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """An MLflow run that ends FAILED (with the reason) on an error and KILLED on Ctrl-C."""
    active = mlflow.start_run(
        run_name=name,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags=tags,
    )
    try:
        yield active
    except KeyboardInterrupt:
        mlflow.set_tag("failure_reason", "interrupted (Ctrl-C)")
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        mlflow.set_tag("failure_reason", f"{type(e).__name__}: {e}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def log_config(cfg: Any) -> None:
    """The resolved config: as params (dotted keys, search space left out) and as YAML."""
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith("search.")}
    mlflow.log_params(params)
    mlflow.log_text(to_yaml(cfg), "config.yaml")


def _summary(model: Any) -> str:
    buf = io.StringIO()
    model.summary(print_fn=lambda line, line_break=True: buf.write(line + "\n"), line_length=100)
    return buf.getvalue()


def log_result(result: TrainResult, cfg: Any) -> None:
    """Plots, history table, model summary, test metrics and the model itself."""
    import pandas as pd

    mlflow.log_text(_summary(result.model), "model_summary.txt")
    hist = pd.DataFrame(result.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    mlflow.log_text(hist.to_csv(index=False), "history.csv")
    for metric in ("accuracy", "loss"):
        mlflow.log_figure(plots.curve(result.history, metric), f"plots/{metric}.png")
    mlflow.log_metrics(
        {"params_count": result.info["params"], "train_time": result.info["train_time"]}
    )
    if result.test is not None:
        log_test_metrics(result.test)
    if cfg.tracking.log_model:
        log_model(result.model)


def log_test_metrics(test: dict[str, Any]) -> None:
    """A test-set evaluation on the active run: test_loss and test_accuracy, the per-class
    accuracy and confusion matrix (test_metrics.json) and the confusion-matrix plot."""
    mlflow.log_metrics({"test_loss": test["loss"], "test_accuracy": test["accuracy"]})
    mlflow.log_dict({"class_names": list(CLASS_NAMES), **test}, "test_metrics.json")
    mlflow.log_figure(
        plots.confusion(test["confusion_matrix"], CLASS_NAMES), "plots/confusion_matrix.png"
    )


def log_model(model: Any) -> Any:
    """The Keras model as an MLflow logged model named `model` (pip requirements pinned,
    so MLflow need not re-import the model to infer them)."""
    from mlflow.models import infer_signature

    versions = provenance.versions()
    signature = infer_signature(
        np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, len(CLASS_NAMES)), np.float32)
    )
    reqs = [f"{p}=={versions[p]}" for p in ("tensorflow", "keras") if p in versions]
    return mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=reqs)


def run_tags(cfg: Any) -> dict[str, str]:
    """Provenance and config tags shared by every run of this tool."""
    out = provenance.tags()
    out["experiment"] = str(cfg.experiment)
    if cfg.tags:
        out["tags"] = ", ".join(cfg.tags)
    return out


def train_tracked(
    cfg: Any,
    splits: Splits | None = None,
    *,
    callbacks: list | tuple = (),
    parent_run_id: str | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    evaluate_test: bool = True,
    verbose: str | None = None,
    on_run: Any = None,
) -> dict[str, Any]:
    """Train with `cfg` and, unless `tracking.enabled` is false, record it as an MLflow run.

    Returns `{"run_id", "history", "final", "test", "info"}`; `on_run(run_id)` is called as
    soon as the run exists (the search links the trial to it).
    """
    splits = splits if splits is not None else load_cifar10(cfg.data)
    if not cfg.tracking.enabled:
        result = train(cfg, splits, callbacks, evaluate_test=evaluate_test, verbose=verbose)
        return _summary_dict(None, result)
    experiment_id = setup(cfg.tracking)
    tags = {**run_tags(cfg), **(extra_tags or {})}
    with run(run_name, experiment_id, parent_run_id=parent_run_id, tags=tags) as active:
        run_id = active.info.run_id
        if on_run is not None:
            on_run(run_id)
        log_config(cfg)
        mlflow.log_dict(splits.info, "data.json")
        mlflow.set_tag("data.sha256", splits.info.get("sha256", ""))
        result = train(
            cfg,
            splits,
            [MlflowLogger(run_id), *callbacks],
            evaluate_test=evaluate_test,
            verbose=verbose,
        )
        mlflow.set_tag("precision", result.info["precision"])
        log_result(result, cfg)
    return _summary_dict(run_id, result)


def _summary_dict(run_id: str | None, result: TrainResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "history": result.history,
        "final": result.final,
        "test": result.test,
        "info": result.info,
        "model": result.model,
    }


# --------------------------------------------------------------------------- studies


def tag_run(run_id: str, tags: dict[str, str], cfg: Any = None) -> None:
    """Set tags on a run, in the store of the `tracking` config `cfg` (else the current one)."""
    client = MlflowClient(tracking_uri(cfg) if cfg is not None else None)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def close_run(cfg: Any, run_id: str, status: str, reason: str) -> None:
    """End a run left open by a dead process (status KILLED or FAILED, with the reason)."""

    client = MlflowClient(tracking_uri(cfg))
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "failure_reason", reason)
            client.set_terminated(run_id, status)
    except MlflowException as e:
        log.warning("could not close MLflow run %s: %s", run_id, e)


def study_parent_run(cfg: Any, study: Any) -> str:
    """The study's MLflow parent run: created once, reopened (RUNNING) on resume.

    Its id is kept in the study's user attributes, so every worker and every resume files its
    trials under the same parent.
    """

    experiment_id = setup(cfg.tracking)
    client = MlflowClient()
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            log.warning(
                "parent run %s of study %r is gone; starting a new one", run_id, study.study_name
            )
    s = cfg.search
    tags = {
        **run_tags(cfg),
        "optuna.study_name": study.study_name,
        "optuna.storage": mask(str(s.storage or "embedded sqlite")),
        "optuna.sampler": s.sampler.name,
        "optuna.pruner": s.pruner.name,
        "optuna.direction": str(s.direction),
        "optuna.metric": s.metric,
        "mlflow.runName": f"study-{study.study_name}",
    }
    run = client.create_run(experiment_id, tags=tags, run_name=f"study-{study.study_name}")
    run_id = run.info.run_id
    params = [
        Param(k, mask(str(v)))
        for k, v in flatten(cfg).items()
        if not k.startswith("search.n_trials")
    ]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, to_yaml(cfg), "config.yaml")
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def log_study(run_id: str, study: Any) -> None:
    """Best value and params, the trials table and Optuna's figures, on the parent run."""
    import optuna
    from matplotlib import pyplot as plt

    client = MlflowClient()
    states = [t.state for t in study.trials]
    for state in optuna.trial.TrialState:
        client.log_metric(run_id, f"trials_{state.name.lower()}", states.count(state))
    table = study.trials_dataframe()
    client.log_text(run_id, table.to_csv(index=False), "trials.csv")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        client.log_metric(run_id, "best_value", best.value, step=len(study.trials))
        tag_run(
            run_id,
            {
                "best.trial": str(best.number),
                "best.mlflow_run_id": str(best.user_attrs.get("mlflow_run_id")),
                **{f"best.{k}": str(v) for k, v in best.params.items()},
            },
        )
        client.log_dict(
            run_id,
            {
                "number": best.number,
                "value": best.value,
                "params": best.params,
                "user_attrs": best.user_attrs,
            },
            "best_trial.json",
        )
    for name, fig in plots.study_figures(study).items():
        client.log_figure(run_id, fig, f"optuna/{name}")
        plt.close(fig)


def finish_parent_run(
    run_id: str, study: Any, cfg: Any, *, complete: bool, interrupted: bool
) -> None:
    """Log the study summary on the parent run and end it (KILLED when interrupted)."""

    try:
        log_study(run_id, study)
    except Exception as e:  # the summary must never hide the study's own outcome
        log.warning("could not log the study summary to MLflow: %s", e)
    tag_run(run_id, {"study.complete": str(complete).lower()})
    MlflowClient().set_terminated(run_id, "KILLED" if interrupted else "FINISHED")


def run_config(run_id: str, cfg: Any, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The config a run recorded, validated, with today's tracking settings and `overrides`
    (`key=value`) on top. A recorded data path that is gone falls back to the run's data.json
    source; if neither exists the error says to pass data.path=."""
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri(cfg.tracking))
    recorded = OmegaConf.load(client.download_artifacts(run_id, "config.yaml"))
    recorded.tracking = OmegaConf.create(to_dict(cfg)["tracking"])
    path = recorded.data.path
    if path and not Path(path).expanduser().exists():
        try:
            source = json.loads(Path(client.download_artifacts(run_id, "data.json")).read_text())
            recorded.data.path = source.get("source") or path
        except (MlflowException, OSError, ValueError):
            pass
    extra = OmegaConf.from_dotlist([o for o in overrides if not o.startswith("tracking.")])
    return validate(OmegaConf.merge(recorded, extra))
