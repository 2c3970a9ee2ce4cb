"""Optuna studies: the search space from config, the objective, and a resumable sweep.

`sweep(cfg)` creates or resumes the study `search.study_name` in `search.storage`, runs trials
until `search.n_trials` of them have finished (complete or pruned), and records one MLflow
parent run for the study with one nested child run per trial. Each trial is
`objective(trial)`: suggest -> config with overrides -> tracked training -> the metric; the
training runs in a fresh process per trial (`trial_process`, `search.isolate_trials`) so that
memory stays flat however many trials a sweep runs.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import keras
import optuna
from omegaconf import OmegaConf

from cifar_exp import tracking, trial_process
from cifar_exp.config import ConfigError, flatten, mask, to_dict, with_overrides
from cifar_exp.data import Splits, load_cifar10
from cifar_exp.storage import (
    StorageUnavailable,
    make_storage,
    retrying,
    storage_url,
    study_lock,
)

log = logging.getLogger(__name__)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def grid(self) -> list:
        """The values a grid search visits: `choices`, or every step of an int range."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(f"search.space.{self.key}: a grid search needs `choices`")


def parse_space(cfg: Any) -> list[Param]:
    """The search space of `cfg.search.space`, each key checked against the config."""
    tree = to_dict(cfg)["search"]["space"] or {}
    entries: list[tuple[str, dict]] = []

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if value is None:  # `null` removes an entry inherited from another search config
                continue
            if isinstance(value, dict) and "type" in value:
                entries.append((key, value))
            elif isinstance(value, dict):
                walk(value, f"{key}.")
            else:
                raise ConfigError(f"search.space.{key}: expected {{type: ..., ...}}")

    walk(tree, "")
    if not entries:
        raise ConfigError("search.space: empty; add at least one entry")
    return [_param(cfg, key, spec) for key, spec in entries]


def _param(cfg: Any, key: str, spec: dict) -> Param:
    where = f"search.space.{key}"
    target = OmegaConf.select(cfg, key, default="<missing>")
    if key.startswith("search.") or target == "<missing>" or OmegaConf.is_config(target):
        raise ConfigError(f"{where}: no config key {key!r} to search over")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind = spec.get("type")
    if kind == "categorical":
        if not spec.get("choices"):
            raise ConfigError(f"{where}: categorical needs a non-empty `choices` list")
        return Param(key, kind, choices=tuple(spec["choices"]))
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}.type: must be float, int or categorical (got {kind!r})")
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: needs low < high (got low={low}, high={high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0 (got {low})")
    return Param(
        key,
        kind,
        low=low,
        high=high,
        log=bool(spec.get("log")),
        step=spec.get("step"),
        choices=tuple(spec["choices"]) if spec.get("choices") else None,
    )


# --------------------------------------------------------------------------- sampler, pruner


def make_sampler(cfg: Any, space: list[Param], offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler. `offset` (the trials a resumed study already has) shifts the
    seed, so a resumed study does not replay the suggestions it started with."""
    s = cfg.search.sampler
    seed = None if s.seed is None else s.seed + offset
    if s.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid() for p in space}, seed=seed)
    raise ConfigError(f"search.sampler.name: must be tpe, random or grid (got {s.name!r})")


def make_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    p, epochs = cfg.search.pruner, cfg.trainer.epochs
    if p.name == "none":
        return optuna.pruners.NopPruner()
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=epochs, reduction_factor=p.reduction_factor
        )
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    if p.name == "threshold":
        return optuna.pruners.ThresholdPruner(
            lower=p.lower, upper=p.upper, n_warmup_steps=p.n_warmup_steps
        )
    raise ConfigError(
        "search.pruner.name: must be median, hyperband, successive_halving, "
        f"threshold or none (got {p.name!r})"
    )


# --------------------------------------------------------------------------- objective


class Reporter(Protocol):
    """What the CLI shows while a study runs (all optional no-ops in `NullReporter`)."""

    def study_started(self, study: optuna.Study, target: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None: ...
    def trial_ended(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...


class NullReporter:
    def study_started(self, study: optuna.Study, target: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None: ...
    def trial_ended(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...


class EpochJudge:
    """What the sweep does at each epoch's end: show progress, report the metric to the trial
    and decide whether to prune. Runs in the sweep process whether the training runs there
    (`TrialCallback`) or in a trial process (`trial_process`)."""

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


class TrialCallback(keras.callbacks.Callback):
    """An `EpochJudge` as a Keras callback, for trials trained in the sweep process."""

    def __init__(self, judge: EpochJudge):
        super().__init__()
        self.judge = judge

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.judge(epoch + 1, logs or {}):
            self.model.stop_training = True


class StudyFull(RuntimeError):
    """Another worker took the study's last trial slot while this trial was being created."""


def _claim_slot(trial: optuna.Trial, target: int) -> None:
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
    cfg: Any,
    space: list[Param],
    splits: Splits | None = None,
    parent_run_id: str | None = None,
    reporter: Reporter | None = None,
) -> float:
    """Train `cfg` with the trial's suggestions; returns the last epoch's `search.metric`."""
    reporter = reporter or NullReporter()
    _claim_slot(trial, cfg.search.n_trials)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    params = {p.key: p.suggest(trial) for p in space}
    reporter.trial_started(trial.number, params)
    trial_cfg = with_overrides(cfg, params)
    metric = cfg.search.metric
    judge = EpochJudge(trial, metric, trial_cfg.trainer.epochs, reporter)
    study = getattr(trial, "study", None)  # a FixedTrial (unit tests) has none
    train_kwargs = {
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

    try:
        if cfg.search.isolate_trials:  # a fresh process per trial: memory stays flat
            out = trial_process.run_trial(
                to_dict(trial_cfg),
                judge,
                on_run=link,
                close_run=lambda run_id, status, reason: tracking.close_run(
                    trial_cfg.tracking, run_id, status, reason
                ),
                **train_kwargs,
            )
        else:  # in this process (isolate_trials=false)
            if splits is None or any(k.startswith("data.") for k in params):
                splits = load_cifar10(trial_cfg.data)
            out = tracking.train_tracked(
                trial_cfg, splits, callbacks=[TrialCallback(judge)], on_run=link, **train_kwargs
            )
    except Exception as e:  # Optuna fails the trial; keep the reason with it
        reason = str(e) if isinstance(e, trial_process.TrialError) else f"{type(e).__name__}: {e}"
        trial.set_user_attr("fail_reason", reason[:2000])
        raise
    trial.set_user_attr("epochs_run", out["info"]["epochs_run"])
    trial.set_user_attr("train_time", out["info"]["train_time"])
    for key, value in out["final"].items():
        trial.set_user_attr(key, value)
    if judge.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", judge.pruned_at)
        if out["run_id"]:
            tracking.tag_run(
                out["run_id"],
                {"optuna.state": "PRUNED", "pruned_at_epoch": str(judge.pruned_at)},
                trial_cfg.tracking,
            )
        raise optuna.TrialPruned(f"pruned after epoch {judge.pruned_at}")
    if out["run_id"]:
        tracking.tag_run(out["run_id"], {"optuna.state": "COMPLETE"}, trial_cfg.tracking)
    return float(out["final"][metric])


# --------------------------------------------------------------------------- sweep


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _n_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def _grid_exhausted(cfg: Any, study: optuna.Study, space: list[Param]) -> bool:
    """A grid study has finished every point of its grid (retries of a point included)."""
    if cfg.search.sampler.name != "grid":
        return False
    size = 1
    for p in space:
        size *= len(p.grid())
    seen = {
        tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=FINISHED)
    }
    return len(seen) >= size


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def open_study(cfg: Any, space: list[Param]) -> optuna.Study:
    """Create the study, or load it to resume; warns when its config has changed since."""
    study = optuna.create_study(
        study_name=cfg.search.study_name,
        storage=make_storage(cfg),
        sampler=make_sampler(cfg, space),
        pruner=make_pruner(cfg),
        direction=str(cfg.search.direction),
        load_if_exists=True,
    )
    if study.trials:
        study.sampler = make_sampler(cfg, space, offset=len(study.trials))
    if str(cfg.search.direction) != study.direction.name.lower():
        raise ConfigError(
            f"search.direction: study {study.study_name!r} was created to "
            f"{study.direction.name.lower()}; use another search.study_name"
        )
    comparable = {
        k: v
        for k, v in flatten(cfg).items()
        if not k.startswith(("search.n_trials", "search.timeout"))
    }
    before = study.user_attrs.get("config")
    if before is None:
        study.set_user_attr("config", comparable)
    elif before != comparable:
        changed = sorted(
            k for k in set(before) | set(comparable) if before.get(k) != comparable.get(k)
        )
        log.warning(
            "study %r resumes with a changed config (%s); use a new search.study_name "
            "for a separate study",
            study.study_name,
            ", ".join(changed[:6]),
        )
    return study


def sweep(cfg: Any, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) the configured study until `search.n_trials` trials have finished.

    Returns {"study_name", "storage", "parent_run_id", "counts", "best", "stopped"}.
    """
    reporter = reporter or NullReporter()
    space = parse_space(cfg)  # a bad space fails before any data or study is touched
    url = storage_url(cfg)
    splits = load_cifar10(cfg.data)
    with study_lock(url):  # one worker at a time creates the tables, the study, the parent
        study = open_study(cfg, space)
        parent = tracking.study_parent_run(cfg, study) if cfg.tracking.enabled else None
    retrying(lambda: optuna.storages.fail_stale_trials(study), url)
    target, search = cfg.search.n_trials, cfg.search
    reporter.study_started(study, target)
    deadline = time.monotonic() + search.timeout if search.timeout else None
    failures, stopped = 0, "complete"
    try:
        while True:
            # a worker that died is noticed here, between trials, by whichever worker is alive
            retrying(lambda: optuna.storages.fail_stale_trials(study), url)
            finished, running = retrying(lambda: (n_finished(study), _n_running(study)), url)
            if finished >= target:
                break
            if finished + running >= target:
                # the last trials are running elsewhere: wait for them to finish, or for a
                # dead worker's trial to go stale and come back as a retry to run here
                time.sleep(min(search.heartbeat_interval, 5))
                continue
            if _grid_exhausted(cfg, study, space):
                stopped = "search space exhausted"
                break
            if deadline is not None and time.monotonic() >= deadline:
                stopped = "timeout"
                break
            if failures >= search.max_failures:
                stopped = f"{failures} trials failed in a row"
                log.error("stopping: %s (see the failure reasons in MLflow)", stopped)
                break
            mine: list[int] = []

            def run_one(trial: optuna.Trial, mine: list[int] = mine) -> float:
                mine.append(trial.number)
                return objective(trial, cfg, space, splits, parent, reporter)

            try:
                retrying(lambda: study.optimize(run_one, n_trials=1, catch=(Exception,)), url)
            except StorageUnavailable:
                raise
            except Exception as e:  # Optuna lost the storage while recording the trial
                log.warning("a trial could not be recorded (%s); it will be retried", e)
                failures += 1
                time.sleep(min(search.heartbeat_interval, 5))
                continue
            if not mine:
                continue
            number = mine[0]
            last = retrying(lambda: study.trials[number], url)  # noqa: B023 (called at once)
            if last.user_attrs.get("skipped"):
                continue
            failed = last.state == optuna.trial.TrialState.FAIL
            failures = failures + 1 if failed else 0
            # the display reads the storage too, so a database restart may land here
            retrying(lambda: reporter.trial_ended(study, last), url)  # noqa: B023
            keras.backend.clear_session()
            gc.collect()
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        try:  # the storage may be what failed: the study's outcome must still be reported
            optuna.storages.fail_stale_trials(study)
            if parent is not None:
                tracking.finish_parent_run(
                    parent,
                    study,
                    cfg,
                    complete=n_finished(study) >= target,
                    interrupted=stopped == "interrupted",
                )
        except Exception as e:
            log.warning("could not close the study's records (%s); the next sweep will", e)
    summary = retrying(lambda: summarize(study, cfg, parent, stopped), url)
    if summary["best"] and summary["best"]["mlflow_run_id"] and _registers(cfg):
        from cifar_exp.registry import register_best

        summary["registered"] = register_best(
            cfg, summary["best"]["mlflow_run_id"], summary["best"]["value"], study.study_name
        )
    return summary


def _registers(cfg: Any) -> bool:
    t = cfg.tracking
    return bool(t.enabled and t.log_model and t.registered_model)


def summarize(study: optuna.Study, cfg: Any, parent: str | None, stopped: str) -> dict[str, Any]:
    best = None
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        bt = study.best_trial
        best = {
            "number": bt.number,
            "value": bt.value,
            "params": bt.params,
            "mlflow_run_id": bt.user_attrs.get("mlflow_run_id"),
        }
    return {
        "study_name": study.study_name,
        "storage": mask(storage_url(cfg)),
        "parent_run_id": parent,
        "counts": counts(study),
        "finished": n_finished(study),
        "target": cfg.search.n_trials,
        "best": best,
        "stopped": stopped,
    }
