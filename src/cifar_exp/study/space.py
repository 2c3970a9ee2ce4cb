"""The search space of a study (`search.space` and `search.params`, read by grammar.py) as
Optuna's suggestions, and the sampler and pruner it is searched with (`search.sampler`,
`search.pruner`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna

from cifar_exp.config import Config, ConfigError, PrunerName, SamplerName, SearchConfig
from cifar_exp.study.grammar import space_specs

log = logging.getLogger(__name__)


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
        """The values a grid search visits: `choices`, or every step of a range."""
        if self.choices is not None:
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:  # a float range; rounded, so 0.1 + 2 * 0.1 is 0.3
            n = int(round((self.high - self.low) / self.step, 9))
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        raise ConfigError(f"{self.key}: a grid search needs `choices`, a range or a step")


def parse_space(cfg: Config) -> list[Param]:
    """The search space of `search.space` and `search.params` (either form, see grammar.py),
    each entry checked against the config; raises ConfigError."""
    return [Param(key, **spec) for key, spec in space_specs(cfg).items()]


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
    if s.name == SamplerName.nsga2:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def epoch_budget(cfg: Config, space: list[Param]) -> int:
    """The most epochs a trial can train: the top of a searched `trainer.epochs`, else the
    configured number (Hyperband's largest resource)."""
    for p in space:
        if p.key == "trainer.epochs":
            return int(max(p.choices) if p.choices is not None else p.high)
    return cfg.trainer.epochs


def make_pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner; `epochs` (the trials' epoch budget) is Hyperband's resource.
    No pruning for a multi-objective study: Optuna cannot prune one (optuna#3450)."""
    p = search.pruner
    if search.objectives:
        if p.name != PrunerName.none:
            log.warning(
                "pruning is off: Optuna cannot prune a multi-objective study (optuna#3450), "
                "so search.pruner=%s is not used",
                p.name,
            )
        return optuna.pruners.NopPruner()
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
