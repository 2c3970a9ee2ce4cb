"""What a display is told while a study runs. The sweep computes the numbers (reading the
storage with its retries); a display (`console.RichReporter`) only shows them and never
queries the study itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import optuna


@dataclass(frozen=True)
class Progress:
    """Where a study stands: finished trials against the target, and the best so far."""

    study_name: str
    finished: int
    target: int
    best_value: float | None = None
    best_number: int | None = None
    queued: int = 0  # WAITING trials (a retry's or a warm start's parameters): they run first


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended: its state name, value, params, and why it stopped early."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    params: dict[str, Any]
    pruned_at: int | None = None
    fail_reason: str | None = None
    n_seeds: int = 1

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> TrialOutcome:
        return cls(
            number=trial.number,
            state=trial.state.name,
            value=trial.values[0] if trial.values else None,  # the first objective's
            params=dict(trial.params),
            pruned_at=trial.user_attrs.get("pruned_at_epoch"),
            fail_reason=trial.user_attrs.get("fail_reason"),
            n_seeds=trial.user_attrs.get("n_seeds", 1),
        )


class Reporter(Protocol):
    """What the CLI shows while a study runs (all no-ops in `NullReporter`). Epochs count
    from 1; `batch_ended` comes a few times per second at most
    (`callbacks.EpochHook`), with the
    batches done in the current epoch out of `batches`."""

    def study_started(self, progress: Progress) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None: ...
    def batch_ended(
        self, number: int, epoch: int, epochs: int, done: int, batches: int
    ) -> None: ...
    def trial_ended(self, trial: TrialOutcome, progress: Progress) -> None: ...
    def seed_ended(self, number: int, seed: int, value: float) -> None: ...
    def confirmed(self, result: Any) -> None: ...


class NullReporter:
    def study_started(self, progress: Progress) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None: ...
    def batch_ended(
        self, number: int, epoch: int, epochs: int, done: int, batches: int
    ) -> None: ...
    def trial_ended(self, trial: TrialOutcome, progress: Progress) -> None: ...
    def seed_ended(self, number: int, seed: int, value: float) -> None: ...
    def confirmed(self, result: Any) -> None: ...
