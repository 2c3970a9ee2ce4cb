"""Where a result came from: git commit, package versions, hardware, the command line."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "cifar-exp",
    "tensorflow",
    "keras",
    "optuna",
    "mlflow",
    "hydra-core",
    "numpy",
    "pandas",
    "matplotlib",
    "pillow",
)


def _git(*args: str) -> str | None:
    """A read-only git command in the checkout. `--no-optional-locks`: `git status` would
    otherwise refresh the index under `.git/index.lock`, and a user's own git command running
    at that moment would fail on the lock."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@cache
def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the checkout the package runs from (None outside git)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if commit else None}


@cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """CPU model and core count, and the GPUs TensorFlow sees (imports TensorFlow)."""
    import os

    import tensorflow as tf

    gpus = [
        tf.config.experimental.get_device_details(g).get("device_name", g.name)
        for g in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "platform": platform.platform(),
    }


def command_line() -> str:
    """The command that started this process, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0:1] = ["python", "-m", "cifar_exp"]
    return shlex.join(argv)


def tags() -> dict[str, str]:
    """Flat string tags for MLflow: commit, dirty flag, versions, hardware, command."""
    g, hw = git_info(), hardware()
    out = {
        "git_commit": str(g["commit"]),
        "git_dirty": str(g["dirty"]).lower(),
        "hardware.cpu": hw["cpu"],
        "hardware.cpu_count": str(hw["cpu_count"]),
        "hardware.gpus": ", ".join(hw["gpus"]) or "none",
        "command": command_line(),
    }
    out.update({f"version.{k}": v for k, v in versions().items()})
    return out
