"""`cifar-exp ui` and `cifar-exp dashboard`: the MLflow UI and optuna-dashboard on a tiny
study, checked over HTTP, in headless Chromium, and stopped as a terminal's Ctrl-C stops them."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import optuna
import pytest

from cifar_exp.dashboard import dashboard_command, ui_command
from cifar_exp.study.storage import storage_url
from cifar_exp.tracking import tracking_uri

from .conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_ui_serves_the_project_store_on_localhost(study_cfg):
    cfg, _, _ = study_cfg
    cmd = ui_command(cfg, "127.0.0.1", 5000)
    assert cmd[cmd.index("--backend-store-uri") + 1] == tracking_uri(cfg.tracking)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    # uvicorn, MLflow's server, logs every request unless told not to
    assert "--no-access-log" in cmd[cmd.index("--uvicorn-opts") + 1].split()
    loud = ui_command(cfg, "127.0.0.1", 5000, access_log=True)
    assert "--no-access-log" not in loud[loud.index("--uvicorn-opts") + 1].split()


def test_dashboard_serves_the_study_storage_on_localhost(study_cfg):
    cfg, _, _ = study_cfg
    url = storage_url(cfg)
    cmd = dashboard_command(url, "127.0.0.1", 8080)
    assert url in cmd and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    # gunicorn keeps no access log; wsgiref logs each request
    assert cmd[cmd.index("--server") + 1] == "gunicorn" and "--quiet" in cmd
    loud = dashboard_command(url, "127.0.0.1", 8080, access_log=True)
    assert loud[loud.index("--server") + 1] == "wsgiref"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_ui_shows_the_study_in_a_browser(study_cfg):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no browser: install Debian's chromium (apt-get install chromium)")
    cfg, root, out = study_cfg
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cifar_exp",
            "ui",
            "--port",
            str(port),
            f"tracking.dir={cfg.tracking.dir}",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
        exp = client.get_experiment_by_name(cfg.tracking.experiment_name).experiment_id
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs")
            parent = page.locator("[role=row]", has_text="study-tiny")
            parent.wait_for(timeout=90_000)
            assert page.get_by_text(cfg.tracking.experiment_name).first.is_visible()
            parent.locator("button[data-component-id*='runnamecellrenderer']").click()
            for n in range(4):  # the study's four child runs, nested under the parent
                page.get_by_text(f"trial-{n:03d}").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow_runs.png"))
            page.get_by_text("trial-000").click()
            page.get_by_text("val_accuracy").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow_run.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert (ARTIFACTS / "mlflow_run.png").stat().st_size > 10_000
    assert out.parent_run_id


def _ui(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cifar_exp", "ui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ui_where_it_cannot_listen_is_one_line_and_fails(tmp_path):
    """An impossible port, and a port another server holds: one error line, exit 2 (the MLflow
    server would otherwise fail in its own process while `ui` exited 0)."""
    out = _ui("--port", "70000", f"tracking.dir={tmp_path}/mlruns", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr.strip() == "error: ui --port 70000: a port is between 1 and 65535"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _ui("--port", str(port), f"tracking.dir={tmp_path}/mlruns", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: ui: cannot listen on 127.0.0.1:{port}")


def _start(command: str, *args: str, cwd) -> subprocess.Popen:
    """`python -m cifar_exp COMMAND ARGS` in a process group of its own, as a shell runs a
    foreground job, with Ctrl-C handled as in a terminal (a test runner may ignore it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cifar_exp", command, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _get(url: str) -> bytes:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(url, timeout=10) as response:
        return response.read()


def _wait_http(proc: subprocess.Popen, url: str) -> None:
    for _ in range(480):
        try:
            _get(url)
            return
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{url} never answered: {proc.communicate()[0]}")


def _ctrl_c(proc: subprocess.Popen) -> str:
    """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group. Returns
    all the command printed."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


ACCESS_LINE = re.compile(r'"GET /\S* HTTP/1\.1" \d{3}')


@pytest.mark.parametrize(
    "access_log", [False, pytest.param(True, marks=pytest.mark.slow, id="access-log")]
)
def test_ui_stops_on_ctrl_c_with_one_line_and_logs_requests_only_if_asked(tmp_path, access_log):
    """Issue #15: Ctrl-C printed two tracebacks, and every request the browser made flooded
    the terminal."""
    port = _free_port()
    flags = ["--access-log"] if access_log else []
    proc = _start(
        "ui", "--port", str(port), *flags, f"tracking.dir={tmp_path}/mlruns", cwd=tmp_path
    )
    _wait_http(proc, f"http://127.0.0.1:{port}/health")
    _get(f"http://127.0.0.1:{port}/")
    _get(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=5")
    time.sleep(1)  # what the server would log about them is written by now
    out = _ctrl_c(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert f"open http://127.0.0.1:{port} (Ctrl-C stops it)" in out
    assert out.rstrip().splitlines()[-1] == "MLflow UI stopped", out
    assert bool(ACCESS_LINE.search(out)) == access_log, out


def _dashboard(cfg, root, *args: str) -> subprocess.Popen:
    return _start("dashboard", *args, f"tracking.dir={cfg.tracking.dir}", cwd=root)


@pytest.mark.parametrize(
    "access_log", [False, pytest.param(True, marks=pytest.mark.slow, id="access-log")]
)
def test_dashboard_answers_http_with_the_study_and_stops_on_ctrl_c(study_cfg, access_log):
    cfg, root, _ = study_cfg
    port = _free_port()
    flags = ["--access-log"] if access_log else []
    proc = _dashboard(cfg, root, cfg.search.study_name, "--port", str(port), *flags)
    _wait_http(proc, f"http://127.0.0.1:{port}/api/meta")
    studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == [cfg.search.study_name]
    assert b"<title>Optuna Dashboard</title>" in _get(f"http://127.0.0.1:{port}/dashboard")
    time.sleep(1)
    out = _ctrl_c(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    lines = out.rstrip().splitlines()
    assert lines[0] == f"Optuna dashboard on {storage_url(cfg)}: 1 study ({cfg.search.study_name})"
    # the study named on the command line opens at its own page
    assert f"open http://127.0.0.1:{port}/dashboard/studies/1 (Ctrl-C stops it)" in lines
    assert lines[-1] == "Optuna dashboard stopped"
    assert bool(ACCESS_LINE.search(out)) == access_log, out


def test_a_killed_dashboard_leaves_no_server_behind(study_cfg):
    """The server runs in a session of its own (so a terminal's Ctrl-C skips it); were the
    command killed outright, the server still goes with it instead of holding the port."""
    cfg, root, _ = study_cfg
    port = _free_port()
    proc = _dashboard(cfg, root, "--port", str(port))
    _wait_http(proc, f"http://127.0.0.1:{port}/api/meta")
    proc.kill()
    proc.communicate(timeout=30)
    for _ in range(120):
        try:
            _get(f"http://127.0.0.1:{port}/api/meta")
        except OSError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the dashboard server outlived its command")


@pytest.mark.slow
def test_dashboard_shows_the_study_in_chromium(study_cfg, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no browser: install Debian's chromium (apt-get install chromium)")
    cfg, root, _ = study_cfg
    port = _free_port()
    proc = _dashboard(cfg, root, "--port", str(port))
    page = f"http://127.0.0.1:{port}/dashboard"
    browser = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=20000",  # the page fetches the studies, then renders them
        "--window-size=1400,900",
    ]
    try:
        _wait_http(proc, f"http://127.0.0.1:{port}/api/meta")
        served = _get(page).decode()
        dom = subprocess.run(
            [*browser, "--dump-dom", page], capture_output=True, text=True, timeout=120
        ).stdout
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "optuna_dashboard.png"
        subprocess.run(
            [*browser, f"--screenshot={shot}", f"{page}/studies/1"],
            capture_output=True,
            timeout=120,
        )
    finally:
        _ctrl_c(proc)
    # the study's name is in what the browser rendered, not in the page the server sent
    assert cfg.search.study_name not in served
    body = re.sub(r"<[^>]+>", " ", dom[dom.find("<body") :])
    assert re.search(rf"\b1\.\s+{cfg.search.study_name}\b", body), body[:2000]
    assert shot.stat().st_size > 10_000


def test_dashboard_without_a_study_is_one_line(tmp_path, study_cfg):
    """No study storage yet, a storage without studies, a study that is not there, a port
    that cannot be had: each one `error:` line and exit 2, no server started."""

    def dashboard(*args, cwd=tmp_path):
        out = subprocess.run(
            [sys.executable, "-m", "cifar_exp", "dashboard", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        return lines[0]

    line = dashboard(f"tracking.dir={tmp_path}/mlruns")
    assert line.startswith(f"error: dashboard: no study storage at {tmp_path}/mlruns/optuna.db: ")
    assert "sweep" in line and not (tmp_path / "mlruns").exists()
    line = dashboard(f"search.storage=sqlite:///{tmp_path}/elsewhere.db")
    assert line.startswith(f"error: dashboard: no study storage at {tmp_path}/elsewhere.db")
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/empty.db")  # the tables, no study
    line = dashboard(f"search.storage=sqlite:///{tmp_path}/empty.db")
    assert line.startswith(f"error: dashboard: no studies in sqlite:///{tmp_path}/empty.db yet")
    cfg, root, _ = study_cfg
    line = dashboard("no_such_study", f"tracking.dir={cfg.tracking.dir}", cwd=root)
    assert line == (
        f"error: dashboard: no study 'no_such_study' in {storage_url(cfg)} "
        f"(there: {cfg.search.study_name})"
    )
    line = dashboard("--port", "70000", f"tracking.dir={cfg.tracking.dir}", cwd=root)
    assert line == "error: dashboard --port 70000: a port is between 1 and 65535"
