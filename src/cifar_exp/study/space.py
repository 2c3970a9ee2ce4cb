"""The search space of a study (`search.space`, nested like the config), and the sampler and
pruner it is searched with (`search.sampler`, `search.pruner`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import OmegaConf

from cifar_exp.config import Config, ConfigError, PrunerName, SamplerName, SearchConfig, to_dict

SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def grid(self) -> list:
        """The values a grid search visits: `choices`, or every step of an int range."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(f"search.space.{self.key}: a grid search needs `choices`")


def parse_space(cfg: Config) -> list[Param]:
    """The search space of `cfg.search.space`, each key checked against the config."""
    tree = to_dict(cfg)["search"]["space"] or {}
    entries: list[tuple[str, dict]] = []

    def walk(node: dict, prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if value is None:  # `null` removes an entry inherited from another search config
                continue
            if isinstance(value, dict) and "type" in value:
                entries.append((key, value))
            elif isinstance(value, dict):
                walk(value, f"{key}.")
            else:
                raise ConfigError(f"search.space.{key}: expected {{type: ..., ...}}")

    walk(tree, "")
    if not entries:
        raise ConfigError("search.space: empty; add at least one entry")
    return [_param(cfg, key, spec) for key, spec in entries]


def _param(cfg: Config, key: str, spec: dict) -> Param:
    where = f"search.space.{key}"
    target = OmegaConf.select(cfg, key, default="<missing>")
    if key.startswith("search.") or target == "<missing>" or OmegaConf.is_config(target):
        raise ConfigError(f"{where}: no config key {key!r} to search over")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind = spec.get("type")
    if kind == "categorical":
        if not spec.get("choices"):
            raise ConfigError(f"{where}: categorical needs a non-empty `choices` list")
        return Param(key, kind, choices=tuple(spec["choices"]))
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}.type: must be float, int or categorical (got {kind!r})")
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: needs low < high (got low={low}, high={high})")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0 (got {low})")
    return Param(
        key,
        kind,
        low=low,
        high=high,
        log=bool(spec.get("log")),
        step=spec.get("step"),
        choices=tuple(spec["choices"]) if spec.get("choices") else None,
    )


def grid_size(space: list[Param]) -> int:
    """The number of points of a grid search over `space`."""
    size = 1
    for p in space:
        size *= len(p.grid())
    return size


# --------------------------------------------------------------------------- sampler, pruner


def make_sampler(
    search: SearchConfig, space: list[Param], offset: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler. `offset` (the trials a resumed study already has) shifts the
    seed, so a resumed study does not replay the suggestions it started with."""
    s = search.sampler
    seed = None if s.seed is None else s.seed + offset
    if s.name == SamplerName.random:
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == SamplerName.grid:
        return optuna.samplers.GridSampler({p.key: p.grid() for p in space}, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner; `epochs` (the trials' epoch budget) is Hyperband's resource."""
    p = search.pruner
    if p.name == PrunerName.median:
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == PrunerName.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=epochs, reduction_factor=p.reduction_factor
        )
    if p.name == PrunerName.successive_halving:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    if p.name == PrunerName.threshold:
        return optuna.pruners.ThresholdPruner(
            lower=p.lower, upper=p.upper, n_warmup_steps=p.n_warmup_steps
        )
    return optuna.pruners.NopPruner()
