"""Bad stores, bad servers and signals, as a careless or hostile user would meet them: one
`error:` line and the right exit code, no traceback, no hang, and nothing modified that was
not the tool's to modify."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from cifar_exp.config import compose
from cifar_exp.stores import StoreError, check_sqlite_file, check_url
from cifar_exp.study.storage import storage_url
from cifar_exp.tracking import tracking_uri

from .conftest import REPO


def _cli(*args, cwd=REPO, env=None, timeout=300, **streams):
    """`python -m cifar_exp ARGS`, its output captured unless `streams` say otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "cifar_exp", *args],
        cwd=cwd,
        text=True,
        timeout=timeout,
        env={**os.environ, "CIFAR_EXP_RETRY_DELAYS": "0.1", **(env or {})},
        **(streams or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}),
    )


def _one_error_line(proc, starts: str, code: int = 2) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {starts}"), errors[0]
    return errors[0]


# --------------------------------------------------------------------------- database URLs


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "not a database URL"),
        ("nosuchdb://host/db", "unknown database kind 'nosuchdb'"),
        ("postgresql+pg8000://u:secret@host/db", "needs the Python package 'pg8000'"),
        # accepted before: the study ran, and was gone with the process
        ("sqlite://", "an in-memory database, gone when the process ends"),
        ("sqlite:///", "an in-memory database"),
        ("sqlite:///:memory:", "an in-memory database"),
    ],
)
def test_a_database_url_that_cannot_work_is_refused(url, message):
    with pytest.raises(StoreError, match=message) as err:
        check_url(url, "study storage")
    assert "secret" not in str(err.value)


def test_postgresql_without_a_driver_picks_the_installed_one():
    """SQLAlchemy 2.1's default for postgresql:// is psycopg (3); the postgres extra installs
    psycopg2: the URL gets the driver that is there."""
    import importlib.util

    url = check_url("postgresql://u:pw@host/db", "study storage")
    if importlib.util.find_spec("psycopg") is None:
        assert url == "postgresql+psycopg2://u:pw@host/db"
    else:
        assert url == "postgresql://u:pw@host/db"


def test_a_file_that_is_not_a_sqlite_database_is_refused_and_left_alone(tmp_path):
    junk = tmp_path / "optuna.db"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(StoreError, match="not a SQLite database; refused and left as it is"):
        check_sqlite_file(junk, "study storage")
    check_sqlite_file(tmp_path / "new.db", "study storage")  # not there yet: fine
    (tmp_path / "empty.db").write_bytes(b"")
    check_sqlite_file(tmp_path / "empty.db", "study storage")  # an empty file is a new database


def test_another_programs_sqlite_database_is_refused_and_left_alone(tmp_path):
    """(MLflow added its tables to a database holding only another program's.)"""
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    before = path.read_bytes()
    for url, what in [(f"sqlite:///{path}", "study storage"), (f"sqlite:///{path}", "MLflow")]:
        with pytest.raises(StoreError, match="another program's database \\(tables invoices\\)"):
            check_url(url, what, "studies" if what == "study storage" else "experiments")
    assert path.read_bytes() == before
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")  # Optuna's own: accepted
    check_url(f"sqlite:///{tmp_path / 'o.db'}", "study storage", "studies")
    with sqlite3.connect(tmp_path / "bare.db") as db:  # a database with no tables is new
        db.execute("PRAGMA user_version = 1")
    check_url(f"sqlite:///{tmp_path / 'bare.db'}", "study storage", "studies")


def test_corrupt_stores_are_one_line_from_every_command_and_stay_untouched(overrides, workdir):
    """A corrupt optuna.db (sweep and report) and a corrupt mlflow.db (train): one line, exit 2,
    and the files are byte for byte what they were."""
    cfg = compose(overrides)
    optuna_db = storage_url(cfg).removeprefix("sqlite:///")
    mlflow_db = tracking_uri(cfg.tracking).removeprefix("sqlite:///")
    junk = os.urandom(4096)
    for path in (optuna_db, mlflow_db):
        with open(path, "wb") as fh:
            fh.write(b"junk" + junk)
    fast = ["trainer.epochs=1", "search.n_trials=1"]
    line = _one_error_line(_cli("sweep", *overrides, *fast, cwd=workdir), "study storage")
    assert "optuna.db: not a SQLite database" in line
    _one_error_line(_cli("report", "tiny", *overrides, cwd=workdir), "study storage")
    line = _one_error_line(_cli("train", *overrides, *fast, cwd=workdir), "MLflow store")
    assert "mlflow.db: not a SQLite database" in line
    for path in (optuna_db, mlflow_db):
        with open(path, "rb") as fh:
            assert fh.read() == b"junk" + junk


def test_a_garbage_storage_url_is_one_line(overrides, workdir):
    proc = _cli("sweep", *overrides, "search.storage=::garbage::", cwd=workdir)
    assert "not a database URL" in _one_error_line(proc, "study storage")


# --------------------------------------------------------------------------- hangs


def test_an_unreachable_tracking_server_is_an_announced_bounded_wait(overrides, workdir):
    start = time.monotonic()
    proc = _cli("train", *overrides, "tracking.uri=http://127.0.0.1:1", cwd=workdir, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "waiting for the MLflow server at http://127.0.0.1:1" in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: MLflow server http://127.0.0.1:1 unreachable after 4 tries (Connection refused)"
    ]
    assert elapsed < 90, f"{elapsed:.0f} s"


# --------------------------------------------------------------------------- training


def test_train_that_diverges_is_one_line_and_a_failed_run(overrides, workdir):
    proc = _cli(
        "train",
        *overrides,
        "trainer.epochs=1",
        "optimizer.lr=1e6",
        "optimizer.momentum=0",
        "model.max_norm=null",
        "tracking.log_model=false",
        cwd=workdir,
    )
    assert "loss became" in _one_error_line(proc, "training diverged")
    cfg = compose(overrides)
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("TrainingDiverged: loss became")


# --------------------------------------------------------------------------- signals


@pytest.mark.slow
def test_sigterm_stops_a_sweep_as_ctrl_c_does(overrides, workdir):
    """What Slurm, Kubernetes and systemd send: the trial process stops, the trial is failed
    with its reason, its run closed KILLED, the study resumable, exit 143."""
    from .test_search import _descendants, _wait_for_running_trial, _wait_gone

    args = [
        *overrides,
        "search.n_trials=3",
        "trainer.epochs=6",
        "tracking.log_model=false",
        "search.confirm.top_k=0",
    ]
    cfg = compose(args)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_exp", "sweep", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _, running = _wait_for_running_trial(cfg)
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    assert "Traceback" not in output and "run the same command again" in output
    _wait_gone(children)
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    trial = study.trials[running]
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"] == "terminated (SIGTERM)"
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == "terminated (SIGTERM)"
    experiment = client.get_experiment_by_name("cifar10").experiment_id
    assert not [r for r in client.search_runs([experiment]) if r.info.status == "RUNNING"]


class _SwallowsACtrlC:
    """A destructor that a Ctrl-C reaches, as one of SQLAlchemy's garbage collector callbacks
    did between two trials in CI: Python prints "Exception ignored in ..." and goes on."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100_000):  # the handler runs here, within the destructor
            pass


@pytest.fixture()
def handlers():
    """The signal handlers `python -m cifar_exp` installs, for an in-process test (conftest
    puts the previous ones back)."""
    from cifar_exp import interrupts

    interrupts.terminate_as_interrupt()
    return interrupts


# without the tool's unraisable hook pytest would report the swallowed KeyboardInterrupt
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_swallows_is_raised_at_the_next_checkpoint(handlers, capsys):
    _SwallowsACtrlC()  # deleted at once
    assert isinstance(handlers.pending(), KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        handlers.checkpoint()
    assert "Exception ignored" not in capsys.readouterr().err  # no traceback shown for it


def test_a_ctrl_c_python_swallows_between_trials_still_stops_the_sweep(handlers, cfg):
    from cifar_exp.config import with_overrides
    from cifar_exp.study.progress import NullReporter
    from cifar_exp.study.sweep import sweep

    class Reporter(NullReporter):
        def trial_ended(self, outcome, progress) -> None:
            _SwallowsACtrlC()

    cfg = with_overrides(cfg, {"search.confirm.top_k": 0, "tracking.log_model": False})
    with pytest.raises(KeyboardInterrupt):
        sweep(cfg, Reporter())
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    assert [t.state.name for t in study.trials] == ["COMPLETE"]  # not the 4 it would have run


def test_a_ctrl_c_swallowed_after_the_last_checkpoint_still_exits_130(
    monkeypatch, capsys, overrides
):
    import logging
    import threading

    from cifar_exp import __main__ as cli

    def finishes(*args):
        _SwallowsACtrlC()  # as if in the command's last garbage collection
        return 0

    monkeypatch.setattr(cli.COMMANDS["train"], "run", finishes)
    saved = threading.excepthook, logging.root.handlers[:]  # main() sets them for the process
    try:
        assert cli.main(["train", *overrides]) == 130
    finally:
        threading.excepthook = saved[0]
        logging.root.handlers[:] = saved[1]
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, line",
    [  # a read-only mlruns/: SQLAlchemy raises from deep inside MLflow or Optuna
        ("database", "error: database: attempt to write a readonly database"),
        # a read-only reports/ folder (it was "OSError: ... (unexpected; ...)", exit 1)
        ("folder", "error: reports/tiny: Permission denied"),
        # MLflow's wrapping of it: the cause was the second line, after SQLAlchemy's own
        ("mlflow", "error: MLflow: attempt to write a readonly database"),
    ],
)
def test_a_store_that_breaks_while_in_use_is_one_line(monkeypatch, capsys, overrides, error, line):
    from sqlalchemy.exc import OperationalError

    from cifar_exp import __main__ as cli

    def broken(*args):
        if error == "folder":
            raise PermissionError(13, "Permission denied", "reports/tiny")
        if error == "mlflow":
            raise mlflow.exceptions.MlflowException(
                "(raised as a result of Query-invoked autoflush; consider using a session."
                "no_autoflush block if this flush is occurring prematurely)\n"
                "(sqlite3.OperationalError) attempt to write a readonly database\n"
                "[SQL: INSERT INTO runs (run_uuid, name) VALUES (?, ?)]"
            )
        raise OperationalError("INSERT ...", {}, Exception("attempt to write a readonly database"))

    import logging
    import threading

    monkeypatch.setattr(cli.COMMANDS["train"], "run", broken)
    # main() sets process-wide state (a SIGTERM handler, the thread excepthook, logging):
    # put it back for the rest of the session
    saved = signal.getsignal(signal.SIGTERM), threading.excepthook, logging.root.handlers[:]
    try:
        assert cli.main(["train", *overrides]) == 2
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        threading.excepthook = saved[1]
        logging.root.handlers[:] = saved[2]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line]


def test_git_state_is_read_without_taking_locks(monkeypatch):
    """`git status` refreshes the index under .git/index.lock unless told not to, and a user's
    own git command at that moment would fail on the lock."""
    from cifar_exp import provenance

    seen = []

    def record(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="abc\n", stderr="")

    monkeypatch.setattr(provenance.subprocess, "run", record)
    provenance.git_info.cache_clear()
    try:
        provenance.git_info()
    finally:
        provenance.git_info.cache_clear()
    assert seen and all(cmd[:2] == ["git", "--no-optional-locks"] for cmd in seen)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("delay", [1.5, 3.0])
def test_a_signal_during_start_up_is_one_line(overrides, workdir, sig, delay):
    """Stopped while it composes its config or imports TensorFlow (the first seconds): the
    same one line and exit code as later, not a traceback through the imports."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_exp", "train", *overrides, "tracking=none"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last == ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted (Ctrl-C)")


def test_a_read_only_tracking_folder_without_a_store_is_refused_at_once(monkeypatch, cfg):
    """(MLflow retried opening a database it could not create for 108 s, then said "unable to
    open database file".)"""
    from cifar_exp import tracking
    from cifar_exp.stores import TrackingUnavailable

    real = os.access
    root = Path(cfg.tracking.dir).resolve()
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == root else real(p, mode))
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"a read-only folder \(tracking\.dir\)"):
        tracking.setup(cfg.tracking)
    assert time.monotonic() - start < 10


def test_a_result_mlflow_cannot_record_is_still_shown(monkeypatch, capsys, overrides):
    """A full disk after the training: the result is shown, then one line saying why it is not
    recorded, and the run is FAILED (it showed 449 lines of tracebacks, no result, and left
    the run RUNNING)."""
    import logging
    import threading

    from cifar_exp import __main__ as cli
    from cifar_exp import runs

    def full(*args):
        raise mlflow.exceptions.MlflowException(
            "(sqlite3.OperationalError) database or disk is full"
        )

    monkeypatch.setattr(runs, "_log_result", full)
    saved = signal.getsignal(signal.SIGTERM), threading.excepthook, logging.root.handlers[:]
    try:
        assert cli.main(["train", *overrides, "trainer.epochs=1"]) == 2
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        threading.excepthook = saved[1]
        logging.root.handlers[:] = saved[2]
    out = capsys.readouterr()
    assert "test_accuracy" in out.out and "result (one run, seed 7)" in out.out
    assert out.err.strip().splitlines()[-1] == (
        "error: the result could not be recorded in MLflow (database or disk is full)"
    )
    client = mlflow.MlflowClient(tracking_uri(compose(overrides).tracking))
    (run,) = client.search_runs([client.get_experiment_by_name("cifar10").experiment_id])
    assert run.info.status == "FAILED" and "disk is full" in run.data.tags["failure_reason"]


# --------------------------------------------------------------------------- closed outputs


def _head_1(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """`python -m cifar_exp ARGS | head -1`: the first line read, then the pipe closed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_exp", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    return proc.returncode, first, err


def test_a_closed_pipe_stops_train_as_sigpipe_would(overrides, workdir):
    """`train | head -1`: the reader went away. The work stops as a Unix tool's does (exit
    141), with one line on stderr, and the run is closed KILLED with its reason: not a
    broken pipe reported as a bug, not a FAILED run."""
    code, first, err = _head_1(["train", *overrides, "trainer.epochs=3"], workdir)
    assert first.strip()
    assert code == 141, err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()][-1] == (
        "stopped (its output was closed: broken pipe)"
    )
    client = mlflow.MlflowClient(tracking_uri(compose(overrides).tracking))
    experiment = client.get_experiment_by_name("cifar10").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == "stopped (its output was closed: broken pipe)"


def test_output_into_a_pipe_already_closed_is_no_traceback(workdir):
    """The reader gone before the first write, with Python's usual buffering (the output
    written only when the interpreter flushes at exit): no traceback, no "Exception ignored"."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for args in (["--help"], ["train", "--cfg"]):
        proc = subprocess.run(
            [sys.executable, "-m", "cifar_exp", *args],
            cwd=workdir,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
    os.close(write)


def test_a_closed_pipe_stops_a_sweep_resumably(overrides, workdir):
    """`sweep | head -1`: exit 141, the line that says how to resume, the study's run closed
    KILLED (not FINISHED with trials missing), no run left RUNNING."""
    args = [*overrides, "search.confirm.top_k=0", "tracking.log_model=false"]
    code, first, err = _head_1(["sweep", *args], workdir)
    assert first.strip()
    assert code == 141, err
    assert "Traceback" not in err and "stopped: what finished is saved" in err, err
    client = mlflow.MlflowClient(tracking_uri(compose(args).tracking))
    experiment = client.get_experiment_by_name("cifar10").experiment_id
    runs = {r.info.run_name: r.info.status for r in client.search_runs([experiment])}
    assert runs["study-tiny"] == "KILLED" and "RUNNING" not in runs.values(), runs


def test_a_closed_stdout_is_no_traceback(overrides, workdir):
    """`>&-`: what would be printed goes nowhere, and no file the process opens (the MLflow
    store) takes the free descriptor 1 and receives it."""
    proc = _cli(
        "train",
        *overrides,
        "trainer.epochs=1",
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    client = mlflow.MlflowClient(tracking_uri(compose(overrides).tracking))
    experiment = client.get_experiment_by_name("cifar10").experiment_id
    assert [r.info.status for r in client.search_runs([experiment])] == ["FINISHED"]


def test_reproduce_where_there_is_no_store_makes_none(tmp_path):
    proc = _cli("reproduce", "0" * 32, f"tracking.dir={tmp_path / 'nostore'}", cwd=tmp_path)
    _one_error_line(proc, f"{'0' * 32}: no such MLflow run in {tmp_path / 'nostore'}")
    assert not (tmp_path / "nostore").exists()
