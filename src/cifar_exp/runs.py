"""Tracked work: a training recorded as an MLflow run, and a model's test-set evaluation
recorded on a run. `train`, `reproduce`, the study's trials, `report`, `evaluate` and the
registry all go through these two, so every run records the same things in the same way.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import mlflow

from cifar_exp import plots, tracking
from cifar_exp.config import Config, TrackingConfig
from cifar_exp.data import Splits, load_cifar10
from cifar_exp.errors import UserError, first_line
from cifar_exp.train import Evaluation, TrainResult, evaluate, train


def train_tracked(
    cfg: Config,
    splits: Splits | None = None,
    *,
    callbacks: list | tuple = (),
    parent_run_id: str | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    evaluate_test: bool = True,
    verbose: str | None = None,
    on_run: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train with `cfg` and, unless `tracking.enabled` is false, record it as an MLflow run.

    Returns the `TrainResult` with its `run_id`; `on_run(run_id)` is called as soon as the run
    exists (a study links its trial to it).
    """
    splits = splits if splits is not None else load_cifar10(cfg.data)
    if not cfg.tracking.enabled:
        return train(cfg, splits, callbacks, evaluate_test=evaluate_test, verbose=verbose)
    experiment_id = tracking.setup(cfg.tracking)
    tags = {**tracking.run_tags(cfg), **(extra_tags or {})}
    result: TrainResult | None = None
    try:
        with tracking.run(run_name, experiment_id, parent_run_id=parent_run_id, tags=tags) as run:
            run_id = run.info.run_id
            if on_run is not None:
                on_run(run_id)
            tracking.log_config(cfg)
            tracking.log_data(splits.info, contexts=_used_splits(cfg, evaluate_test))
            ahead = tracking.RecordAhead()
            try:
                result = train(
                    cfg,
                    splits,
                    [tracking.MlflowLogger(run_id), ahead, *callbacks],
                    evaluate_test=evaluate_test,  # from the last epoch's validation where
                    verbose=verbose,  # that was on the test set
                )
            finally:  # also when training fails or is stopped: no work left running
                ahead.join()
            result.run_id = run_id
            mlflow.set_tag("precision", result.precision)
            if result.test is not None:
                tracking.log_test_metrics(result.test)
                result.test.run_id = run_id
            _log_result(result, cfg)
    except Exception as e:  # after the training, up to closing its run: only the record failed
        if result is None:
            raise
        raise RecordingFailed(result, e) from e
    return result


class RecordingFailed(UserError):
    """The training finished, but MLflow could not record its result (a full disk, a server
    gone); the result travels with the error, so that it can still be shown."""

    def __init__(self, result: TrainResult, cause: Exception) -> None:
        super().__init__(f"the result could not be recorded in MLflow ({first_line(cause)})")
        self.result = result


def _used_splits(cfg: Config, evaluate_test: bool) -> tuple[str, ...]:
    """The splits a training run reads (validating on the test set reads no held-out split)."""
    held_out = str(getattr(cfg.data.validation, "value", cfg.data.validation)) == "split"
    return (
        "train",
        *(("val",) if held_out else ()),
        *(("test",) if evaluate_test or not held_out else ()),
    )


def evaluate_and_log(model: Any, splits: Splits, batch_size: int = 256) -> Evaluation:
    """`model` on the test set of `splits`, recorded on the active MLflow run (test_loss,
    test_accuracy, test_metrics.json, the confusion-matrix plot)."""
    result = evaluate(model, splits.x_test, splits.y_test, batch_size)
    tracking.log_test_metrics(result)
    result.run_id = mlflow.active_run().info.run_id
    return result


def _log_result(result: TrainResult, cfg: Config) -> None:
    """Plots, history table, model summary, parameter count, training time and the model."""
    import pandas as pd

    mlflow.log_text(_summary(result.model), "model_summary.txt")
    hist = pd.DataFrame(result.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    mlflow.log_text(hist.to_csv(index=False), "history.csv")
    for metric in ("accuracy", "loss"):
        mlflow.log_figure(plots.curve(result.history, metric), f"plots/{metric}.png")
    mlflow.log_metrics({"params_count": result.params, "train_time": result.train_time})
    metric, maximize = cfg.search.metric, str(cfg.search.direction) == "maximize"
    best = best_epoch([result.history], metric, maximize)
    if best is not None:  # the last epoch is not always the best (mlflow#7790): both recorded
        mlflow.log_metrics({"best_epoch": best[0], f"best_{metric}": best[1]})
    if cfg.tracking.log_model:
        tracking.log_model(result.model)


def best_epoch(
    histories: list[dict[str, list[float]]], metric: str, maximize: bool
) -> tuple[int, float] | None:
    """The epoch (from 1) at which `metric`, averaged over the runs that reached it, was best,
    and that value; None when no run recorded the metric."""
    import numpy as np

    curves = [h[metric] for h in histories if h.get(metric)]
    if not curves:
        return None
    longest = max(len(c) for c in curves)
    mean = [float(np.mean([c[e] for c in curves if len(c) > e])) for e in range(longest)]
    finite = [(v, e) for e, v in enumerate(mean) if np.isfinite(v)]
    if not finite:
        return None
    value, epoch = max(finite) if maximize else min(finite)
    return epoch + 1, value


def _summary(model: Any) -> str:
    buf = io.StringIO()
    model.summary(print_fn=lambda line, line_break=True: buf.write(line + "\n"), line_length=100)
    return buf.getvalue()


def log_seed_aggregate(
    tracking_cfg: TrackingConfig, run_id: str, seeds: list[int], results: list[TrainResult]
) -> None:
    """On a run that holds a configuration's seed runs: every per-epoch metric's mean over the
    seeds that reached the epoch (`step=epoch`, so the MLflow UI charts the mean curve) and its
    standard deviation (`<metric>_std`); each final metric's mean, std and 95 % interval
    (`<metric>_ci_low`, `<metric>_ci_high`); `n_seeds`; and the per-seed values (seeds.csv)."""
    import time

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from cifar_exp.stats import summarize

    stamp = int(time.time() * 1000)
    points: list[Metric] = [Metric("n_seeds", float(len(results)), stamp, 0)]
    keys = sorted({k for r in results for k in r.history})
    for key in keys:
        longest = max(len(r.history.get(key, [])) for r in results)
        for epoch in range(longest):
            values = [r.history[key][epoch] for r in results if len(r.history.get(key, [])) > epoch]
            points.append(Metric(key, float(np.mean(values)), stamp, epoch + 1))
            if len(values) > 1:
                points.append(Metric(f"{key}_std", float(np.std(values, ddof=1)), stamp, epoch + 1))
        finals = [r.final[key] for r in results if key in r.final]
        s = summarize(finals)
        if s.ci_low is not None:
            points += [
                Metric(f"{key}_ci_low", s.ci_low, stamp, longest),
                Metric(f"{key}_ci_high", s.ci_high, stamp, longest),
            ]
    finite = [m for m in points if np.isfinite(m.value)]
    client = MlflowClient(tracking.tracking_uri(tracking_cfg))
    for i in range(0, len(finite), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=finite[i : i + 1000])
    table = pd.DataFrame(
        [
            {"seed": seed, "run_id": r.run_id, **r.final}
            for seed, r in zip(seeds, results, strict=False)
        ]
    )
    client.log_text(run_id, table.to_csv(index=False), "seeds.csv")
