"""Where models register: `@register(name, schema)` on a builder makes it `model=<name>`, with
`schema` (a dataclass) typing and checking its config keys. Imports nothing of cifar_exp."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BUILDERS: dict[str, Callable[..., Any]] = {}
# model name -> the dataclass that types its config group (`model=<name>`)
SCHEMAS: dict[str, type] = {}


def register(name: str, schema: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make `builder(cfg, input_shape, num_classes, images)` selectable as
    `model=<name>`; `images` (uint8 training images or None) is for data-dependent
    initialisation."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        BUILDERS[name] = builder
        SCHEMAS[name] = schema
        return builder

    return wrap
