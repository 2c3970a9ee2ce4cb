"""A small residual CNN for fast CIFAR-10 training (ResNet-9 style, as in Page's DAWNBench
entry and its descendants): conv-BN-ReLU stem, three stages that each widen and halve the
resolution with a max-pool, residual blocks after the first and last stage, a global max-pool
and a linear classifier whose logits are scaled down.

With `width: 32` (the default) it has 1.65 M parameters and about 0.19 GFLOP per image; train
it with augmentation, label smoothing and the one-cycle schedule (`experiment=resnet_fast`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cifar_exp.models.registry import register


@dataclass
class ResNetSmallConfig:
    name: str = "resnet_small"
    # channels of the stem; the stages have 2x, 4x and 8x this
    width: int = 32
    # residual blocks (two 3x3 convs each) after stage 1 and after stage 3
    res_blocks: int = 1
    # batch-norm momentum (Keras convention: weight of the running average)
    bn_momentum: float = 0.9
    # logits are multiplied by this before the softmax (keeps early training stable)
    logit_scale: float = 0.125
    # L2 penalty on conv and dense kernels; 0 disables it
    l2: float = 0.0
    # predict the mean over the image and its mirror (flip test-time augmentation)
    tta: bool = False


@register("resnet_small", ResNetSmallConfig)
def build(
    cfg: ResNetSmallConfig, input_shape: tuple[int, int, int], num_classes: int, images: Any = None
) -> Any:
    import keras
    from keras import layers

    from cifar_exp.models.layers import FusedBatchNormalization

    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 else None

    def conv_bn(x: Any, filters: int, pool: bool = False) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        if pool:
            x = layers.MaxPooling2D(2)(x)
        x = FusedBatchNormalization(momentum=cfg.bn_momentum)(x)
        return layers.ReLU()(x)

    def residual(x: Any, filters: int) -> Any:
        for _ in range(cfg.res_blocks):
            x = layers.Add()([x, conv_bn(conv_bn(x, filters), filters)])
        return x

    w = cfg.width
    inputs = keras.Input(shape=input_shape)
    x = conv_bn(inputs, w)
    x = residual(conv_bn(x, 2 * w, pool=True), 2 * w)
    x = conv_bn(x, 4 * w, pool=True)
    x = residual(conv_bn(x, 8 * w, pool=True), 8 * w)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_regularizer=reg)(x)
    x = layers.Rescaling(cfg.logit_scale)(x)
    # softmax in float32 so mixed precision keeps probabilities and loss stable
    outputs = layers.Activation("softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet_small")
