"""What a study's trials say: how many finished, how many by state, which is the best. The
one place these questions are answered, for the sweep, its records and the report."""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while no trial has completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name, e.g. {"COMPLETE": 3, "PRUNED": 1}."""
    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def n_finished(study: optuna.Study) -> int:
    """Complete and pruned trials: those that count towards `search.n_trials`."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def n_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
