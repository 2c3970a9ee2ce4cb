"""Shared fixtures: tiny synthetic CIFAR-10 files in the official format, and a composed
config whose every output (MLflow store, Optuna storage, caches) lives under tmp_path."""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without MLFLOW_TRACKING_URI (`tracking.uri` defaults from it)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _signal_state_restored():
    """A test that runs `main()` in this process installs its signal handlers and its
    unraisable hook (`interrupts.terminate_as_interrupt`): each test leaves them as it
    found them, with no interrupt pending."""
    import signal
    import sys

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])
    sys.unraisablehook = hook
    from cifar_exp import interrupts

    interrupts.forget()


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


ARTIFACTS = Path(os.environ.get("CIFAR_EXP_TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def xdisplay():
    """An X display: Xvfb started for the session (skips where none can be started)."""
    import shutil
    import subprocess

    pytest.importorskip("tkinter", reason="this Python was built without Tk")
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no display: Xvfb is not installed (apt-get install xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("no display: Xvfb did not start")
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    import keras

    from cifar_exp.config import compose
    from cifar_exp.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_model(compose([]).model).save(path)
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Images of many kinds and sizes, and broken files."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(d / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (100, 50), dtype=np.uint8)).save(d / "gray.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255  # red where opaque
    rgba[:32, :, 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(rgba).save(d / "rgba.png")
    frame = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("P")
    frame.save(d / "anim.gif", save_all=True, append_images=[frame.rotate(90)])
    Image.fromarray(rng.integers(0, 255, (20, 3000, 3), dtype=np.uint8)).save(d / "wide.webp")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / "small.bmp")
    bad = d / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    raw = (d / "photo.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(raw[: len(raw) // 3])

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)  # 1.6 gigapixels
    (bad / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 5001))
        + chunk(b"IEND", b"")
    )
    return d


@pytest.fixture(scope="session")
def study_cfg(cifar_tarball, tmp_path_factory):
    """The tiny study, run once for the whole session: (cfg, root folder, sweep summary)."""
    from cifar_exp.config import compose
    from cifar_exp.study.sweep import sweep

    root = tmp_path_factory.mktemp("study")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the study's own store, whatever ran before
    cfg = compose(
        [
            "experiment=tiny",
            f"data.path={cifar_tarball}",
            f"data.cache_dir={root / 'cache'}",
            f"tracking.dir={root / 'mlruns'}",
        ]
    )
    out = sweep(cfg)
    assert out.finished == 4
    return cfg, root, out
