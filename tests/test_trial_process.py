import pytest

from cifar_exp.config import to_dict, with_overrides
from cifar_exp.study.trial_process import TrialError, run_trial


def _never_close(run_id, status, reason):
    raise AssertionError(f"run {run_id} should have been closed by its own process")


def test_trial_process_runs_where_the_caller_is_and_obeys_pruning(cfg, tmp_path, monkeypatch):
    """The child works in the caller's cwd and environment of now (not the forkserver's),
    reports every epoch, and stops when told to prune."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "ignored-but-carried")
    trial_cfg = with_overrides(cfg, {"tracking.dir": "relative-mlruns", "trainer.epochs": 3})
    seen, linked = [], []

    def judge(epoch, logs):
        seen.append((epoch, logs))
        return epoch == 2  # prune after the second epoch

    out = run_trial(
        to_dict(trial_cfg),
        judge,
        on_run=linked.append,
        close_run=_never_close,
        evaluate_test=False,
        verbose="0",
    )
    assert [e for e, _ in seen] == [1, 2]
    assert {"loss", "val_accuracy", "lr", "epoch_time"} <= set(seen[0][1])
    assert out.epochs_run == 2 and out.run_id == linked[0]
    assert out.history["val_accuracy"][-1] == pytest.approx(seen[-1][1]["val_accuracy"])
    assert (tmp_path / "relative-mlruns" / "mlflow.db").exists()


def test_an_error_in_the_trial_process_comes_back_with_its_type(cfg):
    bad = to_dict(cfg)
    bad["data"]["path"] = "/nonexistent/cifar.tar.gz"  # the child validates and fails
    with pytest.raises(TrialError, match=r"^ConfigError: data\.path: no such file"):
        run_trial(bad, lambda e, logs: False, on_run=print, close_run=_never_close)
