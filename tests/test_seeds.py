"""Seeds inside a study, the confirmation stage and the replication audit: every number that
decides something says how many seeds it rests on and, with several, its interval."""

import mlflow
import numpy as np
import optuna
import pytest

from cifar_exp.config import compose, with_overrides
from cifar_exp.study.progress import NullReporter
from cifar_exp.study.storage import storage_url
from cifar_exp.study.sweep import confirm_study, sweep
from cifar_exp.tracking import tracking_uri


def _study(cfg):
    return optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg))


def _runs(cfg):
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    exp = client.get_experiment_by_name(cfg.tracking.experiment_name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture()
def fast(overrides):
    """The tiny study, in-process and without models or a confirmation stage unless asked."""
    return compose(
        [
            *overrides,
            "search.isolate_trials=false",
            "tracking.log_model=false",
            "search.confirm.top_k=0",
        ]
    )


def test_a_study_with_two_seeds_nests_them_and_aggregates(fast):
    cfg = with_overrides(fast, {"search.seeds": 2, "search.n_trials": 2})
    out = sweep(cfg)
    assert out.finished == 2
    client, found = _runs(cfg)
    by_id = {r.info.run_id: r for r in found}
    for trial in _study(cfg).trials:
        holder = by_id[trial.user_attrs["mlflow_run_id"]]
        seeds = [r for r in found if r.data.tags.get("mlflow.parentRunId") == holder.info.run_id]
        assert sorted(r.data.tags["seed"] for r in seeds) == ["7", "8"]  # trainer.seed, +1
        finals = [r.data.metrics["val_accuracy"] for r in seeds]
        assert trial.value == pytest.approx(np.mean(finals))
        assert trial.user_attrs["n_seeds"] == 2
        assert trial.user_attrs["value_std"] == pytest.approx(np.std(finals, ddof=1))
        assert trial.user_attrs["ci_low"] <= trial.value <= trial.user_attrs["ci_high"]
        # the trial's run holds the aggregate: the mean curve per epoch, its std, the interval
        mean_curve = client.get_metric_history(holder.info.run_id, "val_accuracy")
        assert [m.step for m in sorted(mean_curve, key=lambda m: m.step)] == [1, 2]
        assert holder.data.metrics["val_accuracy"] == pytest.approx(trial.value)
        assert "val_accuracy_std" in holder.data.metrics
        assert holder.data.metrics["n_seeds"] == 2
        files = {a.path for a in client.list_artifacts(holder.info.run_id)}
        assert "seeds.csv" in files
        assert holder.data.tags["mlflow.parentRunId"] == out.parent_run_id
    assert out.best.summary.n == 2 and out.best.summary.ci_low is not None


class _StopAfterSeeds(NullReporter):
    """Stops the confirmation (as Ctrl-C would) after `n` confirmation seeds."""

    def __init__(self, n):
        self.n, self.seen = n, []

    def seed_ended(self, number, seed, value):
        self.seen.append((number, seed))
        if len(self.seen) >= self.n:
            raise KeyboardInterrupt


def test_confirmation_brings_the_best_to_k_seeds_resumes_and_records_the_comparison(fast):
    cfg = with_overrides(fast, {"search.n_trials": 3})
    sweep(cfg)  # single-seed trials (search.seeds: 1)
    confirm_cfg = with_overrides(cfg, {"search.confirm.top_k": 2, "search.confirm.seeds": 3})
    stopper = _StopAfterSeeds(1)
    with pytest.raises(KeyboardInterrupt):
        confirm_study(confirm_cfg, stopper)
    trained_first = list(stopper.seen)
    again = _StopAfterSeeds(99)
    out = confirm_study(confirm_cfg, again)
    # 2 configurations x 2 missing seeds each = 4 trainings; the one before the stop is kept
    assert len(trained_first) == 1 and len(again.seen) == 3
    assert not set(again.seen) & set(trained_first)
    result = out.confirmation
    assert [c.summary.n for c in result.candidates] == [3, 3]
    assert sorted(result.winner.values) == [7, 8, 9]
    means = [c.summary.mean for c in result.candidates]
    assert means == sorted(means, reverse=True)  # chosen on the confirmed means
    assert len(result.comparisons) == 1 and result.comparisons[0].p_value is not None
    assert result.statements()[0].startswith(f"trial {result.winner.number} is ")
    assert out.best.number == result.winner.number and out.best.summary.n == 3
    # recorded with the study and on its parent run
    assert _study(cfg).user_attrs["confirmation"]["statements"] == result.statements()
    client, found = _runs(cfg)
    parent = client.get_run(out.parent_run_id)
    assert parent.data.tags["confirmed.trial"] == str(result.winner.number)
    assert "confirmation.json" in {a.path for a in client.list_artifacts(out.parent_run_id)}
    confirm_runs = [r for r in found if "confirm.trial" in r.data.tags]
    assert len(confirm_runs) == 4 and all(r.info.status == "FINISHED" for r in confirm_runs)
    # nothing is missing any more: a third run trains nothing
    third = _StopAfterSeeds(99)
    confirm_study(confirm_cfg, third)
    assert third.seen == []


def test_replication_audit_says_inside_or_outside(fast):
    """`reproduce --seeds 2`: a real run is inside its replication's interval; a run whose
    recorded value no training of its config gives is outside."""
    from cifar_exp.config import to_yaml
    from cifar_exp.reproduce import reproduce
    from cifar_exp.runs import train_tracked
    from cifar_exp.tracking import setup

    real = train_tracked(fast, verbose="0", evaluate_test=False)
    audit = reproduce(real.run_id, fast, seeds=2).replication
    assert audit.seeds == [8, 9] and len(audit.run_ids) == 2
    val = next(a for a in audit.audits if a.metric == "val_accuracy")
    assert val.inside and audit.consistent
    # a run recorded with this config but an accuracy its config never gives
    mlflow.set_tracking_uri(tracking_uri(fast.tracking))
    with mlflow.start_run(experiment_id=setup(fast.tracking)) as run:
        mlflow.log_text(to_yaml(fast), "config.yaml")
        for epoch, (loss, acc) in enumerate([(9.0, 0.0), (9.0, 0.0)], start=1):
            mlflow.log_metrics(
                {"loss": loss, "accuracy": acc, "val_loss": loss, "val_accuracy": acc}, step=epoch
            )
    out = reproduce(run.info.run_id, fast, seeds=2)
    val = next(a for a in out.replication.audits if a.metric == "val_accuracy")
    assert val.original == 0.0 and val.inside is False and not out.replication.consistent


@pytest.mark.parametrize("k", [1, -2, 101, 1000000])
def test_reproduce_seeds_out_of_range_is_refused_before_any_work(k, cfg):
    """(1,000,000 seeds were accepted and trained in one process, its memory growing about
    50 MB a training.)"""
    from cifar_exp.config import ConfigError
    from cifar_exp.reproduce import reproduce

    with pytest.raises(ConfigError, match=r"takes 0 \(no replication\) or 2 to 100 seeds"):
        reproduce("no-such-run", cfg, seeds=k)
