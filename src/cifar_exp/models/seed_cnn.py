"""The reference study's CNN (4,210,090 parameters with the default config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cifar_exp.models.registry import register


@dataclass
class SeedCNNConfig:
    name: str = "seed_cnn"
    filters: int = 32
    dense_units: int = 512
    conv_dropout: float = 0.2
    dense_dropout: float = 0.5
    max_norm: float | None = 3.0


@register("seed_cnn", SeedCNNConfig)
def build(
    cfg: SeedCNNConfig, input_shape: tuple[int, int, int], num_classes: int, images: Any = None
) -> Any:
    """conv3x3 -> dropout -> conv3x3 -> maxpool -> flatten -> dense -> dropout -> softmax."""
    import keras
    from keras import layers

    def constraint() -> Any:
        return keras.constraints.MaxNorm(cfg.max_norm) if cfg.max_norm else None

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(
                cfg.filters, 3, padding="same", activation="relu", kernel_constraint=constraint()
            ),
            layers.Dropout(cfg.conv_dropout),
            layers.Conv2D(
                cfg.filters, 3, padding="same", activation="relu", kernel_constraint=constraint()
            ),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(cfg.dense_units, activation="relu", kernel_constraint=constraint()),
            layers.Dropout(cfg.dense_dropout),
            layers.Dense(num_classes),
            # softmax in float32 so mixed precision keeps probabilities and loss stable
            layers.Activation("softmax", dtype="float32"),
        ],
        name="seed_cnn",
    )
