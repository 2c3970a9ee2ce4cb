"""What a user sees while a study runs: a study bar (trials finished / target, best so far),
a bar for the current trial's epochs with its params and metrics, and one line per trial."""

from __future__ import annotations

from typing import Any

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cifar_exp.search import FINISHED


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RichReporter:
    """A `search.Reporter` drawing rich progress bars on the console."""

    def __init__(self, console: Console, metric: str) -> None:
        self.console, self.metric = console, metric
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self.study_task = self.progress.add_task("study", total=1, info="")
        self.trial_task = self.progress.add_task("trial", total=1, info="", visible=False)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _best(self, study: optuna.Study) -> str:
        try:
            best = study.best_trial
        except ValueError:
            return "best: -"
        return f"best {self.metric} {best.value:.4f} (trial {best.number})"

    def study_started(self, study: optuna.Study, target: int) -> None:
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.progress.update(
            self.study_task,
            description=f"study {study.study_name}",
            total=target,
            completed=min(done, target),
            info=self._best(study),
        )
        if done:
            self.console.print(
                f"resuming study {study.study_name!r}: {done} of {target} trials already finished"
            )

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        self.progress.update(
            self.trial_task,
            description=f"trial {number}",
            completed=0,
            total=None,
            visible=True,
            info=text,
        )
        self._params = text

    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None:
        shown = "  ".join(
            f"{k} {float(logs[k]):.4f}" for k in ("loss", "val_loss", self.metric) if k in logs
        )
        self.progress.update(
            self.trial_task, total=epochs, completed=epoch, info=f"{self._params}  |  {shown}"
        )

    def trial_ended(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.progress.update(self.study_task, completed=done, info=self._best(study))
        self.progress.update(self.trial_task, visible=False)
        state = trial.state.name
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        extra = ""
        if state == "PRUNED":
            extra = f" at epoch {trial.user_attrs.get('pruned_at_epoch', '?')}"
        elif state == "FAIL":
            extra = f": {trial.user_attrs.get('fail_reason', 'see MLflow')}".splitlines()[0]
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        color = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}.get(state, "white")
        self.console.print(
            f"trial {trial.number:3d} [{color}]{state}{extra}[/]  {self.metric}={value}  {params}",
            highlight=False,
        )
