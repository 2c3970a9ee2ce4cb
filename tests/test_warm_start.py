"""Warm starts (`search.warm_start`) and constraints (`search.constraints`)."""

import math

import optuna
import pytest

from cifar_exp.config import ConfigError, compose, with_overrides
from cifar_exp.report import report
from cifar_exp.study.space import parse_space
from cifar_exp.study.storage import storage_url
from cifar_exp.study.sweep import open_study, sweep
from cifar_exp.study.trials import (
    PRIOR,
    best_trial,
    complete,
    constraint_values,
    n_finished,
)
from cifar_exp.study.warm import FROM


def test_a_new_study_starts_from_the_best_of_an_earlier_one(study_cfg):
    cfg, root, _ = study_cfg
    url = storage_url(cfg)
    old = optuna.load_study(study_name="tiny", storage=url)
    best3 = sorted(complete(old), key=lambda t: t.value, reverse=True)[:3]
    new_cfg = with_overrides(
        cfg,
        {
            "search.study_name": "tiny-warm",
            "search.warm_start": "tiny",
            "search.n_trials": 1,
            "search.confirm.top_k": 0,
        },
    )
    study = open_study(new_cfg, parse_space(new_cfg), url)
    queued = [t for t in study.trials if t.state.name == "WAITING"]
    assert [t.system_attrs["fixed_params"] for t in queued] == [t.params for t in best3]
    assert [t.user_attrs[FROM] for t in queued] == [f"tiny#{t.number}" for t in best3]
    # the same space: the earlier trials inform the sampler, but are not this study's own
    priors = [t for t in study.trials if PRIOR in t.user_attrs]
    assert len(priors) == len([t for t in old.trials if t.state.name in ("COMPLETE", "PRUNED")])
    assert n_finished(study) == 0 and best_trial(study) is None
    # opening it again (a resume, another worker) queues nothing more
    again = open_study(new_cfg, parse_space(new_cfg), url)
    assert len(again.trials) == len(study.trials)
    # its first trial trains the earlier study's best configuration
    out = sweep(new_cfg)
    study = optuna.load_study(study_name="tiny-warm", storage=url)
    first = next(t for t in study.trials if PRIOR not in t.user_attrs)
    assert first.state.name == "COMPLETE" and first.params == best3[0].params
    assert out.finished == 1 and out.best.number == first.number
    # its report says where that trial came from, and shows none of the earlier study's trials
    md = report(new_cfg, root / "reports-warm").markdown.read_text()
    assert f"warm start: tiny#{best3[0].number}" in md
    assert out.counts == {"COMPLETE": 1, "WAITING": 2}


def test_warm_start_from_a_missing_study_is_one_clear_error(study_cfg):
    """Refused before anything is made: no empty study left behind; and refused as well when
    the study resumes (a misspelt name is not ignored)."""
    cfg, _, _ = study_cfg
    bad = with_overrides(cfg, {"search.study_name": "fresh", "search.warm_start": "nope"})
    with pytest.raises(ConfigError, match="no study 'nope'"):
        open_study(bad, parse_space(bad), storage_url(bad))
    assert "fresh" not in optuna.get_all_study_names(storage_url(bad))
    resumed = with_overrides(bad, {"search.study_name": cfg.search.study_name})
    with pytest.raises(ConfigError, match="no study 'nope'"):
        open_study(resumed, parse_space(resumed), storage_url(resumed))


def test_constraints_are_checked_and_decide_the_best(overrides):
    cfg = compose([*overrides, "search.constraints=['train_time <= 60','val_accuracy >= 0.5']"])
    values = constraint_values(cfg.search, {"train_time": 90.0, "val_accuracy": 0.7})
    assert values == {"train_time <= 60": 30.0, "val_accuracy >= 0.5": pytest.approx(-0.2)}
    assert constraint_values(cfg.search, {})["train_time <= 60"] == math.inf
    for bad in ("train_time < 60", "train_time <= soon", "<= 60", "train_time <= inf"):
        with pytest.raises(ConfigError, match=r"search\.constraints"):
            compose([*overrides, f"search.constraints=[{bad!r}]"])
    # a faster but worse trial is the best when the better one broke a constraint
    study = optuna.create_study(direction="maximize")
    slow = study.ask()
    slow.set_constraint("train_time <= 60", 30.0)
    study.tell(slow, 0.9)
    fast = study.ask()
    fast.set_constraint("train_time <= 60", -10.0)
    study.tell(fast, 0.6)
    assert best_trial(study).number == fast.number


def test_priors_hold_no_slot_of_the_new_study():
    """A warm start's copied trials do not count as the new study's: a trial after them is
    not skipped as 'not needed' (before the fix, a sweep with more trials than the queued
    ones skipped every new trial and never finished)."""
    from cifar_exp.study.objective import claim_slot

    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={"x": 0.5}, distributions=dist, value=1.0, user_attrs={PRIOR: "old#0"}
            )
            for _ in range(5)
        ]
    )
    claim_slot(study.ask(), target=4)  # raises StudyFull if the priors held slots


def test_only_an_interrupted_trial_is_queued_again():
    from cifar_exp.study.storage import requeue_interrupted

    study = optuna.create_study()
    for reason in ("interrupted (Ctrl-C)", "ValueError: diverged"):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    for number in (0, 1):
        requeue_interrupted(study, number)
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert [t.system_attrs["failed_trial"] for t in waiting] == [0]


def _stop_next(study: optuna.Study, reason: str) -> int:
    """The next queued trial runs and is stopped with `reason`; returns its number."""
    trial = study.ask()
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return trial.number


def test_a_trial_interrupted_again_and_again_is_always_queued_again():
    """A stop the user asked for is not the configuration's failure: however often its
    retries are interrupted, its parameters run when the study resumes."""
    from cifar_exp.study.storage import requeue_interrupted

    study = optuna.create_study()
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    first.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    requeue_interrupted(study, first.number)
    for reason in ("terminated (SIGTERM)", "interrupted (Ctrl-C)"):
        requeue_interrupted(study, _stop_next(study, reason))
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert [(t.params, t.system_attrs["retry_history"]) for t in waiting] == [
        (first.params, [0, 1, 2])
    ]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked and told by hand
def test_interrupted_attempts_do_not_count_against_max_retry(tmp_path):
    """A trial interrupted twice whose next attempt loses its worker is still retried once
    (search.max_retry=1), and once only."""
    from cifar_exp.config import compose
    from cifar_exp.study.storage import make_storage, requeue_interrupted

    cfg = compose([f"tracking.dir={tmp_path}", "search.max_retry=1"])
    storage = make_storage(cfg.search, f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage)
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    first.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    requeue_interrupted(study, first.number)
    requeue_interrupted(study, _stop_next(study, "interrupted (Ctrl-C)"))
    callback = storage.get_heartbeat_stale_trial_callback()
    for _ in range(2):  # two attempts in a row lose their worker
        lost = study.ask()
        study.tell(lost, state=optuna.trial.TrialState.FAIL)
        callback(study, study.trials[lost.number])
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert [t.system_attrs["retry_history"] for t in waiting] == []
    assert [t.system_attrs.get("retry_history") for t in study.trials] == [
        None,
        [0],
        [0, 1],
        [0, 1, 2],
    ]


def test_warm_start_keeps_only_values_the_new_space_holds():
    from cifar_exp.study.warm import _holds

    choices = optuna.distributions.CategoricalDistribution([32, 64, 128])
    assert _holds(choices, 64) and not _holds(choices, 512)
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert _holds(lr, 0.01) and not _holds(lr, 0.5)
