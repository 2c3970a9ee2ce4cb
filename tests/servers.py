"""Real servers for the scale-out tests: a private PostgreSQL cluster on 127.0.0.1 and an
MLflow tracking server backed by it. Each is started and stopped by the tests themselves."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throwaway cluster in `root`, trust auth, listening on 127.0.0.1 only."""

    def __init__(self, root: Path) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # the server refuses to run as root, and pytest's temporary folders are private to
            # root: the cluster lives in a folder of its own that the postgres user owns
            self.as_user = ["runuser", "-u", "postgres", "--"]
            root = Path(tempfile.mkdtemp(prefix="cifar-exp-pg-"))
            root.chmod(0o755)
            shutil.chown(root, "postgres")
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.data = root, root / "pgdata"
        # Optuna and MLflow both keep an `alembic_version` table: each needs its own database
        base = f"postgresql+psycopg2://cifar@127.0.0.1:{self.port}"
        self.url, self.mlflow_url = f"{base}/optuna", f"{base}/mlflow"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        if not self.data.exists():
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "cifar",
                "--auth=trust",
                "--no-sync",
            )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.root / "pg.log"),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200",
            "start",
        )
        for name in ("optuna", "mlflow"):
            try:
                self._run(
                    str(self.bin / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "cifar",
                    name,
                )
            except subprocess.CalledProcessError as e:
                if b"already exists" not in e.stderr:
                    raise
        return self

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "-l",
            str(self.root / "pg.log"),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200",
            "restart",
        )


class MlflowServer:
    """`mlflow server` on the PostgreSQL cluster, serving artifacts from `root`."""

    def __init__(self, db: Postgres, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "mlflow-server.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                db.mlflow_url,
                "--artifacts-destination",
                (root / "artifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "2",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 180) -> MlflowServer:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited; see mlflow-server.log")
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
