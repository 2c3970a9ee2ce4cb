"""MLflow plumbing: where runs go and what a run records.

Embedded by default (SQLite store and artifacts under `tracking.dir`, no server); any tracking
server through `tracking.uri`. Per-epoch metrics enter through a Keras callback, so train.py
stays unaware of MLflow. A tracked training is `runs.train_tracked`; a study's own records are
`study.records`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from cifar_exp import ahead, interrupts, plots, provenance
from cifar_exp.config import Config, TrackingConfig, flatten, to_dict, to_yaml, validate
from cifar_exp.data import CLASS_NAMES
from cifar_exp.errors import first_line
from cifar_exp.stores import TrackingUnavailable, check_tracking, created_elsewhere
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)


def tracking_uri(cfg: TrackingConfig) -> str:
    """The URI runs go to: `tracking.uri`, else the embedded SQLite store in `tracking.dir`."""
    return str(cfg.uri) if cfg.uri else f"sqlite:///{embedded_store(cfg)}"


def embedded_store(cfg: TrackingConfig) -> Path | None:
    """The embedded store's SQLite file in `tracking.dir`; None where `tracking.uri` names one."""
    return None if cfg.uri else (Path(cfg.dir) / "mlflow.db").resolve()


def missing_store(cfg: TrackingConfig) -> Path | None:
    """The embedded store's file where there is none yet: a command that only looks runs up
    finds nothing there, and must not make an empty store (`setup` would). None otherwise."""
    store = embedded_store(cfg)
    return store if store is not None and not store.is_file() else None


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store; returns the id of `tracking.experiment_name`."""
    uri = check_tracking(tracking_uri(cfg))
    artifacts = None
    store = embedded_store(cfg)
    if store is not None:
        root = store.parent
        root.mkdir(parents=True, exist_ok=True)
        if not store.exists() and not os.access(root, os.W_OK):
            # MLflow would retry opening a database it cannot create for two minutes
            raise TrackingUnavailable(f"MLflow store {root}: a read-only folder (tracking.dir)")
        artifacts = (root / "artifacts").as_uri()
    # MLflow also exports the URI as MLFLOW_TRACKING_URI, from which `tracking.uri` defaults:
    # a later config composed in this process (a notebook, the next study) would silently
    # write to this store. MLflow keeps the URI in memory; the environment stays as it was.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    try:
        experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
        if experiment is None:
            return mlflow.create_experiment(cfg.experiment_name, artifact_location=artifacts)
    except MlflowException as e:
        experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
        if experiment is None or not created_elsewhere(e):  # another process made it since
            raise
    return experiment.experiment_id


class MlflowLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics (the Keras history keys, lr, epoch_time, val_time) with
    step=epoch."""

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


class RecordAhead(keras.callbacks.Callback):
    """Prepares, while `fit` runs, what recording its result needs afterwards (`ahead.prepare`:
    MLflow's model logging and its package map, the plots' writers), on a thread: once the
    first batch has ended, `fit` has traced its step and spends its time in TensorFlow, with
    Python free, so that the work overlaps the training instead of following it (started
    earlier, it would share Python with the tracing and only move the wait). `join()`
    before recording."""

    def __init__(self) -> None:
        super().__init__()
        self.thread: Any = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.thread is None:
            self.thread = ahead.in_background()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


@contextmanager
def run(
    name: str | None,
    experiment_id: str,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """An MLflow run that ends FAILED (with the reason) on an error, KILLED on Ctrl-C or
    SIGTERM."""
    active = mlflow.start_run(
        run_name=name,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags=tags,
    )
    try:
        yield active
    except BaseException as e:
        killed = isinstance(e, KeyboardInterrupt)
        status = "KILLED" if killed else "FAILED"
        try:
            reason = interrupts.reason(e) if killed else f"{type(e).__name__}: {e}"[:5000]
            mlflow.set_tag("failure_reason", reason)
            mlflow.end_run(status)
        except Exception as closing:  # the store that failed the run (a full disk, say):
            log.warning(  # the run's own error is the one to raise
                "could not mark MLflow run %s %s: %s",
                active.info.run_id,
                status,
                first_line(closing),
            )
            with contextlib.suppress(Exception):  # end_run takes it off the stack first
                if mlflow.active_run():
                    mlflow.end_run(status)
        raise
    else:
        mlflow.end_run("FINISHED")


def log_config(cfg: Config) -> None:
    """The resolved config: as params (dotted keys, search space left out) and as YAML."""
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith(("search.", "reference"))}
    mlflow.log_params(params)
    mlflow.log_text(to_yaml(cfg), "config.yaml")


def log_data(info: dict[str, Any], contexts: tuple[str, ...] = ("train", "val", "test")) -> None:
    """The data a run used, on the active run: `data.json` (source, sha256, split, sizes: what
    report, reproduce and evaluate read back), the `data.sha256` tag, and each split as an
    MLflow dataset input (the UI's Dataset column) named `cifar10-<split>`, its digest the
    file's sha256 (shortened to MLflow's 36 characters), its size and split seed as tags."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    mlflow.log_dict(info, "data.json")
    mlflow.set_tag("data.sha256", info.get("sha256", ""))
    url = info.get("url")
    with warnings.catch_warnings():  # MLflow registers its local-file source twice, and says so
        warnings.simplefilter("ignore", UserWarning)
        local = None if url else resolve_dataset_source(Path(info["source"]).as_uri())
    source = HTTPDatasetSource(url) if url else local
    digest = str(info.get("sha256", ""))[:16] or None
    sizes = {"train": "n_train", "val": "n_val", "test": "n_test"}
    chosen = [c for c in contexts if info.get(sizes[c])]
    inputs = {
        "datasets": [MetaDataset(source, name=f"cifar10-{c}", digest=digest) for c in chosen],
        "contexts": [
            "training" if c == "train" else "validation" if c == "val" else "testing"
            for c in chosen
        ],
        "tags_list": [
            {"images": str(info[sizes[c]]), "split_seed": str(info.get("split_seed", ""))}
            for c in chosen
        ],
    }
    for attempt in (1, 2, 3):
        try:
            return mlflow.log_inputs(**inputs)
        except MlflowException as e:
            # a run of another worker inserted the same datasets first (MLflow looks them up,
            # then inserts): this call wrote nothing, and once more it finds them
            if attempt == 3 or not created_elsewhere(e):
                raise
            time.sleep(0.2 * attempt)


def log_test_metrics(test: Evaluation) -> None:
    """A test-set evaluation on the active run: test_loss and test_accuracy, the per-class
    accuracy and confusion matrix (test_metrics.json) and the confusion-matrix plot."""
    mlflow.log_metrics({"test_loss": test.loss, "test_accuracy": test.accuracy})
    mlflow.log_dict({"class_names": list(CLASS_NAMES), **test.metrics()}, "test_metrics.json")
    mlflow.log_figure(
        plots.confusion(test.confusion_matrix, CLASS_NAMES), "plots/confusion_matrix.png"
    )


def read_test_metrics(run_id: str) -> Evaluation | None:
    """The test-set evaluation recorded on a run (None if it has none)."""
    client = MlflowClient()
    if "test_accuracy" not in client.get_run(run_id).data.metrics:
        return None
    path = client.download_artifacts(run_id, "test_metrics.json")
    record = json.loads(Path(path).read_text())
    fields = ("loss", "accuracy", "per_class_accuracy", "confusion_matrix")
    return Evaluation(**{k: record[k] for k in fields}, run_id=run_id, cached=True)


def find_evaluation(model_uri: str, parent_run_id: str | None) -> Evaluation | None:
    """The latest finished test evaluation of `model_uri` that a report recorded as a run of
    its own under the study's parent run (an `evaluate` command's run may have used other
    data: it is not reused)."""
    client = MlflowClient()
    under = (
        f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        if parent_run_id
        else ("attributes.run_name = 'test-evaluation'")
    )
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.evaluates = '{model_uri}' and {under} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return read_test_metrics(runs[0].info.run_id) if runs else None


def read_data(run_id: str) -> dict[str, Any]:
    """The data record a run kept (`data.json`: source, sha256, split, sizes); {} if none."""
    try:
        path = MlflowClient().download_artifacts(run_id, "data.json")
        return json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError):
        return {}


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


def run_tags(cfg: Config) -> dict[str, str]:
    """Provenance and config tags shared by every run of this tool."""
    out = provenance.tags()
    out["experiment"] = str(cfg.experiment)
    if cfg.tags:
        out["tags"] = ", ".join(cfg.tags)
    return out


def tag_run(run_id: str, tags: dict[str, str], cfg: TrackingConfig | None = None) -> None:
    """Set tags on a run, in the store of the `tracking` config `cfg` (else the current one)."""
    client = MlflowClient(tracking_uri(cfg) if cfg is not None else None)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def create_run(
    cfg: Config, name: str, parent_run_id: str | None, tags: dict[str, str] | None = None
) -> str:
    """A run that holds others (a trial's seeds): its config as params and YAML, nested under
    `parent_run_id`; ended with `end_run`. Returns its id."""
    from mlflow.entities import Param

    experiment_id = setup(cfg.tracking)
    client = MlflowClient()
    all_tags = {**run_tags(cfg), **(tags or {}), "mlflow.runName": name}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run_id = client.create_run(experiment_id, tags=all_tags, run_name=name).info.run_id
    params = {k: v for k, v in flatten(cfg).items() if not k.startswith(("search.", "reference"))}
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])
    client.log_text(run_id, to_yaml(cfg), "config.yaml")
    return run_id


def end_run(cfg: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(tracking_uri(cfg)).set_terminated(run_id, status)


def close_run(cfg: TrackingConfig, run_id: str, status: str, reason: str) -> None:
    """End a run left open by a dead process (status KILLED or FAILED, with the reason)."""

    client = MlflowClient(tracking_uri(cfg))
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "failure_reason", reason)
            client.set_terminated(run_id, status)
    except MlflowException as e:
        log.warning("could not close MLflow run %s: %s", run_id, e)


def run_config(run_id: str, cfg: Config, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The config a run recorded, validated, with today's tracking settings and `overrides`
    (`key=value`) on top. A recorded data path that is gone falls back to the run's data.json
    source; if neither exists the error says to pass data.path=."""
    from omegaconf import OmegaConf

    client = MlflowClient(tracking_uri(cfg.tracking))
    recorded = OmegaConf.load(client.download_artifacts(run_id, "config.yaml"))
    recorded.tracking = OmegaConf.create(to_dict(cfg)["tracking"])
    # how a run was searched is not part of what it trained: today's search settings apply
    recorded.search = OmegaConf.create(to_dict(cfg)["search"])
    path = recorded.data.path
    if path and not Path(path).expanduser().exists():
        try:
            source = json.loads(Path(client.download_artifacts(run_id, "data.json")).read_text())
            recorded.data.path = source.get("source") or path
        except (MlflowException, OSError, ValueError):
            pass
    extra = OmegaConf.from_dotlist([o for o in overrides if not o.startswith("tracking.")])
    return validate(OmegaConf.merge(recorded, extra))
