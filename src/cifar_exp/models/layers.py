"""Keras layers of the tool's own models, and its learning-rate schedule, registered so that
saved models load in safe mode once this module is imported (`registry.load_model` does)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="cifar_exp")
class ScaledBias(keras.layers.Layer):
    """Adds a learned per-channel bias stored divided by `scale`.

    Under SGD a parameter used as `scale * b` learns `scale**2` times faster than a plain bias,
    which is how the fast CIFAR-10 trainers give batch-norm biases a larger learning rate than
    the weights without a second optimizer.
    """

    def __init__(self, scale: float = 1.0, regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.regularizer = keras.regularizers.get(regularizer)

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(
            shape=(input_shape[-1],),
            initializer="zeros",
            regularizer=self.regularizer,
            name="bias",
        )

    def call(self, x: Any) -> Any:
        return x + keras.ops.cast(self.bias * self.scale, x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "scale": self.scale,
            "regularizer": keras.regularizers.serialize(self.regularizer),
        }


@keras.saving.register_keras_serializable(package="cifar_exp")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras's batch normalisation computed by TensorFlow's fused kernel (`FusedBatchNormV3`:
    oneDNN's on the CPU, cuDNN's on a GPU) where that kernel applies: 4-D inputs normalised
    over their last axis in float32, bfloat16 or float16, no mask, renorm or synchronisation;
    anything else is Keras's own.

    Keras 3 dropped the `fused` option: it casts the activations to float32 and computes the
    moments, the normalisation and their gradients as separate ops, each a pass over the
    tensor. The kernel does each direction in one pass, reading bfloat16 and accumulating in
    float32. Same weights, config and moving averages as Keras's layer (the kernel's batch
    variance is Bessel-corrected; Keras averages the uncorrected one, converted back here), the
    same arithmetic in another order, so results agree to rounding (tests/test_models.py);
    a training step 1.09x faster for airbench, 1.18x for resnet_small here (docs/benchmarks.md).
    """

    def _fused(self, inputs: Any, mask: Any) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and rank == 4
            and self.compute_dtype in ("float32", "bfloat16", "float16")
            and self.axis in (-1, rank - 1)
            and mask is None
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, self.compute_dtype)
        channels = x.shape[-1]
        # the weights are float32 whatever the policy (Keras makes them without autocast)
        scale = self.gamma if self.scale else tf.ones((channels,), "float32")
        offset = self.beta if self.center else tf.zeros((channels,), "float32")
        training = bool(training and self.trainable)
        # in training the kernel computes the batch's moments; otherwise it takes the averages
        empty = tf.zeros((0,), "float32")
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=scale,
            offset=offset,
            mean=empty if training else self.moving_mean,
            variance=empty if training else self.moving_variance,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=training,
        )
        if training:
            n = tf.reduce_prod(tf.cast(tf.shape(x)[:-1], "float32"))  # values per channel
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return y


@keras.saving.register_keras_serializable(package="cifar_exp")
class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from `start` up to `peak` at step `peak_step`, then linear down to `end` at
    `total_steps` (and `end` after it): airbench's schedule."""

    def __init__(
        self, start: float, peak: float, end: float, peak_step: int, total_steps: int
    ) -> None:
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self.peak_step, self.total_steps = int(peak_step), int(total_steps)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        rise = self.start + (self.peak - self.start) * step / max(self.peak_step, 1)
        down_steps = max(self.total_steps - self.peak_step, 1)
        fall = self.peak + (self.end - self.peak) * (step - self.peak_step) / down_steps
        lr = ops.where(step < self.peak_step, rise, fall)
        return ops.maximum(lr, min(self.end, self.peak))

    def get_config(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "peak": self.peak,
            "end": self.end,
            "peak_step": self.peak_step,
            "total_steps": self.total_steps,
        }
