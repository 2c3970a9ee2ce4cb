"""The optimizer a config names: SGD or Adam with its learning-rate schedule (constant,
Keras 2's legacy decay, one-cycle, or airbench's triangle). Keras only."""

from __future__ import annotations

from typing import Any

import keras

from cifar_exp.config import AdamConfig, SGDConfig
from cifar_exp.models.layers import Triangle


def build_optimizer(cfg: SGDConfig | AdamConfig, total_steps: int = 0) -> Any:
    """SGD or Adam with the configured schedule: the legacy `decay` becomes
    lr / (1 + decay * step) as in Keras 2; `onecycle` and `triangle` warm up linearly from
    `start_factor * lr` to `lr` over the first `warmup` fraction of `total_steps`, then anneal
    to `end_factor * lr` on a cosine or a straight line."""
    lr: Any = cfg.lr
    if cfg.schedule in ("onecycle", "triangle"):
        if total_steps < 1:
            raise ValueError(f"optimizer.schedule={cfg.schedule} needs the number of steps")
        warmup = round(cfg.warmup * total_steps)
        start, end = cfg.start_factor * cfg.lr, cfg.end_factor * cfg.lr
        if cfg.schedule == "triangle":
            lr = Triangle(start, cfg.lr, end, peak_step=warmup, total_steps=total_steps)
        else:
            lr = keras.optimizers.schedules.CosineDecay(
                start,
                decay_steps=total_steps - warmup,
                alpha=cfg.end_factor,
                warmup_target=cfg.lr,
                warmup_steps=warmup,
            )
    elif cfg.decay:
        lr = keras.optimizers.schedules.InverseTimeDecay(
            cfg.lr, decay_steps=1, decay_rate=cfg.decay
        )
    wd = cfg.weight_decay or None
    if cfg.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd
        )
    if cfg.name == "adam":
        return keras.optimizers.Adam(
            learning_rate=lr,
            beta_1=cfg.beta_1,
            beta_2=cfg.beta_2,
            epsilon=cfg.epsilon,
            weight_decay=wd,
        )
    raise ValueError(f"optimizer.name: unknown optimizer {cfg.name!r}")
