"""A study: open or resume it, run trials until `search.n_trials` have finished, summarize.

`sweep(cfg)` creates or resumes the study `search.study_name` in `search.storage` and records
one MLflow parent run for it with one nested child run per trial. Several workers (processes,
machines) running the same command share the study: each loops over "is a trial still
needed? run one", so together they finish exactly `n_trials`.
"""

from __future__ import annotations

import gc
import logging
import time

import keras
import optuna

from cifar_exp import interrupts
from cifar_exp.config import Config, ConfigError, flatten, mask
from cifar_exp.data import Splits, load_cifar10
from cifar_exp.registry import register_best
from cifar_exp.study import records
from cifar_exp.study.confirm import confirm, log_confirmation
from cifar_exp.study.objective import objective
from cifar_exp.study.progress import NullReporter, Progress, Reporter, TrialOutcome
from cifar_exp.study.space import (
    Param,
    epoch_budget,
    grid_size,
    make_pruner,
    make_sampler,
    parse_space,
)
from cifar_exp.study.storage import (
    StorageUnavailable,
    make_storage,
    requeue_interrupted,
    retrying,
    storage_url,
    study_lock,
)
from cifar_exp.study.summary import EXHAUSTED, BestTrial, FrontTrial, SweepSummary, summarize
from cifar_exp.study.trials import (
    FINISHED,
    best_trial,
    directions,
    multi,
    n_finished,
    n_running,
    objectives,
    own,
    primary,
)
from cifar_exp.study.warm import source as warm_source
from cifar_exp.study.warm import warm_start

log = logging.getLogger(__name__)

# what a sweep returns lives in summary.py, and is imported from here as before
__all__ = ["EXHAUSTED", "BestTrial", "FrontTrial", "SweepSummary", "confirm_study", "open_study"]
__all__ += ["summarize", "sweep"]


def open_study(cfg: Config, space: list[Param], url: str, worker: int = 0) -> optuna.Study:
    """Create the study, or load it to resume; warns when its config has changed since."""
    tracking_cfg = cfg.tracking
    earlier = warm_source(cfg, url)
    study = optuna.create_study(
        study_name=cfg.search.study_name,
        storage=make_storage(
            cfg.search, url, on_stale=lambda t: records.close_trial_run(tracking_cfg, t)
        ),
        sampler=make_sampler(cfg.search, space),
        pruner=make_pruner(cfg.search, epoch_budget(cfg, space)),
        directions=directions(cfg.search),
        load_if_exists=True,
    )
    if study.trials:
        # workers starting together see the same trial count: their index tells them apart
        offset = len(study.trials) + 10007 * worker
        study.sampler = make_sampler(cfg.search, space, offset=offset)
    created = [d.name.lower() for d in study.directions]
    if directions(cfg.search) != created:
        key = "search.directions" if cfg.search.objectives else "search.direction"
        raise ConfigError(
            f"{key}: study {study.study_name!r} was created to {', '.join(created)}"
            f"{' ' + str(study.metric_names) if study.metric_names else ''}; "
            "use another search.study_name"
        )
    warm_start(study, earlier, space, cfg.search.warm_start_top)  # a new study only
    if study.metric_names is None:  # dashboards then say val_accuracy, not "Objective 0"
        study.set_metric_names(objectives(cfg.search))
    comparable = {
        k: v
        for k, v in flatten(cfg).items()
        # how the study runs (its budget, its workers and their threads) is not what it searches
        if not k.startswith(RUN_KEYS)
    }
    before = study.user_attrs.get("config")
    # a key the study's record lacks came with a newer version of the tool: not a change
    changed = sorted(
        k for k in set(before or {}) if before.get(k) != comparable.get(k, before.get(k))
    )
    if before is None:
        study.set_user_attr("config", comparable)
    elif changed:
        log.warning(
            "study %r resumes with a changed config (%s); use a new search.study_name "
            "for a separate study",
            study.study_name,
            ", ".join(changed[:6]),
        )
    return study


RUN_KEYS = (
    "search.n_trials",
    "search.timeout",
    "search.n_workers",
    "search.warm_start",
    "trainer.threads",
    "trainer.input_threads",
    "reference",
)


class _TrialRunner:
    """`study.optimize`'s objective for one trial; remembers which trial it ran."""

    def __init__(
        self,
        cfg: Config,
        space: list[Param],
        splits: Splits | None,
        parent: str | None,
        reporter: Reporter,
    ) -> None:
        self.cfg, self.space, self.splits, self.parent = cfg, space, splits, parent
        self.reporter = reporter
        self.number: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.number = trial.number
        return objective(trial, self.cfg, self.space, self.splits, self.parent, self.reporter)


def sweep(
    cfg: Config, reporter: Reporter | None = None, register: bool = True, worker: int = 0
) -> SweepSummary:
    """Run (or resume) the configured study until `search.n_trials` trials have finished;
    then register its best model (unless `register` is false: a helper worker)."""
    reporter = reporter or NullReporter()
    space = parse_space(cfg)  # a bad space fails before any data or study is touched
    url = storage_url(cfg)
    # Loaded here even when every trial trains in its own process: bad data fails the sweep
    # at once rather than every trial in turn, and the trial processes then read the decoded
    # arrays from the cache. Kept in memory only for trials trained in this process.
    splits: Splits | None = load_cifar10(cfg.data)
    if cfg.search.isolate_trials:
        splits = None
    with study_lock(url):  # one worker at a time creates the tables, the study, the parent
        study = open_study(cfg, space, url, worker)
        parent = records.study_parent_run(cfg, study) if cfg.tracking.enabled else None
    target = cfg.search.n_trials
    reporter.study_started(retrying(lambda: _progress(study, target), url))
    stopped = "complete"
    runner = _TrialRunner(cfg, space, splits, parent, reporter)
    try:
        stopped = _work(cfg, study, runner, url)
        if stopped in ("complete", EXHAUSTED) and cfg.search.confirm.top_k:
            with study_lock(url):  # the workers of a study take turns: one trains, the rest find
                _confirm(cfg, study, url, splits, parent, reporter)  # nothing left to train
    except KeyboardInterrupt:
        stopped = "interrupted"
        requeue_interrupted(study, runner.number)
        raise
    finally:
        _close(study, parent, target, stopped)
    return _summary_and_registration(study, cfg, parent, stopped, url, register)


def confirm_study(cfg: Config, reporter: Reporter | None = None) -> SweepSummary:
    """The confirmation stage on an existing study (`python -m cifar_exp confirm STUDY`):
    resumable like a sweep, whatever `search.seeds` its trials ran with."""
    reporter = reporter or NullReporter()
    space = parse_space(cfg)
    url = storage_url(cfg)
    with study_lock(url):
        try:
            optuna.load_study(study_name=cfg.search.study_name, storage=url)
        except KeyError:
            raise ConfigError(
                f"search.study_name: no study {cfg.search.study_name!r} in {mask(url)}; "
                "run `sweep` first"
            ) from None
        study = open_study(cfg, space, url)
        parent = records.study_parent_run(cfg, study) if cfg.tracking.enabled else None
    reporter.study_started(retrying(lambda: _progress(study, cfg.search.n_trials), url))
    splits = None if cfg.search.isolate_trials else load_cifar10(cfg.data)
    stopped = "complete"
    try:
        with study_lock(url):
            _confirm(cfg, study, url, splits, parent, reporter)
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        _close(study, parent, cfg.search.n_trials, stopped)
    return _summary_and_registration(study, cfg, parent, stopped, url)


def _confirm(
    cfg: Config,
    study: optuna.Study,
    url: str,
    splits: Splits | None,
    parent: str | None,
    reporter: Reporter,
) -> None:
    if multi(study):
        log.warning("no confirmation stage: it chooses on one metric, this study has several")
        return
    result = confirm(cfg, study, url, splits, reporter)
    if result is not None:
        reporter.confirmed(result)
        if parent is not None:
            log_confirmation(cfg, parent, result)


def conclude(cfg: Config, stopped: str) -> SweepSummary:
    """The study's summary once its workers have stopped (the last one may have finished what
    the first stopped short of), and its best model registered."""
    url = storage_url(cfg)
    study = retrying(lambda: optuna.load_study(study_name=cfg.search.study_name, storage=url), url)
    parent = study.user_attrs.get("mlflow_parent_run_id") if cfg.tracking.enabled else None
    if retrying(lambda: n_finished(study), url) >= cfg.search.n_trials:
        stopped = "complete"
    return _summary_and_registration(study, cfg, parent, stopped, url)


def _summary_and_registration(
    study: optuna.Study,
    cfg: Config,
    parent: str | None,
    stopped: str,
    url: str,
    register: bool = True,
) -> SweepSummary:
    summary = retrying(lambda: summarize(study, cfg, parent, stopped), url)
    best = summary.best
    if register and best and best.model_run_id and _registers(cfg):
        # workers of one study, started apart, end together: one registers the best model,
        # the others find its version (not a version each)
        with study_lock(url):
            summary.registered = register_best(cfg, best.model_run_id, best.value, study.study_name)
    return summary


def _work(cfg: Config, study: optuna.Study, runner: _TrialRunner, url: str) -> str:
    """Run trials until the study needs none; returns why it stopped."""
    search, target = cfg.search, cfg.search.n_trials
    deadline = time.monotonic() + search.timeout if search.timeout else None
    failures = 0
    while True:
        interrupts.checkpoint()  # a Ctrl-C that Python swallowed (see interrupts) stops here
        # a worker that died is noticed here, between trials, by whichever worker is alive
        retrying(lambda: optuna.storages.fail_stale_trials(study), url)
        finished, running = retrying(lambda: (n_finished(study), n_running(study)), url)
        if finished >= target:
            return "complete"
        if finished + running >= target:
            # the last trials are running elsewhere: wait for them to finish, or for a dead
            # worker's trial to go stale and come back as a retry to run here
            time.sleep(min(search.heartbeat_interval, 5))
            continue
        if search.sampler.name == "grid" and _grid_exhausted(study, runner.space):
            return EXHAUSTED
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        if failures >= search.max_failures:
            stopped = f"{failures} trial{'s' * (failures > 1)} failed in a row"
            log.error("stopping: %s (see the failure reasons in MLflow)", stopped)
            return stopped
        runner.number = None
        try:
            retrying(lambda: study.optimize(runner, n_trials=1, catch=(Exception,)), url)
        except StorageUnavailable:
            raise
        except Exception as e:  # Optuna lost the storage while recording the trial
            log.warning("a trial could not be recorded (%s); it will be retried", e)
            failures += 1
            time.sleep(min(search.heartbeat_interval, 5))
            continue
        if runner.number is None:
            continue
        trial = retrying(lambda: study.trials[runner.number], url)
        if trial.user_attrs.get("skipped"):
            continue
        failures = failures + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        runner.reporter.trial_ended(
            TrialOutcome.of(trial), retrying(lambda: _progress(study, target), url)
        )
        keras.backend.clear_session()
        gc.collect()


def _close(study: optuna.Study, parent: str | None, target: int, stopped: str) -> None:
    """Fail dead workers' trials and, if this worker's trial was the study's last running one,
    close the parent run, whatever stopped the sweep. (Each worker has ended its own trial
    before it gets here, so of several workers stopping together the last one closes it.)"""
    try:  # the storage may be what failed: the study's outcome must still be reported
        optuna.storages.fail_stale_trials(study)
        if parent is not None and n_running(study) == 0:
            records.finish_parent_run(
                parent,
                study,
                complete=n_finished(study) >= target,
                interrupted=stopped == "interrupted",
            )
    except Exception as e:
        log.warning("could not close the study's records (%s); the next sweep will", e)


def _grid_exhausted(study: optuna.Study, space: list[Param]) -> bool:
    """A grid study has finished every point of its grid (retries of a point included)."""
    seen = {
        tuple(sorted(t.params.items()))
        for t in own(study.get_trials(deepcopy=False, states=FINISHED))
    }
    return len(seen) >= grid_size(space)


def _progress(study: optuna.Study, target: int) -> Progress:
    best = best_trial(study)
    return Progress(
        study_name=study.study_name,
        finished=n_finished(study),
        target=target,
        best_value=primary(best) if best else None,
        best_number=best.number if best else None,
        queued=len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))),
    )


def _registers(cfg: Config) -> bool:
    t = cfg.tracking
    return bool(t.enabled and t.log_model and t.registered_model)
