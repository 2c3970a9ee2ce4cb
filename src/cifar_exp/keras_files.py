"""Model files from outside: a `.keras` archive checked before Keras opens it (declared sizes,
so a small file that expands to gigabytes is refused unread), loaded in safe mode, and
checked to be a CIFAR-10 classifier (32x32x3 in, 10 classes out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifar_exp.errors import UserError


class ModelNotFound(UserError, ValueError):
    """A model reference that names nothing loadable; the message says what was tried."""


class ModelRefused(ModelNotFound):
    """A model that exists but is not used: it does not load in safe mode, expands too far, or
    is not a CIFAR-10 classifier."""


# A .keras file is a zip: its JSON (config, metadata) is kilobytes, its weights megabytes.
# The sizes its directory declares are checked before Keras opens it, so a small file that
# expands to gigabytes is refused rather than read (Python's zipfile reads no more than the
# declared size of a member).
MAX_JSON_BYTES = 16 * 2**20
MAX_MODEL_BYTES = 2 * 2**30


def load_keras_file(path: Path, uri: str) -> Any:
    import keras

    # the tool's own layers, registered for loading in safe mode
    import cifar_exp.models.layers
    import cifar_exp.models.tta  # noqa: F401

    _check_archive(path, uri)
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelRefused(f"{uri}: not a loadable Keras model ({reason})") from None
    _check_signature(model, uri)
    return model


def _check_archive(path: Path, uri: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelRefused(f"{uri}: not a loadable Keras model ({e})") from None
    for entry in entries:
        if entry.filename.endswith(".json") and entry.file_size > MAX_JSON_BYTES:
            raise ModelRefused(
                f"{uri}: its {entry.filename} expands to {entry.file_size / 2**20:,.0f} MiB "
                "(a model's config is kilobytes); refused"
            )
    total = sum(e.file_size for e in entries)
    if total > MAX_MODEL_BYTES:
        raise ModelRefused(f"{uri}: expands to {total / 2**30:,.1f} GiB; refused")


def _check_signature(model: Any, uri: str) -> None:
    """32x32 RGB images in, one probability per CIFAR-10 class out."""
    try:
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError):
        raise ModelRefused(f"{uri}: not a single-input, single-output Keras model") from None
    if inputs[1:] != (32, 32, 3) or outputs[1:] != (10,):
        raise ModelRefused(
            f"{uri}: takes {inputs[1:]} and gives {outputs[1:]}; a CIFAR-10 classifier "
            "takes (32, 32, 3) images and gives 10 class probabilities"
        )
