"""CIFAR-10's official files read safely: the six batch pickles from the tarball or an
extracted folder, with sizes checked from headers and reads capped (memory stays bounded
whatever a file declares or expands to), and a restricted unpickler that allows only what a
batch contains (a crafted pickle that tries to call anything else is refused)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cifar_exp.errors import UserError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FOLDER = "cifar-10-batches-py"
# A CIFAR-10 batch pickle is about 30 MiB (10,000 images of 3,072 bytes, labels, file names):
# a member or file declaring more is not one, and is refused before a byte of it is read.
MAX_BATCH_BYTES = 40 * 2**20
MAX_ARCHIVE_MEMBERS = 1000  # the official archive has 8


class DataError(UserError, ValueError):
    """A data source that cannot be read; the message names the file."""


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
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "could not be opened successfully" in reason:  # tarfile lists each method it tried
            reason = "not a tar archive, plain or compressed with gzip, bzip2 or xz"
        raise DataError(f"{source}: truncated or corrupt archive ({reason})") from None
    missing = [n for n in wanted if n not in found]
    if missing:
        raise DataError(f"{source}: archive lacks CIFAR-10 batch files {missing}")
    return found


def sha256(path: Path) -> str:
    """The source's checksum (of the six batch files, for a folder)."""
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
