"""One trial: suggest the searched values -> the config with them -> a tracked training (in a
trial process, or in this one) -> the metric. Pruning is decided here, in the sweep process,
by one `EpochJudge` whichever way the training runs."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import optuna

from cifar_exp import interrupts, runs, tracking
from cifar_exp.config import Config, to_dict, with_overrides
from cifar_exp.data import Splits, load_cifar10
from cifar_exp.study import trial_process
from cifar_exp.study.progress import NullReporter, Reporter
from cifar_exp.study.space import Param
from cifar_exp.study.trials import FINISHED
from cifar_exp.train import EpochHook, TrainResult


class EpochJudge:
    """What the sweep does at each epoch's end: show progress, report the metric to the trial
    and decide whether to prune."""

    def __init__(self, trial: optuna.Trial, metric: str, epochs: int, reporter: Reporter):
        self.trial, self.metric, self.epochs, self.reporter = trial, metric, epochs, reporter
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, logs: dict) -> bool:
        """`epoch` counts from 1; True means stop the training (pruned)."""
        self.reporter.epoch_ended(self.trial.number, epoch, self.epochs, logs)
        if self.metric in logs:
            self.trial.report(float(logs[self.metric]), step=epoch)
            if self.trial.should_prune():
                self.pruned_at = epoch
                return True
        return False


class StudyFull(RuntimeError):
    """Another worker took the study's last trial slot while this trial was being created."""


def claim_slot(trial: optuna.Trial, target: int) -> None:
    """Fail this trial at once if `target` earlier trials are already finished or running,
    so that workers racing for the last slots never finish more than `n_trials` trials."""
    study = getattr(trial, "study", None)
    if study is None:  # a FixedTrial
        return
    live = study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
    if sum(1 for t in live if t.number < trial.number) >= target:
        trial.set_user_attr("skipped", True)
        raise StudyFull(f"not needed: {target} trials were already finished or running")


def objective(
    trial: optuna.Trial,
    cfg: Config,
    space: list[Param],
    splits: Splits | None = None,
    parent_run_id: str | None = None,
    reporter: Reporter | None = None,
) -> float:
    """Train `cfg` with the trial's suggestions; returns the last epoch's `search.metric`."""
    reporter = reporter or NullReporter()
    claim_slot(trial, cfg.search.n_trials)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    params = {p.key: p.suggest(trial) for p in space}
    reporter.trial_started(trial.number, params)
    trial_cfg = with_overrides(cfg, params)
    judge = EpochJudge(trial, cfg.search.metric, trial_cfg.trainer.epochs, reporter)
    try:
        result = _train(
            trial,
            trial_cfg,
            judge,
            splits,
            parent_run_id,
            searches_data=any(k.startswith("data.") for k in params),
        )
    except KeyboardInterrupt as e:  # Optuna fails the trial and stops; keep the reason too
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_reason", interrupts.reason(e))
        raise
    except Exception as e:  # Optuna fails the trial; keep the reason with it
        reason = str(e) if isinstance(e, trial_process.TrialError) else f"{type(e).__name__}: {e}"
        trial.set_user_attr("fail_reason", reason[:2000])
        raise
    trial.set_user_attr("epochs_run", result.epochs_run)
    trial.set_user_attr("train_time", result.train_time)
    for key, value in result.final.items():
        trial.set_user_attr(key, value)
    state = "COMPLETE" if judge.pruned_at is None else "PRUNED"
    if judge.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", judge.pruned_at)
    if result.run_id:
        tags = {"optuna.state": state}
        if judge.pruned_at is not None:
            tags["pruned_at_epoch"] = str(judge.pruned_at)
        tracking.tag_run(result.run_id, tags, trial_cfg.tracking)
    if judge.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {judge.pruned_at}")
    return float(result.final[cfg.search.metric])


def _train(
    trial: optuna.Trial,
    cfg: Config,
    judge: EpochJudge,
    splits: Splits | None,
    parent_run_id: str | None,
    *,
    searches_data: bool,
) -> TrainResult:
    """The trial's tracked training: in a fresh process (`search.isolate_trials`, memory stays
    flat) or in this one, on `splits` unless the trial searches the data config."""
    study = getattr(trial, "study", None)  # a FixedTrial (unit tests) has none
    kwargs: dict[str, Any] = {
        "parent_run_id": parent_run_id,
        "run_name": f"trial-{trial.number:03d}",
        "extra_tags": {
            "optuna.study_name": getattr(study, "study_name", "-"),
            "optuna.trial_number": str(trial.number),
        },
        "evaluate_test": False,
        "verbose": "0",
    }

    def link(run_id: str) -> None:
        trial.set_user_attr("mlflow_run_id", run_id)

    if cfg.search.isolate_trials:
        return trial_process.run_trial(
            to_dict(cfg),
            judge,
            on_run=link,
            close_run=lambda run_id, status, reason: tracking.close_run(
                cfg.tracking, run_id, status, reason
            ),
            **kwargs,
        )
    if splits is None or searches_data:
        splits = load_cifar10(cfg.data)
    return runs.train_tracked(cfg, splits, callbacks=[EpochHook(judge)], on_run=link, **kwargs)
