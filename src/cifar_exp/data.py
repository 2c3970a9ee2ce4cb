"""CIFAR-10: find the source, load it safely, cache it, split it, and feed it to Keras.

Flow: `load_cifar10(cfg.data)` -> `Splits` of uint8 arrays (train / val / test) ->
`make_dataset(...)` -> a `tf.data.Dataset` that scales to [0, 1] on the fly.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FOLDER = "cifar-10-batches-py"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CACHE_VERSION = 1
# A CIFAR-10 batch pickle is about 30 MiB (10,000 images of 3,072 bytes, labels, file names):
# a member or file declaring more is not one, and is refused before a byte of it is read.
MAX_BATCH_BYTES = 40 * 2**20
MAX_ARCHIVE_MEMBERS = 1000  # the official archive has 8


class DataError(ValueError):
    """A data source that cannot be read; the message names the file."""


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


# --------------------------------------------------------------------------- safe unpickling


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """Allows exactly the globals a CIFAR batch pickle needs: numpy array reconstruction, and
    `_codecs.encode`, which Python 3 uses for bytes in protocol-2 pickles (a pure function)."""

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise _RefusedGlobal(f"refused global {module}.{name}")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct  # numpy.core is a deprecated alias
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _RefusedGlobal as e:
        raise DataError(
            f"{where}: not a CIFAR-10 batch ({e}; such a pickle could run code, "
            "so it is not loaded)"
        ) from None
    except Exception as e:  # truncated pickles raise EOFError, ValueError, ...
        raise DataError(f"{where}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where}: not a CIFAR-10 batch (no data/labels entries)")
    return batch


def _decode(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{where}: data must be a uint8 array of shape (N, 3072)")
    if data.shape[1] != 3072:
        raise DataError(f"{where}: data has rows of {data.shape[1]} values, expected 3072")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(data):
        raise DataError(f"{where}: {len(y)} labels for {len(data)} images")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{where}: labels must be integers in 0..9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
    return np.ascontiguousarray(x), y.astype(np.int64)


# --------------------------------------------------------------------------- reading a source


def _check_size(size: int, where: str) -> None:
    if size > MAX_BATCH_BYTES:
        raise DataError(
            f"{where}: {size / 2**20:,.0f} MiB is not a CIFAR-10 batch (about 30 MiB); refused"
        )


def _read_capped(fh: Any, where: str) -> bytes:
    """At most MAX_BATCH_BYTES from `fh`: what a header declares is checked before reading,
    and this bounds what is read even where the declaration lies."""
    raw = fh.read(MAX_BATCH_BYTES + 1)
    _check_size(len(raw), where)
    return raw


def _read_members(source: Path) -> dict[str, bytes]:
    """Raw bytes of the six batch files from a tarball or an (extracted) folder; memory stays
    bounded whatever the source declares or expands to."""
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if source.is_dir():
        folder = source / FOLDER if (source / FOLDER).is_dir() else source
        missing = [n for n in wanted if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder}: missing CIFAR-10 batch files {missing}")
        out = {}
        for n in wanted:
            _check_size((folder / n).stat().st_size, str(folder / n))
            with (folder / n).open("rb") as fh:
                out[n] = _read_capped(fh, str(folder / n))
        return out
    try:
        with tarfile.open(source, "r:*") as tar:
            found: dict[str, bytes] = {}
            for count, member in enumerate(tar, start=1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise DataError(
                        f"{source}: more than {MAX_ARCHIVE_MEMBERS} entries; not a CIFAR-10 archive"
                    )
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    where = f"{source}:{member.name}"
                    _check_size(member.size, where)  # sparse members declare their full size
                    fh = tar.extractfile(member)
                    found[base] = _read_capped(fh, where) if fh else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{source}: truncated or corrupt archive ({e})") from None
    missing = [n for n in wanted if n not in found]
    if missing:
        raise DataError(f"{source}: archive lacks CIFAR-10 batch files {missing}")
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() else path
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            h.update((folder / name).read_bytes())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def read_source(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode a CIFAR-10 source into (x_train, y_train, x_test, y_test) uint8/int arrays."""
    members = _read_members(source)
    parts = [
        _decode(_unpickle(members[n], f"{source}:{n}"), f"{source}:{n}") for n in TRAIN_BATCHES
    ]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _decode(
        _unpickle(members[TEST_BATCH], f"{source}:{TEST_BATCH}"), f"{source}:{TEST_BATCH}"
    )
    return x_train, y_train, x_test, y_test


def _cache_path(source: Path, cache_dir: Path) -> Path:
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}"
    return cache_dir / f"cifar10-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def load_arrays(source: Path, cache_dir: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """Decoded arrays of a source, from the uint8 cache when it is fresh; also the sha256."""
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "cifar_exp").expanduser()
    cached = _cache_path(source, cache_dir)
    if cached.is_file():
        try:
            with np.load(cached) as npz:
                arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
                return arrays, str(npz["sha256"])
        except Exception as e:  # a half-written cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cached, e)
    x_train, y_train, x_test, y_test = read_source(source)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    sha = _sha256(source)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, sha256=np.array(sha), **arrays)
        tmp.replace(cached)
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
    return x_train, y_train, x_val, y_val, x_test, y_test


def load_cifar10(cfg: DataConfig) -> Splits:
    """The splits described by a `data` config: local copy if `path` is set, else official."""
    source = Path(cfg.path).expanduser() if cfg.path else _download_official()
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    arrays, sha = load_arrays(source, Path(cfg.cache_dir) if cfg.cache_dir else None)
    parts = split(arrays, cfg)
    info = {
        "source": str(source.resolve()),
        "sha256": sha,
        "validation": str(getattr(cfg.validation, "value", cfg.validation)),
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


def augment_batch(xb: Any, seed: Any, pad: int = 4) -> Any:
    """Random crop of the reflect-padded images and random horizontal flip, for a whole uint8
    batch at once (per-image offsets through two batched gathers, no per-image map)."""
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
    flip = tf.random.stateless_uniform([n], seeds[2]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)


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
) -> Any:
    """A batched tf.data pipeline from uint8 arrays, scaled to float32 [0, 1] per batch;
    optionally augmented (`augment_batch` with crops shifted up to `translate` pixels,
    different every epoch, repeatable per seed) and with one-hot labels (for label
    smoothing)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(shuffle_buffer or len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def prepare(xb: Any, yb: Any, batch_seed: Any = None) -> tuple[Any, Any]:
        if batch_seed is not None:
            xb = augment_batch(xb, batch_seed, pad=translate)
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
    return ds.prefetch(tf.data.AUTOTUNE)
