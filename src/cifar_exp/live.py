"""What a user sees while a study runs: the study (trials done of the target, elapsed time,
the best so far), the current trial (epochs done, its params, the last epoch's metrics) and
the current epoch (batches done), redrawn a few times a second, each line fitted to the
terminal's width (see `terminal`); finished trials and log lines print above it. A view: it
is told the numbers (`study.progress.Reporter`) and never reads a study itself."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from rich.console import Console, ConsoleOptions
from rich.progress import Progress, Task
from rich.progress_bar import ProgressBar
from rich.text import Text

from cifar_exp import logs
from cifar_exp.console import _fmt, confirmation_table
from cifar_exp.terminal import Piece, bar_width, fit_line

if TYPE_CHECKING:
    from cifar_exp.study.confirm import Confirmation
    from cifar_exp.study.progress import Progress as StudyProgress
    from cifar_exp.study.progress import TrialOutcome


def _params(params: dict[str, Any]) -> list[Piece]:
    """`optimizer.lr=0.01`, shortened to `lr=0.01` where the last part names it alone."""
    last = [k.rsplit(".", 1)[-1] for k in params]
    return [
        Piece.of(f"{k}={_fmt(v)}", f"{s}={_fmt(v)}" if last.count(s) == 1 and s != k else None)
        for (k, v), s in zip(params.items(), last, strict=True)
    ]


def _clock(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Live(Progress):
    """rich's Progress (its refresh, its clocks, the console it keeps clear) whose tasks are
    drawn as lines that fit the terminal by `draw(console, task, width, label_width)`."""

    def __init__(self, console: Console, draw: Any) -> None:
        self.draw = draw  # before rich's __init__, which draws once
        super().__init__(console=console, refresh_per_second=4)

    def get_renderables(self) -> Iterable[Any]:
        yield _Lines(self.draw, [t for t in self.tasks if t.visible])


class _Lines:
    def __init__(self, draw: Any, tasks: list[Task]) -> None:
        self.draw, self.tasks = draw, tasks

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterable[Text]:
        label_width = max((len(t.description) for t in self.tasks), default=0)
        for task in self.tasks:
            yield from self.draw(console, task, options.max_width, label_width)


def _bar(console: Console, task: Task) -> Any:
    def draw(width: int) -> Text:
        bar = ProgressBar(
            total=task.total,
            completed=task.completed,
            width=width,
            pulse=not task.total,
            animation_time=task.get_time(),
        )
        segments = console.render(bar, console.options.update(width=width))
        return Text.assemble(*((s.text, s.style) for s in segments if s.text != "\n"))

    return draw


class RichReporter:
    """A `study.progress.Reporter` drawing live progress on the console: the study (trials
    done of the target, elapsed time, best so far), the current trial (epochs done, its
    params, the last epoch's metrics) and the current epoch (batches done). Every line fits
    the terminal's width; log lines and finished trials print above it."""

    def __init__(self, console: Console, metric: str) -> None:
        self.console, self.metric = console, metric
        self.progress = _Live(console, self._draw)
        self.study_task = self.progress.add_task("study", total=None, visible=False, best=None)
        self.trial_task = self.progress.add_task(
            "trial", total=None, visible=False, params={}, metrics={}
        )
        self.batch_task = self.progress.add_task("epoch", total=None, visible=False, epoch=0)
        self._stack = ExitStack()

    def __enter__(self) -> RichReporter:
        self._stack.enter_context(logs.printing_through(self.console))
        self._stack.enter_context(self.progress)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # ----------------------------------------------------------------------- drawing

    def _draw(self, console: Console, task: Task, width: int, label_width: int) -> list[Text]:
        label = Text(task.description.ljust(label_width))
        f = task.fields
        if task.id == self.study_task:
            count = f"{int(task.completed)}/{int(task.total or 0)} trials"
            tail = [self._best(f["best"])]
        elif task.id == self.trial_task:
            count = f"{int(task.completed)}/{int(task.total) if task.total else '?'} epochs"
            tail = _params(f["params"]) + [
                Piece.of(f"{k} {v:.4f}", style="cyan") for k, v in f["metrics"].items()
            ]
        else:
            count, tail = f"{int(task.completed)}/{int(task.total or 0)} batches", []
        head = [label, Text(count), Text(_clock(task.elapsed), style="progress.elapsed")]
        return fit_line(head, tail, width, _bar(console, task), bar_width(width))

    def _best(self, best: tuple[float, int] | None) -> Piece:
        if best is None:
            return Piece.of("best: none yet")
        value, number = best
        return Piece.of(
            f"best {self.metric} {value:.4f} (trial {number})", f"best {value:.4f} (trial {number})"
        )

    def _print(self, head: list[Text], tail: list[Piece]) -> None:
        lines = fit_line(head, tail, self.console.width)
        self.console.print(Text("\n").join(lines), highlight=False)

    # ----------------------------------------------------------------------- Reporter

    def study_started(self, progress: StudyProgress) -> None:
        done, target = progress.finished, progress.target
        self.progress.reset(
            self.study_task,
            description=f"study {progress.study_name}",
            total=target,
            completed=min(done, target),
            visible=True,
        )
        self._update_best(progress)
        if done:
            q = progress.queued
            queued = (
                f"; {q} queued trial{'s' * (q > 1)} (a retry or a warm start) first" if q else ""
            )
            self.console.print(
                f"resuming study {progress.study_name!r}: {done} of {target} trials "
                f"already finished{queued}"
            )

    def _update_best(self, progress: StudyProgress) -> None:
        best = None if progress.best_value is None else (progress.best_value, progress.best_number)
        self.progress.update(self.study_task, completed=progress.finished, best=best)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.progress.reset(
            self.trial_task,
            description=f"trial {number}",
            total=None,
            visible=True,
            params=params,
            metrics={},
        )
        self.progress.update(self.batch_task, visible=False)

    def batch_ended(self, number: int, epoch: int, epochs: int, done: int, batches: int) -> None:
        p = self.progress
        if p.tasks[self.trial_task].total is None:
            p.update(self.trial_task, total=epochs)
        if p.tasks[self.batch_task].fields["epoch"] != epoch or not done:
            p.reset(self.batch_task, description=f"  epoch {epoch}", epoch=epoch, visible=True)
        p.update(self.batch_task, total=batches, completed=done)

    def epoch_ended(self, number: int, epoch: int, epochs: int, logs: dict) -> None:
        keys = [self.metric] + [k for k in ("val_loss", "loss") if k != self.metric]
        metrics = {k: float(logs[k]) for k in keys if k in logs}
        self.progress.update(self.trial_task, total=epochs, completed=epoch, metrics=metrics)

    def seed_ended(self, number: int, seed: int, value: float) -> None:
        self.progress.update(self.trial_task, visible=False)
        self.progress.update(self.batch_task, visible=False)
        head = [Text(f"confirm trial {number:3d}"), Text(f"seed {seed}")]
        self._print([*head, Text(f"{self.metric}={value:.4f}")], [])

    def confirmed(self, result: Confirmation) -> None:
        self.console.print(confirmation_table(result))
        for line in result.statements():
            self.console.print(f"  {line}", highlight=False)

    def trial_ended(self, trial: TrialOutcome, progress: StudyProgress) -> None:
        self._update_best(progress)
        self.progress.update(self.trial_task, visible=False)
        self.progress.update(self.batch_task, visible=False)
        state = trial.state
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        if trial.n_seeds > 1 and trial.value is not None:
            value += f" (mean of {trial.n_seeds} seeds)"
        color = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}.get(state, "white")
        if state == "PRUNED":
            state += f" at epoch {trial.pruned_at or '?'}"
        head = [Text(f"trial {trial.number:3d}"), Text(state, style=color)]
        tail = _params(trial.params)
        if trial.state == "FAIL":
            reason = (trial.fail_reason or "see MLflow").splitlines()[0]
            tail.insert(0, Piece.of(reason, style="red"))
        else:
            head.append(Text(f"{self.metric}={value}"))
        self._print(head, tail)
