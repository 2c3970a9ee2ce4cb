"""`search.n_workers` / `sweep --workers N`: several trials at once on one machine."""

import os
import signal

import mlflow
import optuna
import pytest

from cifar_exp.config import ConfigError, compose
from cifar_exp.study.storage import storage_url
from cifar_exp.study.workers import auto_workers, n_workers
from cifar_exp.tracking import tracking_uri

from .test_search import _cli, _descendants, _wait_for_running_trial, _wait_gone


def _sweep(args):
    # its own process group: Ctrl-C then goes to all of it, as a terminal's does
    return _cli(args, start_new_session=True)


def _study(cfg):
    return optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg))


def test_n_workers_is_validated_and_auto_follows_the_machine(overrides):
    assert n_workers(compose([*overrides, "search.n_workers=3"])) == 3
    assert n_workers(compose([*overrides, "search.n_workers=auto"])) == auto_workers() >= 1
    for bad in ("0", "two", "true", "1.5"):
        with pytest.raises(ConfigError, match=r"search\.n_workers"):
            compose([*overrides, f"search.n_workers={bad}"])


@pytest.mark.slow
def test_two_workers_share_the_study_and_stop_together(overrides):
    args = [
        *overrides,
        "search.n_trials=4",
        "trainer.epochs=3",
        "search.confirm.top_k=0",
        "tracking.log_model=false",
    ]
    cfg = compose(args)
    # Ctrl-C while both train: every worker stops, the study stays resumable
    proc = _sweep([*args, "--workers", "2"])
    _wait_for_running_trial(cfg)
    workers = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    _wait_gone(workers)
    # resumed with more trials to run: exactly n_trials finished, by both workers, none twice
    first = {t.number for t in _study(cfg).trials}
    again = _sweep([*args, "search.n_trials=8", "--workers", "2"])
    output, _ = again.communicate(timeout=900)
    assert again.returncode == 0, output
    study = _study(cfg)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8
    assert "RUNNING" not in {t.state.name for t in study.trials}
    assert len({t.user_attrs["mlflow_run_id"] for t in finished}) == 8
    assert len({t.user_attrs["worker"] for t in finished if t.number not in first}) == 2
    # the parent run ended with the study's last trial, not with the first worker to stop
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    last_end = max(t.datetime_complete for t in finished).timestamp() * 1000
    assert parent.info.end_time >= last_end - 1000
