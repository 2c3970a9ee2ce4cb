"""Cost-aware search: a multi-objective study (accuracy against training time), its report
(Pareto front, the best within a time budget) and the keys that configure it."""

from __future__ import annotations

import logging
import subprocess
import sys

import optuna
import pytest

from cifar_exp.config import ConfigError, compose
from cifar_exp.study.space import make_sampler
from cifar_exp.study.trials import best_trial, pareto_front, primary

MULTI = [
    "search.objectives=[val_accuracy,train_time]",
    "search.directions=[maximize,minimize]",
    "search.n_trials=3",
    "search.confirm.top_k=0",
    "trainer.epochs=2",
    "search.pruner.name=median",  # configured, so turning it off is said
    "search.study_name=cost",
]


@pytest.fixture()
def multi_study(overrides, workdir, caplog):
    """The tiny multi-objective study, run once per test that needs it: (cfg, summary, log)."""
    from cifar_exp.study.sweep import sweep

    cfg = compose([*overrides, *MULTI])
    with caplog.at_level(logging.WARNING):
        out = sweep(cfg, register=False)
    return cfg, out, caplog.text


@pytest.mark.slow
def test_multi_objective_study_and_its_report(multi_study, workdir):
    from cifar_exp.report import report
    from cifar_exp.study.storage import storage_url

    cfg, out, logged = multi_study
    assert "Optuna cannot prune a multi-objective study" in logged
    study = optuna.load_study(study_name="cost", storage=storage_url(cfg))
    assert study.metric_names == ["val_accuracy", "train_time"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and out.finished == 3
    for t in done:  # both values: the mean last-epoch val_accuracy and the training seconds
        assert len(t.values) == 2
        assert t.values[0] == pytest.approx(t.user_attrs["val_accuracy"])
        assert t.values[1] == pytest.approx(t.user_attrs["train_time"]) and t.values[1] > 0
        assert not t.intermediate_values  # never reported: Optuna cannot prune it
    front = pareto_front(study)
    assert front and {t.number for t in front} == {t.number for t in study.best_trials}
    best = best_trial(study)
    assert best in front and primary(best) == max(primary(t) for t in front)
    assert out.best.number == best.number and [f.number for f in out.front] == sorted(
        t.number for t in front
    )
    assert out.confirmation is None

    result = report(cfg, workdir / "reports", budget_minutes=10)
    md = result.markdown.read_text()
    assert "pareto_front.png" in result.figures and result.figures["pareto_front.png"].exists()
    assert "## Pareto front" in md and "Pareto front: every complete trial" in md
    assert "| trial | val_accuracy | train_time (s) |" in md  # the front's table
    assert "train_time (s)" in result.table.columns or "train_time" in result.table.columns
    # every tiny trial trains in seconds: the best within 10 minutes is the front's best
    assert result.budget is not None and result.budget.number == best.number
    assert "## Within a budget of 10 minutes" in md and f"trial {best.number}'s" in md
    # a budget no trial fits: said so, with the fastest trial
    tight = report(cfg, workdir / "reports", budget_minutes=1e-6)
    assert tight.budget.number is None
    assert "No complete trial fits" in tight.markdown.read_text()


@pytest.mark.slow
def test_report_budget_option_on_the_command_line(multi_study, workdir):
    cfg, _, _ = multi_study
    argv = [sys.executable, "-m", "cifar_exp", "report", "--budget-minutes", "10"]
    argv += [f"data.path={cfg.data.path}", f"tracking.dir={cfg.tracking.dir}", *MULTI]
    proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Within 10 min of training" in proc.stdout


def test_budget_must_be_positive(cfg):
    from cifar_exp.report import report

    with pytest.raises(ConfigError, match="--budget-minutes: must be > 0"):
        report(cfg, budget_minutes=0)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["search.objectives=[val_acc,train_time]", "search.directions=[maximize,minimize]"],
         "search.objectives"),
        (["search.objectives=[val_accuracy,val_accuracy]", "search.directions=[maximize,maximize]"],
         "search.objectives"),
        (["search.objectives=[val_accuracy]", "search.directions=[maximize]"],
         "search.objectives"),
        (["search.objectives=[val_accuracy,train_time]", "search.directions=[maximize]"],
         "search.directions"),
        (["search.objectives=[val_accuracy,train_time]", "search.directions=[maximize,fast]"],
         "search.directions"),
    ],
)  # fmt: skip
def test_bad_objectives_are_one_line_naming_the_key(overrides, extra, key):
    with pytest.raises(ConfigError) as e:
        compose([*overrides, *extra])
    message = str(e.value)
    assert message.startswith(key) and "\n" not in message


def test_single_objective_stays_the_default(cfg):
    assert not cfg.search.objectives and not cfg.search.directions
    assert str(cfg.search.direction) == "maximize"


def test_nsga2_sampler(overrides):
    cfg = compose([*overrides, *MULTI, "search.sampler.name=nsga2"])
    assert isinstance(make_sampler(cfg.search, []), optuna.samplers.NSGAIISampler)


def test_a_study_keeps_its_objectives(overrides):
    """Resuming a single-objective study as a multi-objective one is a clear error."""
    from cifar_exp.study.space import parse_space
    from cifar_exp.study.storage import storage_url
    from cifar_exp.study.sweep import open_study

    single = compose([*overrides, "search.study_name=kept"])
    open_study(single, parse_space(single), storage_url(single))
    multi = compose([*overrides, *MULTI[:2], "search.study_name=kept"])
    with pytest.raises(ConfigError, match=r"search\.directions: study 'kept' was created to"):
        open_study(multi, parse_space(multi), storage_url(multi))


def test_a_study_made_by_optuna_without_names_is_reported(workdir, overrides):
    """(A two-objective study made with Optuna directly has no metric names: the report
    failed with "zip() argument 2 is longer than argument 1".)"""
    import optuna

    from cifar_exp.config import compose
    from cifar_exp.report import report
    from cifar_exp.study.storage import storage_url

    cfg = compose([*overrides, "search.study_name=bare"])
    study = optuna.create_study(
        study_name="bare", storage=storage_url(cfg), directions=["maximize", "minimize"]
    )
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), 4)
    md = report(cfg).markdown.read_text()
    assert "`objective 1` (maximize) and `objective 2` (minimize)" in md
