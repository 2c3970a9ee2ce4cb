"""Test-time augmentation as part of the model: `FlipAverage(model)` trains like `model` and
predicts the mean of `model` on the image and on its mirror image (horizontal flip);
`ShiftAverage(model, pixels)` adds airbench's translations: half the weight on `model`'s
prediction, a quarter each on the image shifted by `pixels` up-left and down-right (reflect
padding). Around a `FlipAverage` that is airbench's 6-view test-time augmentation (its
`tta_level=2`; it averages logits, these average probabilities).

Being a layer of the saved model, it applies wherever the model is used: per-epoch
validation, the test evaluation, `predict`, the window. Registered with Keras, so a saved model
loads in safe mode once `cifar_exp.models` is imported.
"""

from __future__ import annotations

from typing import Any

import keras


class _Averaging(keras.layers.Layer):
    """A layer around a model `inner`: trains as `inner`; subclasses say how inference
    averages it over views of the input (`views`)."""

    def __init__(self, inner: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner

    def build(self, input_shape: Any) -> None:
        if not self.inner.built:
            self.inner.build(input_shape)
        self.built = True

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training:
            return self.inner(x, training=True)
        return self.views(x)

    def views(self, x: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.inner.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        inner = keras.saving.deserialize_keras_object(config.pop("inner"))
        return cls(inner, **config)


@keras.saving.register_keras_serializable(package="cifar_exp")
class FlipAverage(_Averaging):
    def views(self, x: Any) -> Any:
        mirrored = keras.ops.flip(x, axis=2)  # (batch, height, width, channels)
        return (self.inner(x, training=False) + self.inner(mirrored, training=False)) / 2


@keras.saving.register_keras_serializable(package="cifar_exp")
class ShiftAverage(_Averaging):
    def __init__(self, inner: Any, pixels: int = 1, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self.pixels = int(pixels)

    def views(self, x: Any) -> Any:
        p, h, w = self.pixels, x.shape[1], x.shape[2]
        padded = keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")
        views = (padded[:, :h, :w], padded[:, 2 * p : 2 * p + h, 2 * p : 2 * p + w])
        shifted = [self.inner(v, training=False) for v in views]
        return 0.5 * self.inner(x, training=False) + 0.25 * (shifted[0] + shifted[1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pixels": self.pixels}


def with_shift_tta(model: Any, pixels: int, input_shape: tuple[int, int, int]) -> Any:
    """`model` wrapped so that inference also averages over two shifted copies (see
    `ShiftAverage`)."""
    inputs = keras.Input(shape=input_shape)
    outputs = ShiftAverage(model, pixels, name="shift_tta", dtype="float32")(inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_shift")


def with_flip_tta(model: Any, input_shape: tuple[int, int, int]) -> Any:
    """`model` wrapped so that inference averages the image and its mirror."""
    inputs = keras.Input(shape=input_shape)
    # float32 out, as the wrapped model's softmax
    outputs = FlipAverage(model, name="flip_tta", dtype="float32")(inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_tta")
