"""`cifar-exp ui`: the MLflow UI on the project's tracking store, bound to this machine."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from cifar_exp.config import Config, mask
from cifar_exp.errors import UserError
from cifar_exp.tracking import setup, tracking_uri


def ui_command(cfg: Config, host: str, port: int) -> list[str]:
    """The `mlflow server` command line serving the embedded store (UI and artifacts)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri(cfg.tracking),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    artifacts = (Path(cfg.tracking.dir).resolve() / "artifacts").as_uri()
    return [*cmd, "--default-artifact-root", artifacts, "--no-serve-artifacts"]


class PortUnavailable(UserError):
    """The UI cannot listen where it was asked to; the message says why."""


def check_port(host: str, port: int) -> None:
    """The server could listen on host:port: a port in range, an address of this machine,
    nothing else listening there. Checked before the server starts, which would otherwise
    fail in its own process while this one reported success."""
    if not 1 <= port <= 65535:
        raise PortUnavailable(f"ui --port {port}: a port is between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise PortUnavailable(f"ui --host {host}: not an address of this machine ({e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as servers do: a port left in TIME_WAIT is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise PortUnavailable(
                f"ui: cannot listen on {host}:{port} ({e.strerror}); another server may be "
                "there: pick one with --port"
            ) from None


def serve(cfg: Config, console: Any, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI until Ctrl-C; returns its exit code."""
    if cfg.tracking.uri and not str(cfg.tracking.uri).startswith("sqlite"):
        console.print(
            f"runs go to the tracking server {mask(str(cfg.tracking.uri))}: open it "
            "in a browser; there is no local store to serve"
        )
        return 0
    check_port(host, port)
    setup(cfg.tracking)  # the store and the experiment exist before the UI opens them
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]warning:[/] serving on {host}: anyone who reaches this machine "
            "can read and change the runs (the MLflow UI has no login)"
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    console.print(
        f"MLflow UI on {mask(tracking_uri(cfg.tracking))}\nopen [bold]{url}[/] (Ctrl-C stops it)"
    )
    proc = subprocess.Popen(ui_command(cfg, host, port))
    # a TERM (a service manager, a test) stops the server too, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0
