"""`cifar-exp ui`: the MLflow UI on a tiny study, checked in headless Chromium."""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from cifar_exp.dashboard import ui_command
from cifar_exp.tracking import tracking_uri

from .conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_ui_serves_the_project_store_on_localhost(study_cfg):
    cfg, _, _ = study_cfg
    cmd = ui_command(cfg, "127.0.0.1", 5000)
    assert cmd[cmd.index("--backend-store-uri") + 1] == tracking_uri(cfg.tracking)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


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
