"""Several workers on one study, with a real PostgreSQL storage and a real MLflow server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

from .conftest import REPO
from .servers import MlflowServer, Postgres, pg_bin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql)"
    ),
]


@pytest.fixture()
def servers(tmp_path):
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e .[test])")
    db = Postgres(tmp_path / "pg").start()
    server = MlflowServer(db, tmp_path).wait()
    yield db, server
    server.stop()
    db.stop()


def worker_args(db, server, cifar_tarball, tmp_path, n_trials=9, epochs=2, log_model=False):
    return [
        "experiment=tiny",
        f"data.path={cifar_tarball}",
        f"data.cache_dir={tmp_path}",
        f"search.storage={db.url}",
        f"tracking.uri={server.url}",
        "search.study_name=shared",
        f"search.n_trials={n_trials}",
        f"trainer.epochs={epochs}",
        "search.heartbeat_interval=1",
        f"tracking.log_model={str(log_model).lower()}",
        "-q",
    ]


def start_workers(n, args, cwd):
    return [
        subprocess.Popen(
            [sys.executable, "-m", "cifar_exp", "sweep", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]


def check_study(db, server, n_trials):
    study = optuna.load_study(study_name="shared", storage=db.url)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials
    assert len({t.number for t in finished}) == n_trials
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    client = mlflow.MlflowClient(server.url)
    exp = client.get_experiment_by_name("cifar10")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_id = {r.info.run_id: r for r in children}
    for t in finished:  # every finished trial is linked to a finished child run
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
    finished_runs = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished_runs) == n_trials
    return study, children


def test_three_workers_share_one_study(servers, cifar_tarball, tmp_path):
    db, server = servers
    args = worker_args(db, server, cifar_tarball, tmp_path, log_model=True)
    workers = start_workers(3, args, REPO)
    for w in workers:
        out, _ = w.communicate(timeout=900)
        assert w.returncode == 0, out
    study, children = check_study(db, server, 9)
    # exactly one child run per trial, none twice
    assert len(children) == 9, describe(study, children)
    # each worker ends by registering the study's best model: one version of it, not three
    client = mlflow.MlflowClient(server.url)
    versions = client.search_model_versions("name = 'cifar10-cnn'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]


def describe(study, runs):
    """What the study and its runs hold, for a failure message."""
    trials = [
        f"trial {t.number} {t.state.name} {t.user_attrs.get('fail_reason', '')!r}"
        for t in study.trials
    ]
    children = [
        f"run {r.data.tags.get('optuna.trial_number')} {r.info.status} "
        f"{r.data.tags.get('failure_reason', '')!r}"
        for r in runs
    ]
    return "\n".join(trials + children)


def _wait_running(db, timeout=300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="shared", storage=db.url)
        except Exception:
            continue
        running = [
            t for t in study.trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
        ]
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        if running and done:
            return running
    raise AssertionError("no trial running in time")


def test_a_killed_worker_is_replaced_by_the_others(servers, cifar_tarball, tmp_path):
    db, server = servers
    args = worker_args(db, server, cifar_tarball, tmp_path, epochs=20)  # long trials
    workers = start_workers(3, args, REPO)
    running = _wait_running(db)
    pid = int(running[0].user_attrs["worker"].rsplit(":", 1)[1])
    victim = next(w for w in workers if w.pid == pid)  # the worker of a running trial
    victim.send_signal(signal.SIGKILL)  # mid-trial, no clean-up at all
    victim.wait()
    for w in workers:
        if w is victim:
            continue
        out, _ = w.communicate(timeout=900)
        assert w.returncode == 0, out
    study, children = check_study(db, server, 9)
    failed = [t for t in study.trials if t.state.name == "FAIL" and not t.user_attrs.get("skipped")]
    retried = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert failed and retried
    assert {t.system_attrs["failed_trial"] for t in retried} <= {t.number for t in failed}
    killed = [r for r in children if r.info.status == "KILLED"]
    assert killed and all("no heartbeat" in r.data.tags["failure_reason"] for r in killed)


def test_database_restart_mid_study(servers, cifar_tarball, tmp_path):
    db, server = servers
    args = worker_args(db, server, cifar_tarball, tmp_path, n_trials=6, epochs=4)
    workers = start_workers(2, args, REPO)
    _wait_running(db)
    before = {
        t.number: t.value
        for t in optuna.load_study(study_name="shared", storage=db.url).trials
        if t.state.name == "COMPLETE"
    }
    db.restart()
    outputs = []
    for w in workers:
        out, _ = w.communicate(timeout=900)
        outputs.append(out)
        # a worker either recovers (0) or stops with one clear line, never a traceback wall
        assert w.returncode == 0 or ("error:" in out and "Traceback" not in out), out
    if any(w.returncode for w in workers):  # finish the study with the same command
        again = start_workers(1, args, REPO)[0]
        out, _ = again.communicate(timeout=900)
        assert again.returncode == 0, out
    study = optuna.load_study(study_name="shared", storage=db.url)
    for number, value in before.items():  # no finished trial lost or changed
        assert study.trials[number].state.name == "COMPLETE"
        assert study.trials[number].value == value
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 6


def test_server_down_at_start_is_one_clear_error(tmp_path, cifar_tarball):
    from .servers import free_port

    url = f"postgresql+psycopg2://cifar:topsecret@127.0.0.1:{free_port()}/cifar"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_exp",
            "sweep",
            "experiment=tiny",
            f"data.path={cifar_tarball}",
            f"search.storage={url}",
            "tracking=none",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "CIFAR_EXP_RETRY_DELAYS": "0.2,0.2"},
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: study storage postgresql+psycopg2://cifar:***@127.0.0.1")
    assert "unreachable" in last and "topsecret" not in proc.stderr + proc.stdout
