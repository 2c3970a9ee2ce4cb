"""Classifying a person's own images: load any image Pillow reads, resize it to 32x32 the way
the reference study did, and return the top classes with their probabilities.

Resizing: the whole image is squeezed to 32x32 (aspect ratio not kept, no crop) with bicubic
interpolation, as the reference's `Image.resize((32, 32))`; then scaled to [0, 1] as in
training. The GUI uses the same `Classifier`, which also carries the model's card (its
reference and test accuracy, `model_card.py`) shown with every prediction.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar_exp.config import Config
from cifar_exp.data import CLASS_NAMES

if TYPE_CHECKING:  # imported where used: the window opens before MLflow and Keras load
    from cifar_exp.model_card import ModelCard

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
# Pillow's own limit (about 89 million pixels) turned from a warning into an error: a larger
# "image" is treated as a decompression bomb.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
MAX_BYTES = 200 * 1024 * 1024


class ImageError(ValueError):
    """An input that is not a usable image; the message names the file."""


@dataclass
class Prediction:
    image: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "error": self.error,
            "predictions": [{"class": c, "probability": p} for c, p in self.top],
        }


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the images directly inside them, sorted (a folder
    with none stays, so that it is reported)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        inside = (
            sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if (path.is_dir())
            else []
        )
        out += inside or [path]
    return out


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: first frame of an animation, palette and grayscale expanded, 16-bit
    grayscale scaled to 8 bits, and transparency composited over white (what a person sees in
    a viewer)."""
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":  # Pillow's convert clips: white
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode != "I" or pixels.max() > 255:  # "I" holds 8- or 16-bit values
            pixels = pixels / 257
        image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: Path) -> Image.Image:
    """The image at `path` as RGB, fully decoded; raises ImageError naming the file."""
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder with no images")
    if not path.is_file():  # a device or a FIFO: it would stream or block
        raise ImageError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: empty file")
    if size > MAX_BYTES:
        raise ImageError(f"{path}: file of {size / 2**20:.0f} MiB is too large for an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: {image.width}x{image.height} pixels looks like "
                        "a decompression bomb; refused"
                    )
                image.load()
                return to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: too many pixels (decompression bomb); refused") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: truncated or corrupt image ({e})") from None


def to_input(image: Image.Image) -> np.ndarray:
    """(32, 32, 3) float32 in [0, 1], resized as the reference did."""
    small = image.resize((32, 32), Image.Resampling.BICUBIC)
    return np.asarray(small, dtype=np.float32) / 255.0


class Classifier:
    """A loaded model that classifies images, and its card; the CLI's `predict` and the GUI
    share it. A model given without a card has an unknown test accuracy."""

    def __init__(self, model: Any, source: str, card: ModelCard | None = None) -> None:
        if card is None:
            from cifar_exp.model_card import ModelCard

            card = ModelCard(source, unknown=f"test accuracy unknown: no record of {source}")
        self.model, self.source, self.card = model, source, card

    @classmethod
    def load(cls, reference: str | None, cfg: Config) -> Classifier:
        from cifar_exp.model_card import describe

        model, card = describe(reference, cfg)
        return cls(model, card.reference, card)

    def classify(self, images: list[Image.Image], top: int = 3) -> list[list[tuple[str, float]]]:
        """Top-`top` (class, probability) lists, one per image."""
        if not images:
            return []
        batch = np.stack([to_input(im) for im in images])
        from cifar_exp.models import PREDICT_BATCH, predict

        probs = predict(self.model, batch, PREDICT_BATCH)
        order = np.argsort(-probs, axis=1)[:, :top]
        return [
            [(CLASS_NAMES[j], float(p[j])) for j in row]
            for p, row in zip(probs, order, strict=True)
        ]

    def predict_paths(self, paths: list[str], top: int = 3) -> list[Prediction]:
        """A Prediction per image; unreadable files carry their error and the rest go on."""
        results: list[Prediction] = []
        good: list[tuple[int, Image.Image]] = []
        for path in expand(paths):
            try:
                good.append((len(results), open_image(path)))
                results.append(Prediction(str(path), []))
            except ImageError as e:
                results.append(Prediction(str(path), [], str(e)))
        for (i, _), top_k in zip(good, self.classify([im for _, im in good], top), strict=True):
            results[i].top = top_k
        return results
