"""What a study searches, as the config and the command line write it.

Two forms name one search parameter: the `{type: float, low: .., high: .., log: true}` entries
of `search.space` (nested like the config), and Hydra's sweep grammar as Hydra's Optuna sweeper
reads it, in `search.params` (`optimizer.lr: "tag(log, interval(1e-4, 1e-1))"`) or on the
command line of `sweep` (`'trainer.batch_size=choice(32, 64, 128, 256)'`). Hydra's own override
parser reads the grammar; the mapping is its Optuna sweeper's (`create_optuna_distribution_
from_override`): `choice` -> categorical, `range` -> int with its step (float if a bound or
the step is a float; the end is included), `interval` -> float, `int(interval(..))` -> int,
`tag(log, ..)` -> log scale. Both forms become one checked spec (`{type, low, high, log,
step, choices}`) that space.py turns into Optuna's suggestions.

No Optuna here: every command reads its command line through `command_config`, and only a
study needs Optuna.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    OverrideType,
    RangeSweep,
)
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from cifar_exp.config import ConfigError, compose, to_dict, with_overrides

# the commands whose overrides may search a value; every other command takes one value a key
SEARCHING = ("sweep", "confirm")
# where the config lists a study's parameters, read in this order: a later entry replaces an
# earlier one for the same key, and `null` removes a key (and every key under it)
SECTIONS = ("space", "params")
# the fields of a `{type: ...}` entry
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}
TAGS = {"log"}
CATEGORY_TYPES = (str, int, float, bool)


def space_specs(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Every searched config key -> its checked spec (`{type, low, high, log, step, choices}`),
    in the order the config lists them; raises ConfigError naming the entry."""
    entries = searched(cfg)
    if not entries:
        raise ConfigError(
            "search.space, search.params: nothing to search; add an entry (on the command "
            "line: 'optimizer.lr=tag(log, interval(1e-4, 1e-1))')"
        )
    return {key: check(cfg, key, where, value) for key, (where, value) in entries.items()}


def searched(cfg: DictConfig) -> dict[str, tuple[str, Any]]:
    """Every searched config key -> (where it is written, e.g. `search.params.optimizer.lr`;
    its spec dict or sweep expression), in the order the config lists them."""
    tree = to_dict(cfg)["search"]
    out: dict[str, tuple[str, Any]] = {}
    for section in SECTIONS:
        _walk(tree.get(section) or {}, f"search.{section}.", "", out)
    return out


def _walk(node: dict, where: str, prefix: str, out: dict[str, tuple[str, Any]]) -> None:
    for name, value in node.items():
        key = f"{prefix}{name}"
        if value is None:  # removes an entry inherited from another search config
            for k in [k for k in out if k == key or k.startswith(f"{key}.")]:
                del out[k]
        elif isinstance(value, dict) and "type" not in value:
            _walk(value, where, f"{key}.", out)
        else:
            out[key] = (f"{where}{key}", value)


def check(cfg: DictConfig, key: str, where: str, value: Any) -> dict[str, Any]:
    """The spec of one entry (a `{type: ...}` dict or a sweep expression), checked against
    the config and against what Optuna accepts."""
    spec = value if isinstance(value, dict) else spec_of_expression(value, where)
    target = OmegaConf.select(cfg, key, default="<missing>")
    if key.startswith("search.") or target == "<missing>":
        raise ConfigError(f"{where}: no config key {key!r} to search over")
    if OmegaConf.is_config(target):
        raise ConfigError(f"{where}: {key} is a section or a list; a search sets single values")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind, choices = spec.get("type"), spec.get("choices")
    if kind == "categorical":
        if not choices:
            raise ConfigError(f"{where}: categorical needs a non-empty `choices` list")
        _settable(cfg, key, where, choices)
        return {"type": kind, "choices": tuple(choices)}
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}.type: must be float, int or categorical (got {kind!r})")
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log")
    for name, bound in (("low", low), ("high", high), ("step", step)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise ConfigError(f"{where}.{name}: must be a number (got {bound!r})")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: needs low < high (got low={low}, high={high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0 (got {low})")
    if step is not None and not step > 0:
        raise ConfigError(f"{where}: needs step > 0 (got {step})")
    if log and step is not None and (kind == "float" or step != 1):
        raise ConfigError(f"{where}: Optuna's log scale takes no step (got step={step})")
    if kind == "float" and isinstance(target, int) and not isinstance(target, bool):
        raise ConfigError(
            f"{where}: {key} is an integer; search it with int(interval(..)), range(..) or "
            "type: int"
        )
    if kind == "int" and step:  # the last value the steps reach, as Optuna would round it
        high = low + (high - low) // step * step
    _settable(cfg, key, where, _ends(kind, low, high, step))
    return {
        "type": kind,
        "low": low,
        "high": high,
        "log": bool(log),
        "step": step,
        "choices": tuple(choices) if choices else None,
    }


def _settable(cfg: DictConfig, key: str, where: str, values: Sequence[Any]) -> None:
    """Every value a trial can set (each choice; the ends of a range) passes the config's own
    checks, so `choice(a, b)` for an integer or `interval(0.1, inf)` is refused before any
    trial instead of failing every one of them. A value that fails only beside the base config
    is fine if it passes with another searched key at one of its own values (`stop_after`
    searched with `epochs`, `decay` with `schedule`): such a pair is judged trial by trial."""
    others: dict[str, list[Any]] | None = None
    for value in values:
        try:
            with_overrides(cfg, {key: value})
            continue
        except ConfigError as e:
            error = e
        others = _other_values(cfg, key) if others is None else others
        if not any(_fits(cfg, {key: value, k: v}) for k, vs in others.items() for v in vs):
            raise ConfigError(f"{where}: {value!r} cannot be set ({error})") from None


def _fits(cfg: DictConfig, values: dict[str, Any]) -> bool:
    try:
        with_overrides(cfg, values)
        return True
    except ConfigError:
        return False


def _ends(kind: str, low: float, high: float, step: float | None) -> tuple[float, float]:
    """The least and the greatest value a trial can draw: a float range without a step never
    draws `high` itself (`momentum=interval(0.5, 1.0)` is fine where momentum < 1)."""
    if kind == "int" or not step:
        last = math.nextafter(high, low) if kind == "float" and math.isfinite(high) else high
        return low, last
    return low, low + (high - low) // step * step


def _other_values(cfg: DictConfig, key: str) -> dict[str, list[Any]]:
    """The other searched keys, each with the values at the ends of its range (its choices)."""
    out: dict[str, list[Any]] = {}
    for other, (where, value) in searched(cfg).items():
        if other == key:
            continue
        try:
            spec = value if isinstance(value, dict) else spec_of_expression(value, where)
        except ConfigError:
            continue  # its own check says what is wrong with it
        low, high = spec.get("low"), spec.get("high")
        if spec.get("choices"):
            out[other] = list(spec["choices"])
        elif all(type(b) in (int, float) for b in (low, high)):
            out[other] = list(_ends(str(spec.get("type")), low, high, spec.get("step")))
    return out


# --------------------------------------------------------------------------- the grammar


def parse_override(text: str, where: str | None = None) -> Override:
    """One override, parsed by Hydra; a bad one is a ConfigError naming `where` (default: the
    override) in one line."""
    try:
        return OverridesParser.create().parse_override(text)
    except HydraException as e:
        raise ConfigError(f"{where or text}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    """Hydra's message in one line, without its `ValueError while evaluating '...':` frame."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("See https", "Error parsing override"))]
    text = " ".join(lines) or type(e).__name__
    return re.sub(r"^\w+ while evaluating '.*?': ", "", text)


def spec_of_expression(expression: Any, where: str) -> dict[str, Any]:
    """The spec of a sweep expression written in the config (`search.params`, or a string in
    `search.space`)."""
    text = expression.strip() if isinstance(expression, str) else ""
    override = parse_override(f"x={text}", where) if text else None
    if override is None or not override.is_sweep_override():
        raise ConfigError(
            f"{where}: {expression!r} is one value, not a search; write choice(..), range(..), "
            "interval(..) or {type: ...}, or set the value in the config itself"
        )
    return spec_of(override, where)


def spec_of(override: Override, where: str) -> dict[str, Any]:
    """The spec of a parsed sweep override, mapped as Hydra's Optuna sweeper maps it."""
    value = override.value()
    tags = set(getattr(value, "tags", ()))
    if tags - TAGS:
        raise ConfigError(
            f"{where}: unknown tag {sorted(tags - TAGS)[0]!r} (a search reads one tag: log)"
        )
    log = "log" in tags
    if isinstance(value, RangeSweep) and value.shuffle:  # Hydra's sweeper: a categorical
        value = ChoiceSweep(list=list(value.range()), tags=value.tags)
    if isinstance(value, ChoiceSweep):
        if log:
            raise ConfigError(f"{where}: tag(log, ..) takes a range(..) or an interval(..)")
        bad = [c for c in value.list if not isinstance(c, CATEGORY_TYPES)]
        if bad:
            raise ConfigError(f"{where}: a choice is a number, a string or a bool (got {bad[0]!r})")
        return {"type": "categorical", "choices": list(value.list)}
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if not step > 0:
            raise ConfigError(f"{where}: range(..) needs a step > 0 (got {step})")
        if not start < stop:
            raise ConfigError(
                f"{where}: range(start, stop) needs start < stop (got {start}, {stop})"
            )
        kind = "float" if any(isinstance(x, float) for x in (start, stop, step)) else "int"
        return {"type": kind, "low": start, "high": stop, "step": step, "log": log}
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if not start < end:
            raise ConfigError(
                f"{where}: interval(start, end) needs start < end (got {start}, {end})"
            )
        kind = "int" if isinstance(start, int) and isinstance(end, int) else "float"
        return {"type": kind, "low": start, "high": end, "log": log}
    raise ConfigError(
        f"{where}: a search takes choice(..), range(..) or interval(..), not {type(value).__name__}"
    )


# --------------------------------------------------------------------------- the command line


def command_config(command: str, overrides: Sequence[str]) -> DictConfig:
    """The config of one command line: `compose(overrides)`, where on `sweep` and `confirm` a
    sweep-grammar override (`optimizer.lr=interval(1e-4, 0.1)`) becomes the search parameter of
    its key, replacing the configured one, and a plain override of a searched key
    (`optimizer.lr=0.05`) fixes it for every trial, taking it out of the search. Another command
    given a sweep expression raises ConfigError saying to use `sweep`."""
    parsed = [(text, parse_override(text)) for text in overrides]
    for text, o in parsed:
        if not o.key_or_group:  # `=1`: Hydra's loader would fail on it with a traceback
            raise ConfigError(f"{text}: no config key before '='")
        if not o.is_sweep_override():
            continue
        if command not in SEARCHING:
            raise ConfigError(
                f"{text}: a search expression; search it with `python -m cifar_exp sweep "
                f"'{text}'`, or give {command} one value"
            )
        if o.package is not None or o.type == OverrideType.DEL:
            raise ConfigError(f"{text}: a search parameter is written KEY=EXPRESSION")
        spec_of(o, text)  # a bad expression names what was typed, before anything else
    cfg = compose([text for text, o in parsed if not o.is_sweep_override()])
    if command not in SEARCHING:
        return cfg
    typed: dict[str, str] = {}
    with open_dict(cfg.search.params) as params:
        for text, o in parsed:
            if o.is_sweep_override():  # `search.params.KEY=EXPR` says the same as `KEY=EXPR`
                key = re.sub(r"^search\.(space|params)\.", "", o.key_or_group)
                params[key] = text.split("=", 1)[1]
                typed[key] = text
            elif o.type != OverrideType.DEL and o.key_or_group in searched(cfg):
                params[o.key_or_group] = None
    for key, text in typed.items():  # once every searched key is in (pairs are judged
        if cfg.search.params.get(key) == text.split("=", 1)[1]:  # together), naming what
            check(cfg, key, text, cfg.search.params[key])  # was typed
    space_specs(cfg)  # a bad space fails here, before anything runs
    return cfg
