"""The fastest-training CIFAR-10 network we know, in Keras: the architecture and initialisation
of Keller Jordan's airbench94 (2024), which reaches 94% in under 10 epochs on the official data.

A frozen 2x2 "whitening" convolution whose filters are the scaled principal components of the
training images' 2x2 patches (and their negatives), then three conv groups (conv3x3 - max-pool
- batch norm - GELU - conv3x3 - batch norm - GELU) of 64, 256 and 256 channels at `width: 64`,
a 3x3 max-pool to one pixel, and a bias-free linear classifier with scaled-down logits.
Batch norm (TensorFlow's fused kernel, `layers.FusedBatchNormalization`) has no learned
scale; its biases learn `bias_scale**2` times faster than the weights. The whitening bias
trains for `whiten_bias_epochs` epochs and is then held (`train` does it,
`callbacks.FreezeAfter`); the L2 penalty covers every trained weight. Every 3x3
convolution starts as the identity on its first input channels (airbench's "dirac"
initialisation, an implicit residual), the rest uniform in +-1/sqrt(fan_in).

The whitening filters need training images (`build(..., images=...)`, which `train` passes);
built without them (speed benchmarks, tests) the filters are random. 1.97 M parameters and
about 0.24 GFLOP per image at `width: 64`. Train it with `experiment=airbench`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cifar_exp.models.registry import register

# per-channel mean and standard deviation of the CIFAR-10 training images, on [0, 1]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class AirbenchConfig:
    name: str = "airbench"
    # channels of the first conv group; the second and third have 4x this
    width: int = 64
    # batch-norm momentum (Keras convention: weight of the running average)
    bn_momentum: float = 0.6
    # batch-norm biases are `bias_scale * b`, so they learn bias_scale**2 times faster
    bias_scale: float = 8.0
    # the logits are multiplied by this before the softmax
    logit_scale: float = 0.111111
    # L2 penalty on every trained weight, kernels and biases (coupled weight decay, through
    # momentum, as in airbench)
    l2: float = 6.65e-4
    # train the whitening conv's bias for this many epochs, then hold it (airbench: 3); null
    # trains it throughout
    whiten_bias_epochs: int | None = 3
    # training images used to estimate the whitening filters
    whiten_images: int = 5000
    # predict the mean over the image and its mirror (flip test-time augmentation)
    tta: bool = False
    # after training, also average over the image shifted by this many pixels up-left and
    # down-right (with `tta`: airbench's 6 views); per-epoch validation stays as above; 0 = off
    tta_shift: int = 0


def whitening_filters(images: np.ndarray, eps: float = 5e-4, size: int = 2) -> np.ndarray:
    """Conv kernel (size, size, 3, 2 * 3 * size**2): the principal components of the images'
    size x size patches (normalised as the model normalises), each scaled by 1/sqrt(variance),
    and their negatives."""
    x = (images.astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD
    dim = size * size * x.shape[-1]
    cov = np.zeros((dim, dim), np.float64)
    n = 0
    for chunk in np.array_split(x, max(1, len(x) // 500)):
        # (N, H', W', C, kh, kw) -> (N, H', W', kh, kw, C): the kernel's own layout
        p = np.lib.stride_tricks.sliding_window_view(chunk, (size, size), axis=(1, 2))
        p = p.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim).astype(np.float64)
        cov += p.T @ p
        n += len(p)
    eigenvalues, eigenvectors = np.linalg.eigh(cov / n)
    scaled = eigenvectors / np.sqrt(eigenvalues + eps)  # columns are the components
    kernel = np.concatenate([scaled, -scaled], axis=1)
    return kernel.reshape(size, size, x.shape[-1], 2 * dim).astype(np.float32)


def _dirac(kernel: np.ndarray) -> np.ndarray:
    """The kernel with its first min(in, out) output channels set to the identity."""
    k = kernel.copy()
    n = min(k.shape[2], k.shape[3])
    centre = k.shape[0] // 2
    k[:, :, :, :n] = 0.0
    k[centre, centre, np.arange(n), np.arange(n)] = 1.0
    return k


@register("airbench", AirbenchConfig)
def build(
    cfg: AirbenchConfig, input_shape: tuple[int, int, int], num_classes: int, images: Any = None
) -> Any:
    import keras
    from keras import layers

    from cifar_exp.models.layers import FusedBatchNormalization, ScaledBias

    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    # PyTorch's default conv/linear init (uniform in +-1/sqrt(fan_in)), as airbench was tuned
    init = keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")
    convs: list[Any] = []

    def conv(x: Any, filters: int) -> Any:
        layer = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=init,
            kernel_regularizer=reg,
        )
        convs.append(layer)
        return layer(x)

    def norm_act(x: Any) -> Any:
        x = FusedBatchNormalization(
            momentum=cfg.bn_momentum, epsilon=1e-5, center=False, scale=False
        )(x)
        return layers.Activation("gelu")(ScaledBias(cfg.bias_scale, regularizer=reg)(x))

    def group(x: Any, filters: int) -> Any:
        x = norm_act(layers.MaxPooling2D(2)(conv(x, filters)))
        return norm_act(conv(x, filters))

    inputs = keras.Input(shape=input_shape)
    x = layers.Normalization(mean=CIFAR_MEAN, variance=np.square(CIFAR_STD).tolist())(inputs)
    # as many filters as `whitening_filters` makes: every patch component and its negative
    whiten = layers.Conv2D(
        2 * 2 * 2 * input_shape[-1], 2, padding="valid", use_bias=False, name="whiten"
    )
    whiten.trainable = False
    bias = ScaledBias(1.0, regularizer=reg, name="whiten_bias")
    x = layers.Activation("gelu")(bias(whiten(x)))
    w = cfg.width
    for filters in (w, 4 * w, 4 * w):
        x = group(x, filters)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_initializer=init, kernel_regularizer=reg)(
        x
    )
    x = layers.Rescaling(cfg.logit_scale)(x)
    outputs = layers.Activation("softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="airbench")

    for layer in convs:
        layer.kernel.assign(_dirac(keras.ops.convert_to_numpy(layer.kernel)))
    if images is not None and len(images):
        whiten.kernel.assign(whitening_filters(np.asarray(images[: cfg.whiten_images])))
    return model
