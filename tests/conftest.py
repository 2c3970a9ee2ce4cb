"""Shared fixtures: tiny synthetic CIFAR-10 files in the official format, and a composed
config whose every output (MLflow store, Optuna storage, caches) lives under tmp_path."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = Path(
    os.environ.get("CIFAR10_SHARED", REPO.parent / "shared" / "data" / "cifar-10-python.tar.gz")
)


def synthetic_batch(n: int, rng: np.random.Generator) -> dict:
    """A batch dict as in the official pickles; each class has its own colour, so it is
    learnable in one epoch, plus noise."""
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    palette = np.random.default_rng(2024).integers(30, 226, size=(10, 3))  # same in every batch
    images = np.empty((n, 32, 32, 3), np.int16)
    images[:] = palette[labels][:, None, None, :]
    images += rng.integers(-30, 31, size=images.shape)
    data = np.clip(images, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2).reshape(n, 3072)
    return {
        b"batch_label": b"synthetic",
        b"labels": labels.tolist(),
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path, per_batch: int = 160, n_test: int = 200, seed: int = 0) -> Path:
    """Writes root/cifar-10-batches-py/ and root/cifar-10-python.tar.gz; returns the tarball."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": synthetic_batch(per_batch, rng) for i in range(1, 6)}
    batches["test_batch"] = synthetic_batch(n_test, rng)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"label_names": [
            b"airplane",
            b"automobile",
            b"bird",
            b"cat",
            b"deer",
            b"dog",
            b"frog",
            b"horse",
            b"ship",
            b"truck",
        ]
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    tarball = root / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return tarball


@pytest.fixture(scope="session")
def cifar_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tmp_path so relative outputs (mlruns/) land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture()
def overrides(cifar_tarball: Path, workdir: Path) -> list[str]:
    """Overrides for the tiny study on synthetic data with every output under tmp_path."""
    return [
        "experiment=tiny",
        f"data.path={cifar_tarball}",
        f"data.cache_dir={workdir / 'cache'}",
        f"tracking.dir={workdir / 'mlruns'}",
    ]


@pytest.fixture()
def cfg(overrides: list[str]):
    from cifar_exp.config import compose

    return compose(overrides)
