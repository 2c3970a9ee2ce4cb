"""The confirmation stage: after a search, the best `search.confirm.top_k` configurations are
re-trained until each has `search.confirm.seeds` seeds (seeds already trained count, the data
split stays fixed), and the study's best configuration is chosen on those means, with Welch's
t-test of the winner against each runner-up.

Each finished seed is written to the study at once (user attribute `confirm_values:<trial>`),
so a confirmation that was stopped re-trains only the seeds still missing. The result is kept
in the study (`confirmation`) and on its MLflow parent run (confirmation.json, tags).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from cifar_exp import tracking
from cifar_exp.config import Config, with_overrides
from cifar_exp.data import Splits
from cifar_exp.stats import Comparison, Summary, compare, summarize
from cifar_exp.study import trials
from cifar_exp.study.objective import show_epochs, train_config
from cifar_exp.study.progress import NullReporter, Reporter
from cifar_exp.study.storage import retrying

KEY = "confirmation"


@dataclass
class Candidate:
    """A configuration (a trial's params) with its values per seed."""

    number: int  # the trial
    params: dict[str, Any]
    values: dict[int, float]  # seed -> final value of the study metric
    run_id: str | None = None  # the trial's run (seed runs are nested under it)
    model_run_id: str | None = None  # the run whose model is the configuration's

    @property
    def summary(self) -> Summary:
        return summarize(list(self.values.values()))


@dataclass
class Confirmation:
    """The confirmed candidates (best first), the winner's comparison with each runner-up,
    and what the numbers support, in words."""

    metric: str
    direction: str
    alpha: float
    candidates: list[Candidate]
    comparisons: list[Comparison] = field(default_factory=list)  # winner vs candidates[1:]

    @property
    def winner(self) -> Candidate:
        return self.candidates[0]

    def statements(self) -> list[str]:
        w = self.winner
        out = []
        for other, c in zip(self.candidates[1:], self.comparisons, strict=True):
            if c.p_value is None:
                out.append(f"trial {w.number} and trial {other.number}: too few seeds to compare")
            elif c.significant(self.alpha):
                out.append(
                    f"trial {w.number} is better than trial {other.number}: "
                    f"{self.metric} difference {c.diff:+.4f} (95 % CI {c.ci_low:+.4f} to "
                    f"{c.ci_high:+.4f}), p = {c.p_value:.3g}"
                )
            else:
                out.append(
                    f"trial {w.number} is not distinguishable from trial {other.number} at "
                    f"alpha {self.alpha:g}: difference {c.diff:+.4f} (95 % CI {c.ci_low:+.4f} to "
                    f"{c.ci_high:+.4f}), p = {c.p_value:.3g}"
                )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": self.direction,
            "alpha": self.alpha,
            "candidates": [
                {**asdict(c), "values": {str(k): v for k, v in c.values.items()}}
                for c in self.candidates
            ],
            "comparisons": [asdict(c) for c in self.comparisons],
            "statements": self.statements(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Confirmation:
        candidates = [
            Candidate(**{**c, "values": {int(k): v for k, v in c["values"].items()}})
            for c in d["candidates"]
        ]
        comparisons = [Comparison(**c) for c in d["comparisons"]]
        return cls(d["metric"], d["direction"], d["alpha"], candidates, comparisons)


def recorded(study: optuna.Study) -> Confirmation | None:
    """The confirmation a study holds, if it has one."""
    d = study.user_attrs.get(KEY)
    return Confirmation.from_dict(d) if d else None


def top_configurations(study: optuna.Study, cfg: Config) -> list[optuna.trial.FrozenTrial]:
    """The best `top_k` complete trials, each configuration once (a retried trial's params
    count once)."""
    ordered = sorted(
        trials.complete(study), key=lambda t: t.value, reverse=cfg.search.direction == "maximize"
    )
    seen, out = set(), []
    for t in ordered:
        key = tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[: cfg.search.confirm.top_k]


def confirm(
    cfg: Config,
    study: optuna.Study,
    url: str,
    splits: Splits | None = None,
    reporter: Reporter | None = None,
) -> Confirmation | None:
    """Bring the top configurations to `search.confirm.seeds` seeds, choose on the means and
    record the comparison; None when the study has no complete trial."""
    reporter = reporter or NullReporter()
    metric, wanted = cfg.search.metric, cfg.search.confirm.seeds
    candidates = []
    for trial in top_configurations(study, cfg):
        candidate = Candidate(
            number=trial.number,
            params=dict(trial.params),
            values=_known_values(study, trial, cfg),
            run_id=trial.user_attrs.get("mlflow_run_id"),
            model_run_id=trial.user_attrs.get("model_run_id")
            or trial.user_attrs.get("mlflow_run_id"),
        )
        trial_cfg = with_overrides(cfg, candidate.params)
        for seed in range(trial_cfg.trainer.seed, trial_cfg.trainer.seed + wanted):
            if seed in candidate.values:
                continue
            reporter.trial_started(trial.number, {**candidate.params, "seed": seed})
            result = train_config(
                with_overrides(trial_cfg, {"trainer.seed": seed, "tracking.log_model": False}),
                show_epochs(reporter, trial.number, trial_cfg.trainer.epochs),
                splits,
                parent_run_id=candidate.run_id,
                run_name=f"confirm-{trial.number:03d}-seed-{seed}",
                on_batch=lambda e, d, n, t=trial.number, k=trial_cfg.trainer.epochs: (
                    reporter.batch_ended(t, e, k, d, n)
                ),
                tags={
                    "optuna.study_name": study.study_name,
                    "confirm.trial": str(trial.number),
                    "seed": str(seed),
                },
            )
            candidate.values[seed] = float(result.final[metric])
            values = {str(k): v for k, v in candidate.values.items()}
            retrying(
                lambda v=values, n=trial.number: study.set_user_attr(f"{KEY}_values:{n}", v), url
            )
            reporter.seed_ended(trial.number, seed, candidate.values[seed])
        candidates.append(candidate)
    if not candidates:
        return None
    maximize = cfg.search.direction == "maximize"
    candidates.sort(key=lambda c: c.summary.mean, reverse=maximize)
    winner = candidates[0]
    comparisons = [
        compare(list(winner.values.values()), list(c.values.values())) for c in candidates[1:]
    ]
    result = Confirmation(
        metric, str(cfg.search.direction), cfg.search.confirm.alpha, candidates, comparisons
    )
    retrying(lambda: study.set_user_attr(KEY, result.as_dict()), url)
    return result


def _known_values(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, cfg: Config
) -> dict[int, float]:
    """The seeds a configuration already has: its trial's, and those an earlier (perhaps
    interrupted) confirmation trained."""
    values = {int(k): v for k, v in trial.user_attrs.get("seed_values", {}).items()}
    if not values and trial.value is not None:  # a trial from before seeds were recorded
        values = {int(with_overrides(cfg, dict(trial.params)).trainer.seed): trial.value}
    extra = study.user_attrs.get(f"{KEY}_values:{trial.number}", {})
    values.update({int(k): v for k, v in extra.items()})
    return values


def log_confirmation(cfg: Config, parent_run_id: str, result: Confirmation) -> None:
    """The confirmation on the study's parent run: confirmation.json and the chosen trial."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(cfg.tracking))
    client.log_dict(parent_run_id, result.as_dict(), "confirmation.json")
    s = result.winner.summary
    tags = {
        "confirmed.trial": str(result.winner.number),
        "confirmed.mlflow_run_id": str(result.winner.model_run_id),
        "confirmed.value": s.text(),
    }
    tracking.tag_run(parent_run_id, tags, cfg.tracking)
    client.log_metric(parent_run_id, "confirmed_value", s.mean)
