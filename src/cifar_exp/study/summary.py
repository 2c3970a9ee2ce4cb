"""How a sweep ended, as the CLI and the workers read it: `SweepSummary` with its best trial
(`BestTrial`) and, for a multi-objective study, its Pareto front."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from cifar_exp import stats
from cifar_exp.config import Config, SearchConfig, mask
from cifar_exp.registry import Registration
from cifar_exp.stats import Summary
from cifar_exp.study.confirm import Confirmation, recorded
from cifar_exp.study.storage import storage_url
from cifar_exp.study.trials import (
    best_trial,
    counts,
    multi,
    n_finished,
    objectives,
    pareto_front,
    primary,
)

EXHAUSTED = "search space exhausted"


@dataclass(frozen=True)
class BestTrial:
    """The study's best configuration: on the confirmed means when a confirmation ran, else
    the best trial's value (then `summary` says how many seeds it rests on). In a
    multi-objective study: the trial on the Pareto front best on the first objective."""

    number: int
    value: float
    params: dict[str, Any]
    run_id: str | None  # its MLflow run
    model_run_id: str | None  # the run whose model is the configuration's
    summary: Summary | None = None  # its seed values: n, mean, std, 95 % interval


@dataclass(frozen=True)
class FrontTrial:
    """A trial on a multi-objective study's Pareto front: its value per objective."""

    number: int
    values: dict[str, float]  # objective name -> value
    params: dict[str, Any]


@dataclass
class SweepSummary:
    """How a sweep ended: the study's trials by state, the best trial, why it stopped
    ("complete", "timeout", "interrupted", ...) and the model it registered, if any; for a
    multi-objective study its objectives and Pareto front."""

    study_name: str
    storage: str  # credentials masked
    parent_run_id: str | None
    counts: dict[str, int]
    finished: int
    target: int
    best: BestTrial | None
    stopped: str
    registered: Registration | None = None
    confirmation: Confirmation | None = None
    objectives: list[str] = field(default_factory=list)  # what the study optimizes
    front: list[FrontTrial] = field(default_factory=list)  # multi-objective only

    @property
    def done(self) -> bool:
        """The study needs no more trials."""
        return self.finished >= self.target or self.stopped == EXHAUSTED


def summarize(study: optuna.Study, cfg: Config, parent: str | None, stopped: str) -> SweepSummary:
    """The study as it stands after this sweep."""
    confirmation = recorded(study)
    names = list(study.metric_names or objectives(cfg.search))
    front = pareto_front(study) if multi(study) else []
    return SweepSummary(
        study_name=study.study_name,
        storage=mask(storage_url(cfg)),
        parent_run_id=parent,
        counts=counts(study),
        finished=n_finished(study),
        target=cfg.search.n_trials,
        best=_best(study, confirmation, cfg.search),
        stopped=stopped,
        confirmation=confirmation,
        objectives=names,
        front=[
            FrontTrial(t.number, dict(zip(names, t.values, strict=True)), dict(t.params))
            for t in front
        ],
    )


def _best(
    study: optuna.Study, confirmation: Confirmation | None, search: SearchConfig
) -> BestTrial | None:
    if confirmation is not None:
        w = confirmation.winner
        s = w.summary
        return BestTrial(w.number, s.mean, w.params, w.run_id, w.model_run_id, s)
    best = best_trial(study)
    if best is None:
        return None
    value = primary(best)
    # the seeds' values are of `search.metric`: the best value's only when that comes first
    first = (study.metric_names or [search.metric])[0]
    seeds = best.user_attrs.get("seed_values", {}) if first == search.metric else {}
    return BestTrial(
        best.number,
        value,
        best.params,
        best.user_attrs.get("mlflow_run_id"),
        best.user_attrs.get("model_run_id") or best.user_attrs.get("mlflow_run_id"),
        stats.summarize(list(seeds.values()) or [value]),
    )
