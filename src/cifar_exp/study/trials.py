"""What a study's trials say: how many finished, how many by state, which is the best. The
one place these questions are answered, for the sweep, its records and the report."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_exp.config import SearchConfig, parse_constraint

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


PRIOR = "prior_from"  # user attribute of a trial copied from another study (a warm start)


def own(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials this study ran, without those a warm start copied in as prior knowledge."""
    return [t for t in trials if PRIOR not in t.user_attrs]


def feasible(trial: FrozenTrial) -> bool:
    """The trial met `search.constraints` (Optuna keeps each one's value; <= 0 is met)."""
    return all(v <= 0 for v in trial.constraints.values())


def complete(study: optuna.Study) -> list[FrozenTrial]:
    """The study's own complete trials that meet its constraints: the candidates for best."""
    return [
        t
        for t in own(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if feasible(t)
    ]


def constraint_values(search: SearchConfig, recorded: dict[str, Any]) -> dict[str, float]:
    """Each of `search.constraints` as the value Optuna takes (`Trial.set_constraint`: <= 0
    when met), computed from what the trial recorded (last-epoch metrics, train_time)."""
    out = {}
    for text in search.constraints:
        key, op, bound = parse_constraint(text)
        v = recorded.get(key)
        if not isinstance(v, int | float) or math.isnan(v):
            out[text] = math.inf  # not recorded: not met
        else:
            out[text] = float(v) - bound if op == "<=" else bound - float(v)
    return out


def objectives(search: SearchConfig) -> list[str]:
    """What the study optimizes: `search.objectives`, or the single `search.metric`."""
    return list(search.objectives or []) or [search.metric]


def directions(search: SearchConfig) -> list[str]:
    """One direction per objective, "maximize" or "minimize"."""
    if search.objectives:
        return [str(d) for d in search.directions]
    return [str(search.direction)]


def multi(study: optuna.Study) -> bool:
    """A multi-objective study: no pruning, no single best value, a Pareto front."""
    return len(study.directions) > 1


def primary(trial: FrozenTrial) -> float | None:
    """The trial's value on the study's first objective (`trial.value` of a single-objective
    study, which Optuna refuses for a multi-objective one); None while it has none."""
    return trial.values[0] if trial.values else None


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's own complete trials that meet its constraints and that none of them
    dominates (as good on every objective, better on one), by trial number. Like
    `study.best_trials`, without the trials a warm start copied in."""
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    done = [t for t in complete(study) if t.values]
    scores = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in done]

    def dominated(a: list[float]) -> bool:
        return any(b != a and all(x >= y for x, y in zip(b, a, strict=True)) for b in scores)

    return [t for t, a in zip(done, scores, strict=True) if not dominated(a)]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best of the study's own complete trials (of a multi-objective study: the trial on
    its Pareto front best on the first objective), or None while none has completed."""
    done = pareto_front(study) if multi(study) else [t for t in complete(study) if t.values]
    if not done:
        return None
    pick = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(done, key=primary)


def counts(study: optuna.Study) -> dict[str, int]:
    """The study's own trials by state name, e.g. {"COMPLETE": 3, "PRUNED": 1}."""
    return dict(Counter(t.state.name for t in own(study.get_trials(deepcopy=False))))


def n_finished(study: optuna.Study) -> int:
    """Own complete and pruned trials: those that count towards `search.n_trials`."""
    return len(own(study.get_trials(deepcopy=False, states=FINISHED)))


def n_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
