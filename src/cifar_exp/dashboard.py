"""`cifar-exp ui` and `cifar-exp dashboard`: the MLflow UI on the project's tracking store and
optuna-dashboard on its study storage, bound to this machine unless told otherwise.

Each server runs in a child process of its own session: the Ctrl-C a terminal sends to its
foreground process group reaches only this process, which stops the server's whole process
group itself and prints one line, instead of every process printing its own traceback."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from cifar_exp import interrupts
from cifar_exp.config import Config, mask
from cifar_exp.errors import UserError
from cifar_exp.study.storage import retrying, storage_url
from cifar_exp.tracking import setup, tracking_uri

LOCAL = ("127.0.0.1", "localhost", "::1")


def ui_command(cfg: Config, host: str, port: int, access_log: bool = False) -> list[str]:
    """The `mlflow server` command line serving the embedded store (UI and artifacts)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri(cfg.tracking),
        "--registry-store-uri",
        tracking_uri(cfg.tracking),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    artifacts = (Path(cfg.tracking.dir).resolve() / "artifacts").as_uri()
    # uvicorn (MLflow's server) logs every request, and its start-up, at INFO; warnings and
    # errors still show
    quiet = "--log-level info" if access_log else "--no-access-log --log-level warning"
    return [
        *cmd,
        "--default-artifact-root",
        artifacts,
        "--no-serve-artifacts",
        "--uvicorn-opts",
        quiet,
    ]


def dashboard_command(url: str, host: str, port: int, access_log: bool = False) -> list[str]:
    """The `optuna-dashboard` command line serving the study storage at `url`."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    found = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    if found is None:
        raise DashboardUnavailable(
            "dashboard: optuna-dashboard is not installed (pip install optuna-dashboard, or "
            "reinstall this package)"
        )
    # gunicorn (which MLflow installs) keeps no access log, and --quiet hides its start-up
    # lines; wsgiref logs every request
    server = ["--server", "wsgiref"] if access_log else ["--server", "gunicorn", "--quiet"]
    return [found, url, "--host", host, "--port", str(port), *server]


class PortUnavailable(UserError):
    """The UI cannot listen where it was asked to; the message says why."""


class DashboardUnavailable(UserError):
    """No study to show, or no optuna-dashboard to show it with; the message says which."""


class ServerFailed(UserError):
    """The server stopped before it answered; its own messages are above."""


def check_port(host: str, port: int, command: str = "ui") -> None:
    """The server could listen on host:port: a port in range, an address of this machine,
    nothing else listening there. Checked before the server starts, which would otherwise
    fail in its own process while this one reported success."""
    if not 1 <= port <= 65535:
        raise PortUnavailable(f"{command} --port {port}: a port is between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise PortUnavailable(
            f"{command} --host {host}: not an address of this machine ({e})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as servers do: a port left in TIME_WAIT is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise PortUnavailable(
                f"{command}: cannot listen on {host}:{port} ({e.strerror}); another server may "
                "be there: pick one with --port"
            ) from None


def browse_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server bound to host:port."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    cfg: Config,
    console: Any,
    host: str = "127.0.0.1",
    port: int = 5000,
    access_log: bool = False,
) -> int:
    """Run the MLflow UI until Ctrl-C (or SIGTERM); returns the exit code."""
    if cfg.tracking.uri and not str(cfg.tracking.uri).startswith("sqlite"):
        console.print(
            f"runs go to the tracking server {mask(str(cfg.tracking.uri))}: open it "
            "in a browser; there is no local store to serve"
        )
        return 0
    check_port(host, port, "ui")
    setup(cfg.tracking)  # the store and the experiment exist before the UI opens them
    if host not in LOCAL:
        console.print(
            f"[yellow]warning:[/] serving on {host}: anyone who reaches this machine "
            "can read and change the runs (the MLflow UI has no login)"
        )
    url = browse_url(host, port)
    console.print(f"MLflow UI on {mask(tracking_uri(cfg.tracking))}", soft_wrap=True)
    cmd = ui_command(cfg, host, port, access_log)
    # MLflow's own import of a deprecated Starlette module: nothing a user can act on
    warnings = ",".join(
        w
        for w in (
            os.environ.get("PYTHONWARNINGS"),
            "ignore:starlette.middleware.wsgi is deprecated",
        )
        if w
    )
    env = {**os.environ, "PYTHONWARNINGS": warnings}
    return run_server(cmd, "MLflow UI", f"{url}/health", url, console, env)


def serve_dashboard(
    cfg: Config,
    console: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_log: bool = False,
    study: str | None = None,
) -> int:
    """Run optuna-dashboard on the study storage until Ctrl-C (or SIGTERM); `study`, where
    given, must be there. Returns the exit code."""
    url = study_storage(cfg)
    studies = _studies(url)
    check_port(host, port, "dashboard")
    if study is not None and study not in studies:
        raise DashboardUnavailable(
            f"dashboard: no study {study!r} in {mask(url)} (there: {', '.join(sorted(studies))})"
        )
    if host not in LOCAL:
        console.print(
            f"[yellow]warning:[/] serving on {host}: anyone who reaches this machine "
            "can read, change and delete the studies (optuna-dashboard has no login)"
        )
    names = sorted(studies)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    console.print(
        f"Optuna dashboard on {mask(url)}: {len(names)} "
        f"{'study' if len(names) == 1 else 'studies'} ({shown})",
        soft_wrap=True,
    )
    base = browse_url(host, port)
    name = study or cfg.search.study_name
    page = f"{base}/dashboard/studies/{studies[name]}" if name in studies else f"{base}/dashboard"
    cmd = dashboard_command(url, host, port, access_log)
    return run_server(cmd, "Optuna dashboard", f"{base}/api/meta", page, console)


def study_storage(cfg: Config) -> str:
    """The study storage URL (`search.storage`, else the SQLite file beside the MLflow
    store); a SQLite file that is not there means no study has run yet, which is an error
    here rather than a new empty file."""
    from sqlalchemy.engine import make_url

    hint = "run a study first, e.g. python -m cifar_exp sweep experiment=tiny"
    default = Path(cfg.tracking.dir).resolve() / "optuna.db"
    if not cfg.search.storage and not default.is_file():
        raise DashboardUnavailable(f"dashboard: no study storage at {default}: {hint}")
    url = storage_url(cfg)
    db = make_url(url).database if url.startswith("sqlite") else None
    if db and db != ":memory:" and not Path(db).is_file():
        raise DashboardUnavailable(f"dashboard: no study storage at {Path(db).resolve()}: {hint}")
    return url


def _studies(url: str) -> dict[str, int]:
    """The studies in the storage: name -> the id the dashboard's pages use."""
    import optuna

    storage = retrying(lambda: optuna.storages.RDBStorage(url), url)
    names = [s.study_name for s in storage.get_all_studies()]
    studies = {n: storage.get_study_id_from_name(n) for n in names}
    storage.engine.dispose()
    if not studies:
        raise DashboardUnavailable(
            f"dashboard: no studies in {mask(url)} yet: run one first, e.g. "
            "python -m cifar_exp sweep experiment=tiny"
        )
    return studies


def run_server(
    cmd: list[str],
    name: str,
    probe: str,
    page: str,
    console: Any,
    env: dict[str, str] | None = None,
) -> int:
    """Run the server `cmd` until it stops, Ctrl-C or SIGTERM (which `interrupts` turns into
    a KeyboardInterrupt); says where to open `page` once `probe` answers. Returns 0 once
    stopped; a server that stops by itself raises `ServerFailed`."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,  # its own process group: a terminal's Ctrl-C skips it
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        if _wait_until_up(proc, probe):
            console.print(f"open [bold]{page}[/] (Ctrl-C stops it)", soft_wrap=True)
        code = proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        interrupts.forget()  # the way to stop it: not an interruption of the command
        if console.is_terminal:  # after the "^C" the terminal echoed
            console.print()
        console.print(f"{name} stopped")
        return 0
    _stop(proc)  # whatever of its process group is left
    raise ServerFailed(f"{name}: the server stopped with exit code {code} (see above)")


def _wait_until_up(proc: subprocess.Popen, probe: str) -> bool:
    """Whether the server answered at `probe` before it stopped."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
    while proc.poll() is None:
        try:
            direct.open(probe, timeout=2).close()
            return True
        except OSError:
            time.sleep(0.3)
    return False


def _stop(proc: subprocess.Popen) -> None:
    """Stops the server's process group: TERM (servers shut down quietly on it), KILL after
    ten seconds or at a second Ctrl-C."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the server's process before it starts (Linux): TERM it when this process dies,
    so a killed `ui` or a closed terminal leaves no server holding the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
