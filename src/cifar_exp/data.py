"""CIFAR-10: find the source, load it safely (cifar_files.py), cache it, split it, and feed
it to Keras.

Flow: `load_cifar10(cfg.data)` -> `Splits` of uint8 arrays (train / val / test) ->
`make_dataset(...)` -> a `tf.data.Dataset` that scales to [0, 1] on the fly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# reading the official files safely is cifar_files' job; these names are part of data's API
from cifar_exp.cifar_files import TEST_BATCH as TEST_BATCH
from cifar_exp.cifar_files import TRAIN_BATCHES as TRAIN_BATCHES
from cifar_exp.cifar_files import DataError as DataError
from cifar_exp.cifar_files import read_source, sha256

if TYPE_CHECKING:
    from cifar_exp.config import DataConfig

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = 10
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
# 2: a folder of .npy files, memory-mapped (1: one .npz, read whole every time)
CACHE_VERSION = 2
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Splits:
    """uint8 images (N, 32, 32, 3) and int labels (N,) for each split, plus provenance."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _download_official() -> Path:
    """The official archive through Keras's cache (~/.keras/datasets), downloaded once."""
    from keras.utils import get_file

    try:
        path = get_file(
            fname="cifar-10-python.tar.gz", origin=OFFICIAL_URL, file_hash=OFFICIAL_SHA256
        )
    except Exception as e:  # no network, proxy, checksum mismatch: all one actionable line
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"could not download CIFAR-10 from {OFFICIAL_URL} ({reason}); set CIFAR10_PATH "
            "or data.path to a local cifar-10-python.tar.gz"
        ) from None
    return Path(path)


def _cache_path(source: Path, cache_dir: Path) -> Path:
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}"
    return cache_dir / f"cifar10-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _read_cache(cached: Path) -> tuple[dict[str, np.ndarray], str]:
    """The cached arrays, memory-mapped (only the pages a split touches are read); raises if
    the folder is not a whole cache of images and labels."""
    arrays = {k: np.load(cached / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
    for x, y in ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])):
        if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
            raise ValueError(f"arrays of shape {x.shape} ({x.dtype}) and {y.shape}")
    return arrays, (cached / "sha256").read_text().strip()


def _write_cache(cached: Path, arrays: dict[str, np.ndarray], sha: str) -> None:
    """The arrays as .npy files in a folder made whole, then renamed into place: a reader sees
    a complete cache or none, and of two processes writing at once one copy wins."""
    _tidy(cached.parent)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # made as any new folder is (os.mkdir applies the umask; tempfile.mkdtemp's would be 0700)
    tmp = cached.parent / f"{cached.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        for k in _ARRAYS:
            np.save(tmp / f"{k}.npy", arrays[k])
        (tmp / "sha256").write_text(sha)
        try:
            tmp.rename(cached)
        except OSError as e:  # a folder is there: another process's rename won, if it reads
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            try:
                _read_cache(cached)
            except Exception as bad:
                raise OSError(f"{cached} is in the way and not a readable cache ({bad})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tidy(cache_dir: Path) -> None:
    """Removes what earlier writes left: caches of the old format (one .npz each) and
    temporary folders over an hour old (a process killed while writing one)."""
    key = "cifar10-" + "[0-9a-f]" * 16  # only names this module gives its caches
    stale = [*cache_dir.glob(f"{key}.npz")]
    for tmp in cache_dir.glob(f"{key}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > 3600:
                stale.append(tmp)
    for path in stale:
        log.info("removing %s, left by an earlier cache", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def load_arrays(source: Path, cache_dir: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """Decoded arrays of a source, from the uint8 cache when it is fresh (memory-mapped,
    read-only: `split` copies what it keeps); also the sha256."""
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "cifar_exp").expanduser()
    cached = _cache_path(source, cache_dir)
    if cached.is_dir():
        try:
            return _read_cache(cached)
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cached, e)
            shutil.rmtree(cached, ignore_errors=True)
    x_train, y_train, x_test, y_test = read_source(source)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    sha = sha256(source)
    try:
        _write_cache(cached, arrays, sha)
    except OSError as e:
        log.warning("could not cache decoded arrays in %s (%s)", cache_dir, e)
    return arrays, sha


# --------------------------------------------------------------------------- splits


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices drawn so each class keeps its share of `labels`; sorted."""
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota))[: n - quota.sum()]:
        quota[i] += 1
    picks = [
        rng.choice(np.flatnonzero(labels == c), q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picks))


def split(arrays: dict[str, np.ndarray], cfg: DataConfig) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) as the data config asks."""
    rng = np.random.default_rng(cfg.split_seed)
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    if cfg.limit_test is not None:
        keep = stratified_indices(y_test, cfg.limit_test, rng)
        x_test, y_test = x_test[keep], y_test[keep]
    if cfg.validation == "test":  # a str enum or a plain string
        x_val, y_val = x_test, y_test
    else:
        if cfg.val_size >= len(y_train):
            raise DataError(
                f"data.val_size={cfg.val_size} leaves no training images "
                f"(the source has {len(y_train)})"
            )
        held = stratified_indices(y_train, cfg.val_size, rng)
        mask = np.ones(len(y_train), bool)
        mask[held] = False
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[mask], y_train[mask]
    if cfg.limit_train is not None:
        keep = stratified_indices(y_train, cfg.limit_train, rng)
        x_train, y_train = x_train[keep], y_train[keep]
    parts = (x_train, y_train, x_val, y_val, x_test, y_test)
    # what is still the memory-mapped cache is read into memory, once per array (validating on
    # the test set keeps x_val the same array as x_test): the cache itself stays read-only
    owned = {id(a): np.array(a) for a in parts if isinstance(a, np.memmap)}
    return tuple(owned.get(id(a), a) for a in parts)


def load_cifar10(cfg: DataConfig) -> Splits:
    """The splits described by a `data` config: local copy if `path` is set, else official."""
    source = Path(cfg.path).expanduser() if cfg.path else _download_official()
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    arrays, sha = load_arrays(source, Path(cfg.cache_dir) if cfg.cache_dir else None)
    parts = split(arrays, cfg)
    # the record of what was trained on, read back by report, reproduce and evaluate
    info = {
        "source": str(source.resolve()),
        "url": None if cfg.path else OFFICIAL_URL,
        "sha256": sha,
        "validation": str(getattr(cfg.validation, "value", cfg.validation)),
        "split_seed": cfg.split_seed,
        "val_size": cfg.val_size,
        "limit_train": cfg.limit_train,
        "limit_test": cfg.limit_test,
        "n_train": len(parts[1]),
        "n_val": len(parts[3]),
        "n_test": len(parts[5]),
    }
    log.info(
        "data: %s train, %s val, %s test from %s",
        info["n_train"],
        info["n_val"],
        info["n_test"],
        source,
    )
    return Splits(*parts, info=info)


# --------------------------------------------------------------------------- tf.data


def augment_batch(xb: Any, seed: Any, pad: int = 4, flip_all: Any = None) -> Any:
    """Random crop of the reflect-padded images and horizontal flips, for a whole uint8 batch
    at once (per-image offsets through two batched gathers, no per-image map). Each image is
    flipped at random, or, given `flip_all` (a boolean scalar), all images or none."""
    import tensorflow as tf

    n, h, w = tf.shape(xb)[0], xb.shape[1], xb.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    padded = tf.pad(xb, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    dy = tf.random.stateless_uniform([n, 1], seeds[0], 0, 2 * pad + 1, tf.int32)
    dx = tf.random.stateless_uniform([n, 1], seeds[1], 0, 2 * pad + 1, tf.int32)
    rows = dy + tf.range(h)[None, :]
    cols = dx + tf.range(w)[None, :]
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    if flip_all is not None:
        flip = tf.fill([n], tf.cast(flip_all, tf.bool))
    else:
        flip = tf.random.stateless_uniform([n], seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


def alternating_flips(x: np.ndarray, seed: int) -> tuple[np.ndarray, Any]:
    """airbench's flip scheme: a random half of the images flipped once (a copy of `x`), then
    every image flipped together in every other epoch, so each image is seen both ways in any
    two consecutive epochs. Returns the images and the epoch counter the pipeline reads (set it
    at each epoch's start: `callbacks.EpochCounter`)."""
    import tensorflow as tf

    flipped = np.random.default_rng(seed).random(len(x)) < 0.5
    x = x.copy()
    x[flipped] = x[flipped, :, ::-1]
    return x, tf.Variable(0, trainable=False, dtype=tf.int64, name="epoch")


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    shuffle_buffer: int | None = None,
    augment: bool = False,
    translate: int = 4,
    one_hot: bool = False,
    epoch: Any = None,
    threads: int | None = None,
) -> Any:
    """A batched tf.data pipeline from uint8 arrays, scaled to float32 [0, 1] per batch;
    optionally augmented (`augment_batch` with crops shifted up to `translate` pixels,
    different every epoch, repeatable per seed) and with one-hot labels (for label
    smoothing). Given `epoch` (a variable holding the epoch number, see `alternating_flips`)
    the flips are not random: all images are flipped in odd epochs.

    `threads`: the pipeline's own pool of that many threads, each op on one thread, instead
    of TensorFlow's shared pool (None, its default), where the pipeline's ops run beside the
    training step's (`trainer.input_threads`; docs/benchmarks.md: what it changes)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(shuffle_buffer or len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def prepare(xb: Any, yb: Any, batch_seed: Any = None) -> tuple[Any, Any]:
        if batch_seed is not None:
            flip_all = None if epoch is None else tf.math.floormod(epoch, 2) == 1
            xb = augment_batch(xb, batch_seed, pad=translate, flip_all=flip_all)
        yb = tf.one_hot(yb, NUM_CLASSES) if one_hot else yb
        return tf.cast(xb, tf.float32) / 255.0, yb

    if augment:
        # a fresh seed pair per batch from a seeded generator: new crops every epoch, the same
        # sequence for the same seed
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: prepare(*batch, batch_seed=s),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # No autotuning model: its thread sleeps between tuning rounds (the gaps double up to a
    # minute), and the end of `fit` waited for it to wake, up to 5 s of every 20-s training
    # (docs/benchmarks.md). The buffers still grow as needed (prefetch's own tuner) and the
    # map runs on the pool's threads; this pipeline takes ~0.1 s per 20,000 images anyway.
    options.autotune.enabled = False
    if threads:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
