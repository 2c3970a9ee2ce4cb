"""One trial: suggest the searched values -> the config with them -> a tracked training (in a
trial process, or in this one) -> the metric. Pruning is decided here, in the sweep process,
by one `EpochJudge` whichever way the training runs."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import optuna

from cifar_exp import interrupts, runs, tracking
from cifar_exp.config import Config, ConfigError, to_dict, with_overrides
from cifar_exp.data import Splits, load_cifar10
from cifar_exp.stats import summarize
from cifar_exp.study import trial_process, trials
from cifar_exp.study.progress import NullReporter, Reporter
from cifar_exp.study.space import Param
from cifar_exp.study.trials import FINISHED
from cifar_exp.train import EpochHook, TrainResult


class EpochJudge:
    """What the sweep does at each epoch's end: show progress, report the metric to the trial
    and decide whether to prune (unless `prune` is false: a multi-objective study, whose
    trials Optuna cannot prune)."""

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str,
        epochs: int,
        reporter: Reporter,
        prune: bool = True,
    ):
        self.trial, self.metric, self.epochs, self.reporter = trial, metric, epochs, reporter
        self.prune = prune
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, logs: dict) -> bool:
        """`epoch` counts from 1; True means stop the training (pruned)."""
        self.reporter.epoch_ended(self.trial.number, epoch, self.epochs, logs)
        if self.prune and self.metric in logs:
            self.trial.report(float(logs[self.metric]), step=epoch)
            if self.trial.should_prune():
                self.pruned_at = epoch
                return True
        return False

    def batch(self, epoch: int, done: int, batches: int) -> None:
        """Progress within an epoch, a few times per second (any seed of the trial)."""
        self.reporter.batch_ended(self.trial.number, epoch, self.epochs, done, batches)


class StudyFull(RuntimeError):
    """Another worker took the study's last trial slot while this trial was being created."""


def claim_slot(trial: optuna.Trial, target: int) -> None:
    """Fail this trial at once if `target` earlier trials are already finished or running,
    so that workers racing for the last slots never finish more than `n_trials` trials."""
    study = getattr(trial, "study", None)
    if study is None:  # a FixedTrial
        return
    # a warm start's prior trials (copied from another study) hold no slot of this one
    live = trials.own(
        study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
    )
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
) -> float | list[float]:
    """Train `cfg` with the trial's suggestions, with `search.seeds` seeds; returns the mean of
    their last epoch's `search.metric`, or of a multi-objective study one value per objective
    (a metric: that mean; train_time: the trial's training seconds)."""
    reporter = reporter or NullReporter()
    claim_slot(trial, cfg.search.n_trials)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    params = {p.key: p.suggest(trial) for p in space}
    reporter.trial_started(trial.number, params)
    try:  # values that pass one by one may still clash (a schedule and a decay, say)
        trial_cfg = with_overrides(cfg, params)
    except ConfigError as e:
        trial.set_user_attr("fail_reason", str(e)[:2000])
        raise
    judge = EpochJudge(
        trial, cfg.search.metric, trial_cfg.trainer.epochs, reporter, not cfg.search.objectives
    )
    study = getattr(trial, "study", None)  # a FixedTrial (unit tests) has none
    tags = {
        "optuna.study_name": getattr(study, "study_name", "-"),
        "optuna.trial_number": str(trial.number),
    }
    if any(k.startswith("data.") for k in params):
        splits = None  # the trial's own data config
    try:
        if cfg.search.seeds == 1:
            seeds = [trial_cfg.trainer.seed]
            results = [
                train_config(
                    trial_cfg,
                    judge,
                    splits,
                    parent_run_id=parent_run_id,
                    run_name=f"trial-{trial.number:03d}",
                    tags=tags,
                    on_run=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                    on_batch=judge.batch,
                )
            ]
            run_id = results[0].run_id
        else:
            seeds, results, run_id = _train_seeds(
                trial, trial_cfg, params, judge, splits, parent_run_id, tags, reporter
            )
    except KeyboardInterrupt as e:  # Optuna fails the trial and stops; keep the reason too
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_reason", interrupts.reason(e))
        raise
    except Exception as e:  # Optuna fails the trial; keep the reason with it
        reason = str(e) if isinstance(e, trial_process.TrialError) else f"{type(e).__name__}: {e}"
        trial.set_user_attr("fail_reason", reason[:2000])
        raise
    return _record(trial, trial_cfg, seeds, results, run_id, judge)


def _train_seeds(
    trial: optuna.Trial,
    cfg: Config,
    params: dict[str, Any],
    judge: EpochJudge,
    splits: Splits | None,
    parent_run_id: str | None,
    tags: dict[str, str],
    reporter: Reporter,
) -> tuple[list[int], list[TrainResult], str | None]:
    """The configuration trained with seeds trainer.seed, +1, ...: each seed a run nested under
    the trial's run, which then holds their aggregate. The pruner judges the first seed's
    epochs; a pruned configuration trains no more seeds. Only the first seed logs a model."""
    seeds = [cfg.trainer.seed + i for i in range(cfg.search.seeds)]
    name = f"trial-{trial.number:03d}"
    holder = None
    if cfg.tracking.enabled:
        holder = tracking.create_run(cfg, name, parent_run_id, {**tags, "seeds": str(seeds)})
        trial.set_user_attr("mlflow_run_id", holder)
    results: list[TrainResult] = []

    progress = show_epochs(reporter, trial.number, cfg.trainer.epochs)
    try:
        for i, seed in enumerate(seeds):
            if i:
                reporter.trial_started(trial.number, {**params, "seed": seed})
            seed_cfg = with_overrides(
                cfg, {"trainer.seed": seed, "tracking.log_model": cfg.tracking.log_model and i == 0}
            )
            results.append(
                train_config(
                    seed_cfg,
                    judge if i == 0 else progress,
                    splits,
                    parent_run_id=holder or parent_run_id,
                    run_name=f"{name}-seed-{seed}",
                    tags={**tags, "seed": str(seed)},
                    on_run=(lambda rid: trial.set_user_attr("model_run_id", rid))
                    if i == 0
                    else None,
                    on_batch=judge.batch,
                )
            )
            if judge.pruned_at is not None:
                break
        if holder:
            runs.log_seed_aggregate(cfg.tracking, holder, seeds, results)
            tracking.end_run(cfg.tracking, holder)
    except KeyboardInterrupt as e:
        if holder:
            tracking.close_run(cfg.tracking, holder, "KILLED", interrupts.reason(e))
        raise
    except Exception as e:
        if holder:
            tracking.close_run(cfg.tracking, holder, "FAILED", f"{type(e).__name__}: {e}"[:5000])
        raise
    return seeds[: len(results)], results, holder


def _record(
    trial: optuna.Trial,
    cfg: Config,
    seeds: list[int],
    results: list[TrainResult],
    run_id: str | None,
    judge: EpochJudge,
) -> float | list[float]:
    """The trial's user attributes and run tags; its value (its values, one per objective, in
    a multi-objective study), or TrialPruned."""
    metric = cfg.search.metric
    values = [r.final[metric] for r in results if metric in r.final]
    trial.set_user_attr("epochs_run", results[0].epochs_run)
    trial.set_user_attr("train_time", sum(r.train_time for r in results))
    finals = {k: [r.final[k] for r in results if k in r.final] for k in results[0].final}
    for key, vals in finals.items():
        trial.set_user_attr(key, sum(vals) / len(vals))
    trial.set_user_attr("n_seeds", len(values))
    maximize = str(cfg.search.direction) == "maximize"
    best = runs.best_epoch([r.history for r in results], metric, maximize)
    if best is not None:
        trial.set_user_attr("best_epoch", best[0])
        trial.set_user_attr(f"best_{metric}", best[1])
    trial.set_user_attr("seed_values", {str(s): v for s, v in zip(seeds, values, strict=True)})
    if len(values) > 1:
        s = summarize(values)
        trial.set_user_attr("value_std", s.std)
        trial.set_user_attr("ci_low", s.ci_low)
        trial.set_user_attr("ci_high", s.ci_high)
    attrs = {key: sum(vals) / len(vals) for key, vals in finals.items() if vals}
    attrs["train_time"] = sum(r.train_time for r in results)
    for name, value in trials.constraint_values(cfg.search, attrs).items():
        trial.set_constraint(name, value)  # the sampler and `best` read them
    state = "COMPLETE" if judge.pruned_at is None else "PRUNED"
    if judge.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", judge.pruned_at)
    if run_id:
        tags = {"optuna.state": state}
        if judge.pruned_at is not None:
            tags["pruned_at_epoch"] = str(judge.pruned_at)
        tracking.tag_run(run_id, tags, cfg.tracking)
    if judge.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned after epoch {judge.pruned_at}")
    if cfg.search.objectives:  # a metric a run did not record fails the trial (nan)
        return [float(attrs.get(k, float("nan"))) for k in cfg.search.objectives]
    return float(sum(values) / len(values))


def show_epochs(reporter: Reporter, number: int, epochs: int) -> Callable[[int, dict], bool]:
    """An epoch callback that only shows progress (a seed the pruner does not judge)."""

    def on_epoch(epoch: int, logs: dict) -> bool:
        reporter.epoch_ended(number, epoch, epochs, logs)
        return False

    return on_epoch


def train_config(
    cfg: Config,
    on_epoch: Callable[[int, dict], bool],
    splits: Splits | None,
    *,
    parent_run_id: str | None,
    run_name: str,
    tags: dict[str, str],
    on_run: Callable[[str], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """One tracked training of `cfg` (no test evaluation): in a fresh process
    (`search.isolate_trials`, memory stays flat) or in this one, on `splits` if given.
    `on_epoch(epoch, logs)` runs here after every epoch; True stops the training.
    `on_batch(epoch, done, batches)` runs here a few times per second within an epoch."""
    interrupts.checkpoint()  # a Ctrl-C swallowed since the last training starts no other
    kwargs: dict[str, Any] = {
        "parent_run_id": parent_run_id,
        "run_name": run_name,
        "extra_tags": tags,
        "evaluate_test": False,
        "verbose": "0",
    }
    link = on_run or (lambda run_id: None)
    if cfg.search.isolate_trials:
        return trial_process.run_trial(
            to_dict(cfg),
            on_epoch,
            on_run=link,
            on_batch=on_batch,
            close_run=lambda run_id, status, reason: tracking.close_run(
                cfg.tracking, run_id, status, reason
            ),
            **kwargs,
        )
    if splits is None:
        splits = load_cifar10(cfg.data)
    return runs.train_tracked(
        cfg, splits, callbacks=[EpochHook(on_epoch, on_batch)], on_run=link, **kwargs
    )
