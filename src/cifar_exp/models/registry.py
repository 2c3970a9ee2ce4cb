"""Where models register: `@register(name, schema)` on a builder makes it `model=<name>`, with
`schema` (a dataclass) typing and checking its config keys. Imports nothing of cifar_exp."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BUILDERS: dict[str, Callable[..., Any]] = {}
# model name -> the dataclass that types its config group (`model=<name>`)
SCHEMAS: dict[str, type] = {}
# the allowed values of keys some models have (beyond their types): key -> (test, rule)
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "conv_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dense_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "tta_shift": (lambda v: 0 <= v <= 8, "between 0 and 8 (pixels)"),
    "whiten_bias_epochs": (lambda v: v >= 0, ">= 0 or null"),
}


def register(name: str, schema: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make `builder(cfg, input_shape, num_classes, images)` selectable as
    `model=<name>`; `images` (uint8 training images or None) is for data-dependent
    initialisation."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        BUILDERS[name] = builder
        SCHEMAS[name] = schema
        return builder

    return wrap
