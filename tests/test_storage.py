"""The study storage: where it goes and what happens when it cannot go there."""

import subprocess
import sys

import pytest

from cifar_exp.study.storage import StorageUnavailable, study_lock

from .conftest import REPO


def test_a_sqlite_study_in_a_new_folder_creates_the_folder(tmp_path):
    url = f"sqlite:///{tmp_path}/some/new/dir/optuna.db"
    with study_lock(url):
        assert (tmp_path / "some" / "new" / "dir").is_dir()


def test_a_sqlite_study_where_no_folder_can_be_made_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    lock = study_lock(f"sqlite:///{blocker}/sub/optuna.db")
    with pytest.raises(StorageUnavailable, match=r"cannot write in .*a_file/sub"), lock:
        pass


def _sweep(*args):
    return subprocess.run(
        [sys.executable, "-m", "cifar_exp", "sweep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sweep_into_a_new_storage_folder_runs(overrides, tmp_path):
    storage = tmp_path / "new" / "dir" / "optuna.db"
    fast = ["search.n_trials=1", "trainer.epochs=1", "tracking.log_model=false"]
    proc = _sweep(*overrides, *fast, f"search.storage=sqlite:///{storage}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert storage.is_file()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    proc = _sweep(*overrides, f"search.storage=sqlite:///{blocked}/optuna.db")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: study storage")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_held_study_lock_is_waited_for_out_loud(tmp_path, caplog):
    """(A sweep whose lock another process held waited with nothing on the screen.)"""
    import fcntl
    import logging
    import threading

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    entered = threading.Event()
    with open(tmp_path / "optuna.db.lock", "w") as other:  # another process's hold
        fcntl.flock(other, fcntl.LOCK_EX)
        with caplog.at_level(logging.INFO, logger="cifar_exp.study.storage"):

            def worker():
                with study_lock(url):
                    entered.set()

            thread = threading.Thread(target=worker)
            thread.start()
            assert not entered.wait(1.0)  # it waits...
            assert "waiting for the study lock" in caplog.text  # ...and says so
            fcntl.flock(other, fcntl.LOCK_UN)
            thread.join(10)
    assert entered.is_set()
