"""Typed configuration: Hydra composition and validation against the schemas (schemas.py;
the models' own live with the models, `cifar_exp.models.SCHEMAS`).

`compose(overrides)` is the one way a config is made: it composes `conf/` (plus a named study
from `experiments/`), merges it into the schemas and checks values, so an unknown key, a wrong
type or an impossible value fails here, before any work, with a `ConfigError` that names the
key in one line.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf import errors as oc_errors

from cifar_exp import models
from cifar_exp.errors import UserError

# the schemas are part of config's API (`from cifar_exp.config import Config`)
from cifar_exp.schemas import METRICS as METRICS
from cifar_exp.schemas import OPTIMIZER_SCHEMAS as OPTIMIZER_SCHEMAS
from cifar_exp.schemas import AdamConfig as AdamConfig
from cifar_exp.schemas import Config as Config
from cifar_exp.schemas import ConfirmConfig as ConfirmConfig
from cifar_exp.schemas import DataConfig as DataConfig
from cifar_exp.schemas import Direction as Direction
from cifar_exp.schemas import Precision as Precision
from cifar_exp.schemas import PrunerConfig as PrunerConfig
from cifar_exp.schemas import PrunerName as PrunerName
from cifar_exp.schemas import ReferenceConfig as ReferenceConfig
from cifar_exp.schemas import SamplerConfig as SamplerConfig
from cifar_exp.schemas import SamplerName as SamplerName
from cifar_exp.schemas import Schedule as Schedule
from cifar_exp.schemas import SearchConfig as SearchConfig
from cifar_exp.schemas import SGDConfig as SGDConfig
from cifar_exp.schemas import TrackingConfig as TrackingConfig
from cifar_exp.schemas import TrainerConfig as TrainerConfig
from cifar_exp.schemas import Validation as Validation


class ConfigError(UserError, ValueError):
    """A configuration that cannot run; the message is one line naming the key."""


# --------------------------------------------------------------------------- locations


def _find_dir(name: str) -> Path:
    """The `conf/` or `experiments/` folder: env override, a checkout, or the installed copy."""
    env = os.environ.get(f"CIFAR_EXP_{name.upper()}")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / name


def conf_dir() -> Path:
    return _find_dir("conf")


def experiments_dir() -> Path:
    return _find_dir("experiments")


def list_experiments() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


# --------------------------------------------------------------------------- compose


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/ with Hydra overrides (`experiment=NAME` picks a named study).

    Returns a typed, validated, read-only-schema DictConfig; raises ConfigError.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    store = ConfigStore.instance()
    for path in sorted(experiments_dir().glob("*.yaml")):
        try:
            node = OmegaConf.load(path)
        except Exception as e:  # YAML syntax: name the file, not a parser traceback
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        store.store(group="experiment", name=path.stem, node=node, package="_global_")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            raw = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(_hydra_message(e)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e)) from None
    finally:
        GlobalHydra.instance().clear()
    experiment = raw.hydra.runtime.choices.get("experiment")
    with open_dict(raw):
        del raw["hydra"]
        raw.experiment = experiment
    return validate(raw)


_CONSTRAINT = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*(\S+)\s*")


def parse_constraint(text: Any) -> tuple[str, str, float]:
    """`search.constraints` entry "train_time <= 600" -> ("train_time", "<=", 600.0): a value a
    trial records (a metric of its last epoch, train_time in seconds), a bound, a finite number."""
    match = _CONSTRAINT.fullmatch(str(text))
    bound = None
    if match:
        with contextlib.suppress(ValueError):
            bound = float(match.group(3))
    if bound is None or not math.isfinite(bound):
        raise ConfigError(
            f"search.constraints: {text!r} is not KEY <= NUMBER or KEY >= NUMBER "
            "(e.g. 'train_time <= 600')"
        )
    return match.group(1), match.group(2), bound


def validate(raw: DictConfig | dict) -> DictConfig:
    """Merge a composed config into the schemas and check its values; raises ConfigError."""
    try:
        raw = OmegaConf.create(raw) if isinstance(raw, dict) else raw
        schema = OmegaConf.structured(Config)
        schema.model = OmegaConf.structured(_schema_for(raw, "model", models.SCHEMAS))
        schema.optimizer = OmegaConf.structured(_schema_for(raw, "optimizer", OPTIMIZER_SCHEMAS))
        cfg = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(cfg)
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_message(e)) from None
    _check_values(cfg)
    return cfg


def _schema_for(raw: DictConfig, group: str, schemas: dict[str, type]) -> type:
    name = OmegaConf.select(raw, f"{group}.name")
    if name not in schemas:
        raise ConfigError(f"{group}.name: unknown {group} {name!r} (choose from {sorted(schemas)})")
    return schemas[name]


SEEDS = ("trainer.seed", "data.split_seed", "search.sampler.seed")
# counts: key -> (lowest, highest, may be null); threads bounded: 100,000 of them took 19 GiB
RANGES = {k: (1, None, False) for k in ("trainer.epochs", "trainer.batch_size", "data.val_size",
          "trainer.steps_per_execution", "search.n_trials", "search.heartbeat_interval",
          "search.max_failures", "search.warm_start_top")} | {"search.max_retry": (0, None, False),
          "data.limit_train": (10, None, True), "data.limit_test": (10, None, True),
          "data.shuffle_buffer": (1, None, True), "trainer.threads": (1, 256, True),
          "trainer.input_threads": (1, 256, True)}  # fmt: skip
MAX_SEED = 2**32 - 1
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_path(key: str, value: str | None, *, source: bool = False) -> None:
    """A path the config names: one the file system can take (length, no NUL byte), and for a
    data source a regular file or a folder that exists (a FIFO or a device would block or
    stream forever); for an output folder, a folder if it exists."""
    if value is None:
        return
    if "\0" in value:
        raise ConfigError(f"{key}: contains a NUL byte")
    path = Path(value).expanduser()
    too_long = len(os.fsencode(path)) > 4095 or any(len(os.fsencode(p)) > 255 for p in path.parts)
    if too_long:
        raise ConfigError(f"{key}: path too long ({len(value)} characters)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if source:
            raise ConfigError(f"{key}: no such file or folder: {value}") from None
        return
    except OSError as e:
        raise ConfigError(f"{key}: cannot use {value} ({e.strerror})") from None
    if source and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ConfigError(f"{key}: {value} is not a regular file or a folder")
    if not source and not stat.S_ISDIR(mode):
        raise ConfigError(f"{key}: {value} exists and is not a folder")


def _check_finite(tree: Any, prefix: str = "") -> None:
    """Every number fits TensorFlow (float32, int64): inf, nan, 1e308 would fail deep inside."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict | list):
            _check_finite(value, f"{name}.")
        elif isinstance(value, float) and not abs(value) < 3.4e38:  # nan too
            finite = "below 3.4e38 (float32)" if math.isfinite(value) else "a finite number"
            raise ConfigError(f"{name}: must be {finite} (got {value})")
        elif type(value) is int and not -(2**63) <= value < 2**63:
            raise ConfigError(f"{name}: must be an integer of at most 63 bits (got {value})")


def _check_values(cfg: DictConfig) -> None:
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: must be {rule} (got {OmegaConf.select(cfg, key)!r})")

    _check_finite(to_dict(cfg))

    d, t, o, s = cfg.data, cfg.trainer, cfg.optimizer, cfg.search
    need(o.lr > 0, "optimizer.lr", "> 0")
    need(o.decay >= 0, "optimizer.decay", ">= 0")
    need(o.weight_decay >= 0, "optimizer.weight_decay", ">= 0")
    need(0 <= o.warmup < 1, "optimizer.warmup", "in [0, 1)")
    for key in ("start_factor", "end_factor"):
        need(0 <= o[key] <= 1, f"optimizer.{key}", "in [0, 1] (a fraction of optimizer.lr)")
    one = "0 unless optimizer.schedule=constant (pick one schedule)"
    need(not (o.decay and o.schedule != "constant"), "optimizer.decay", one)
    if "momentum" in o:
        need(0 <= o.momentum < 1, "optimizer.momentum", "in [0, 1)")
    # `trainer.jit_compile=true` on the command line arrives as the bool True, stored as "True"
    t.jit_compile = str(t.jit_compile).lower()
    need(t.jit_compile in ("true", "false", "auto"), "trainer.jit_compile", "true, false or auto")
    need(t.verbose in ("auto", "0", "1", "2"), "trainer.verbose", "auto, 0, 1 or 2")
    need(0 <= t.label_smoothing < 1, "trainer.label_smoothing", "in [0, 1)")
    need(0 <= t.translate <= 16, "trainer.translate", "between 0 and 16 (pixels)")
    need(t.augment or not t.alternate_flips, "trainer.alternate_flips", "false without augment")
    need(
        t.stop_after is None or 1 <= t.stop_after <= t.epochs,
        "trainer.stop_after",
        "null or between 1 and trainer.epochs",
    )
    for key, (low, high, null) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        rule = (f">= {low}" if high is None else f"between {low} and {high}") + " or null" * null
        need(value is None or low <= value <= (high or value), key, rule)
    for key in SEEDS:
        seed = OmegaConf.select(cfg, key)
        need(
            seed is None or 0 <= seed <= MAX_SEED, key, f"between 0 and {MAX_SEED} (numpy's range)"
        )
    _check_path("data.path", d.path, source=True)
    _check_path("data.cache_dir", d.cache_dir)
    _check_path("tracking.dir", cfg.tracking.dir)
    need(
        bool(STUDY_NAME.fullmatch(s.study_name)),
        "search.study_name",
        "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
        "(it names folders)",
    )
    for key, (ok, rule) in models.VALUE_RULES.items():  # keys some models have
        if cfg.model.get(key) is not None:
            need(ok(cfg.model[key]), f"model.{key}", rule)
    need(s.timeout is None or s.timeout > 0, "search.timeout", "> 0 or null")
    need(s.metric in METRICS, "search.metric", f"one of {list(METRICS)}")
    obj, known = list(s.objectives or []), [*METRICS, "train_time"]
    need(set(obj) <= set(known), "search.objectives", f"a list of keys from {known}")
    need(len(set(obj)) == len(obj) != 1, "search.objectives", "2 or more distinct keys, or []")
    if len(s.directions or []) != len(obj):
        raise ConfigError(f"search.directions: need {len(obj)}, one per search.objectives entry")
    need(
        s.n_workers == "auto" or (type(s.n_workers) is int and 1 <= s.n_workers <= 64),
        "search.n_workers",
        "a number of workers from 1 to 64, or auto",
    )
    for text in s.constraints:
        parse_constraint(text)
    need(1 <= s.seeds <= 100, "search.seeds", "between 1 and 100")
    need(s.confirm.top_k >= 0, "search.confirm.top_k", ">= 0 (0: no confirmation stage)")
    need(2 <= s.confirm.seeds <= 100, "search.confirm.seeds", "between 2 and 100")
    need(0 < s.confirm.alpha < 1, "search.confirm.alpha", "between 0 and 1")
    last_seed = t.seed + max(s.seeds, s.confirm.seeds) - 1
    need(last_seed <= MAX_SEED, "trainer.seed", f"<= {MAX_SEED} - seeds + 1 (the last seed)")
    need(0 < cfg.tracking.champion_alpha < 1, "tracking.champion_alpha", "between 0 and 1")


def _omegaconf_message(e: Exception) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = " ".join(
        ln.strip()
        for ln in str(getattr(e, "msg", None) or e).splitlines()
        if ln.strip()
        and not ln.strip().startswith(("full_key:", "object_type=", "reference_type="))
    )
    if (isinstance(e, oc_errors.ConfigKeyError) or "not in struct" in msg) and key:
        return f"{key}: unknown config key"
    return f"{key}: {msg}" if key else msg


def _hydra_message(e: Exception) -> str:
    text = str(e).split("Config search path:")[0]  # then Hydra's list of where it looked
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else type(e).__name__
    if "Could not find" in first and "Available options" in str(e):
        options = [ln for ln in lines[2:] if "provider=" not in ln and "search path" not in ln]
        return f"{first} (available: {', '.join(options)})"
    if first.startswith(("Could not override", "Error merging override")) and e.__cause__:
        return _omegaconf_message(e.__cause__)
    return " ".join(lines[:2])


# --------------------------------------------------------------------------- helpers


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (enums as strings)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def mask(text: str) -> str:
    """A URL with its password replaced by *** (`postgresql://u:***@host/db`)."""
    return re.sub(r"(//[^:/@\s]+:)[^@/\s]+@", r"\1***@", text)


def redact(tree: Any) -> Any:
    """A plain config tree with every credential in a URL masked: what gets logged, printed
    or written to a report."""
    if isinstance(tree, dict):
        return {k: redact(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v) for v in tree]
    return mask(tree) if isinstance(tree, str) else tree


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML, credentials masked."""
    return OmegaConf.to_yaml(OmegaConf.create(redact(to_dict(cfg))))


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """`{"optimizer.lr": 0.01, ...}`: dotted keys, the way MLflow params and overrides read
    (credentials in URLs masked)."""
    tree = redact(to_dict(cfg)) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def with_overrides(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A validated copy of `cfg` with dotted keys set (used by the search for each trial)."""
    new = to_dict(cfg)
    merged = OmegaConf.create(new)
    for key, value in values.items():
        if OmegaConf.select(merged, key, default=MISSING) is MISSING:
            raise ConfigError(f"{key}: unknown config key")
        OmegaConf.update(merged, key, value, merge=False)
    return validate(merged)
