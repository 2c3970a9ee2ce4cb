"""Cost-aware results in the report: a multi-objective study's Pareto front (the trials on it,
as a table) and, for a time budget the reader gives (`report STUDY --budget-minutes 10`), the
best configuration whose training fits in it. Pure: reads the gathered record only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from cifar_exp.config import SearchConfig
from cifar_exp.findings import TrialRow, best_summary, duration_text, param_text
from cifar_exp.stats import summarize
from cifar_exp.study.trials import complete, pareto_front, primary
from cifar_exp.typeset import DASH, Numbered, md_table

TRAIN_TIME = "train_time"  # the objective and user attribute: a trial's training seconds


def wall_seconds(rows: list[TrialRow]) -> float:
    """From the first trial's start to the last one's end, seconds."""
    starts = [r.trial.datetime_start for r in rows if r.trial.datetime_start]
    ends = [r.trial.datetime_complete for r in rows if r.trial.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def pruning(search: SearchConfig) -> str:
    """Whether the study's trials may be stopped early, in words."""
    if search.objectives:
        return "no trial is stopped early (Optuna cannot prune a multi-objective study)"
    return f"the `{search.pruner.name}` pruner may stop a trial early"


def objective_names(study: optuna.Study, metric: str) -> list[str]:
    """The study's objectives by name, one per direction: its metric names; `metric` for an
    unnamed single one; "objective 1", ... for a study made without names (by Optuna
    directly, say)."""
    names = list(study.metric_names or [])
    if len(names) == len(study.directions):
        return names
    n = len(study.directions)
    return [metric] if n == 1 else [f"objective {i}" for i in range(1, n + 1)]


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.1f}" if name == TRAIN_TIME else f"{value:.4f}"


def _header(name: str) -> str:
    return f"{name} (s)" if name == TRAIN_TIME else name


@dataclass(frozen=True)
class BudgetAnswer:
    """The best configuration (on the study's first objective) among its complete trials whose
    training took at most `minutes`; `number` is None when none did."""

    minutes: float
    objective: str  # the first objective, what "best" means here
    fit: int  # complete trials within the budget
    of: int  # complete trials
    number: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    value: str = ""  # the first objective's value, with its seeds (and interval, where several)
    train_time: float | None = None  # seconds, all its seeds
    fastest: tuple[int, float] | None = None  # (trial, seconds) when none fit

    def text(self) -> str:
        """The answer in one sentence."""
        budget = f"{self.minutes:g} min of training"
        if self.number is None:
            if self.fastest is None:
                return f"No trial has completed, so none is known to fit {budget}."
            n, s = self.fastest
            return (
                f"No complete trial fits {budget}: the fastest (trial {n}) trained for "
                f"{duration_text(s)}."
            )
        shown = ", ".join(f"`{k}` = {param_text(v)}" for k, v in self.params.items())
        return (
            f"Within {budget} ({self.fit} of {self.of} complete trials fit), the best "
            f"`{self.objective}` is trial {self.number}'s: {shown or 'the base config'}; "
            f"`{self.objective}` {self.value}, trained for {duration_text(self.train_time)}."
        )


def within_budget(
    study: optuna.Study, rows: list[TrialRow], minutes: float, metric: str
) -> BudgetAnswer:
    """The best of the study's own complete trials whose `train_time` is at most `minutes`."""
    name = objective_names(study, metric)[0]
    done = [t for t in complete(study) if t.values and TRAIN_TIME in t.user_attrs]
    fit = [t for t in done if t.user_attrs[TRAIN_TIME] <= minutes * 60]
    answer = BudgetAnswer(minutes, name, len(fit), len(done))
    if not fit:
        fastest = min(done, key=lambda t: t.user_attrs[TRAIN_TIME], default=None)
        if fastest is None:
            return answer
        return BudgetAnswer(**{**answer.__dict__, "fastest": _timed(fastest)})
    pick = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
    best = pick(fit, key=primary)
    if name == metric:  # its seeds' values are of the search metric
        value = (best_summary(rows, best.number) or summarize([primary(best)])).text()
    else:
        value = _cell(name, primary(best)) + (" s" if name == TRAIN_TIME else " (1 value)")
    return BudgetAnswer(
        minutes,
        name,
        len(fit),
        len(done),
        best.number,
        dict(best.params),
        value,
        best.user_attrs[TRAIN_TIME],
    )


def _timed(t: optuna.trial.FrozenTrial) -> tuple[int, float]:
    return t.number, float(t.user_attrs[TRAIN_TIME])


def budget_section(answer: BudgetAnswer | None) -> list[str]:
    """The report's answer to `--budget-minutes`."""
    if answer is None:
        return []
    return [f"## Within a budget of {answer.minutes:g} minutes", "", answer.text(), ""]


def front_section(study: optuna.Study, metric: str, num: Numbered) -> list[str]:
    """A multi-objective study's Pareto front: what it is, the table of the trials on it (best
    first objective first) and the figure."""
    if len(study.directions) < 2:
        return []
    names = objective_names(study, metric)
    front = pareto_front(study)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    front.sort(key=primary, reverse=maximize)
    ways = [d.name.lower() for d in study.directions]
    goals = " and ".join(f"`{n}` ({d})" for n, d in zip(names, ways, strict=True))
    n_done = len(complete(study))
    lines = [
        "## Pareto front",
        "",
        f"The study optimizes {goals} together, so it has no single best trial: a trial is on "
        f"the Pareto front when no other trial is as good on every objective and better on "
        f"one. {len(front)} of its {n_done} complete trials are. Optuna cannot prune a "
        "multi-objective study, so every trial ran its full epochs.",
        "",
    ]
    if front:
        keys = sorted({k for t in front for k in t.params})
        cells = [
            [
                str(t.number),
                *(_cell(n, v) for n, v in zip(names, t.values, strict=True)),
                str(t.user_attrs.get("n_seeds", 1)),
                *(param_text(t.params[k]) if k in t.params else DASH for k in keys),
            ]
            for t in front
        ]
        headers = ["trial", *map(_header, names), "seeds", *keys]
        numeric = [True] * (len(names) + 2) + [True] * len(keys)
        caption = (
            f"The trials on the Pareto front, best `{names[0]}` first; metric values are the "
            "mean over the trial's seeds after its last epoch, train_time its training seconds "
            "(all seeds)."
        )
        lines += num.table(md_table(headers, cells, numeric), caption)
    lines += num.figure(
        "pareto_front.png",
        f"Pareto front: every complete trial by its {' and '.join(f'`{n}`' for n in names)}; "
        "the trials on the front in red, with their numbers.",
    )
    return lines
