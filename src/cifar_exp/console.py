"""What a user sees: progress while a study runs (a study bar with trials finished / target
and the best so far, a bar for the current trial's epochs with its params and metrics, one
line per trial), and the result tables of every command. A view: it is given results and
numbers, and never reads a study or a run itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from cifar_exp.predict import Prediction
    from cifar_exp.report import ReportResult
    from cifar_exp.reproduce import Reproduction
    from cifar_exp.study.progress import Progress as StudyProgress
    from cifar_exp.study.progress import TrialOutcome
    from cifar_exp.study.sweep import SweepSummary
    from cifar_exp.train import Evaluation, TrainResult


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RichReporter:
    """A `study.progress.Reporter` drawing rich progress bars on the console."""

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

    def _best(self, progress: StudyProgress) -> str:
        if progress.best_value is None:
            return "best: -"
        return f"best {self.metric} {progress.best_value:.4f} (trial {progress.best_number})"

    def study_started(self, progress: StudyProgress) -> None:
        done, target = progress.finished, progress.target
        self.progress.update(
            self.study_task,
            description=f"study {progress.study_name}",
            total=target,
            completed=min(done, target),
            info=self._best(progress),
        )
        if done:
            self.console.print(
                f"resuming study {progress.study_name!r}: {done} of {target} trials "
                "already finished"
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

    def trial_ended(self, trial: TrialOutcome, progress: StudyProgress) -> None:
        self.progress.update(
            self.study_task, completed=progress.finished, info=self._best(progress)
        )
        self.progress.update(self.trial_task, visible=False)
        state = trial.state
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        extra = ""
        if state == "PRUNED":
            extra = f" at epoch {trial.pruned_at or '?'}"
        elif state == "FAIL":
            extra = f": {trial.fail_reason or 'see MLflow'}".splitlines()[0]
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        color = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}.get(state, "white")
        self.console.print(
            f"trial {trial.number:3d} [{color}]{state}{extra}[/]  {self.metric}={value}  {params}",
            highlight=False,
        )


# --------------------------------------------------------------------------- results


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in rows:
        table.add_row(key, value)
    return table


def show_train(console: Console, out: TrainResult, uri: str) -> None:
    rows = [(k, f"{v:.4f}") for k, v in out.final.items()]
    if out.test:
        rows += [
            ("test_loss", f"{out.test.loss:.4f}"),
            ("test_accuracy", f"{out.test.accuracy:.4f}"),
        ]
    rows += [("precision", out.precision), ("train_time (s)", f"{out.train_time:.1f}")]
    console.print(_table("result", rows))
    if out.run_id:
        console.print(
            f"MLflow run [bold]{out.run_id}[/] in {uri}\n"
            f"browse: mlflow ui --backend-store-uri {uri}"
        )


def show_sweep(console: Console, out: SweepSummary, metric: str, uri: str) -> None:
    rows = [
        ("finished trials", f"{out.finished} of {out.target}"),
        ("by state", ", ".join(f"{k.lower()} {v}" for k, v in out.counts.items())),
    ]
    if out.best:
        b = out.best
        rows.append((f"best {metric}", f"{b.value:.4f} (trial {b.number})"))
        rows += [(f"  {k}", str(v)) for k, v in b.params.items()]
    reg = out.registered
    if reg:
        note = "now the champion" if reg.champion else "the champion stays"
        rows.append(("registered model", f"{reg.name} version {reg.version} ({note})"))
    rows.append(("storage", out.storage))
    if out.parent_run_id:
        rows.append(("MLflow parent run", out.parent_run_id))
    console.print(_table(f"study {out.study_name}", rows))
    if out.stopped != "complete":
        console.print(
            f"[yellow]stopped early:[/] {out.stopped}; run the same command again "
            "to continue the study"
        )
    if out.parent_run_id:
        browse = uri if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"
        console.print(f"next: python -m cifar_exp report {out.study_name}   |   {browse}")


def show_report(console: Console, out: ReportResult) -> None:
    table = out.table
    if not table.empty:
        shown = table.head(10)
        t = Table(title="trials (best first)", title_justify="left")
        for col in shown.columns:
            t.add_column(col, justify="right")
        for _, row in shown.iterrows():
            t.add_row(*(_fmt(v) for v in row))
        console.print(t)
    if out.test:
        console.print(
            f"best model on the test set: accuracy {out.test.accuracy:.4f}, "
            f"loss {out.test.loss:.4f}"
        )
    console.print(f"report: {out.html}\n        {out.markdown}")


def show_reproduce(console: Console, out: Reproduction) -> None:
    t = Table(title=f"reproduction of {out.original}", title_justify="left")
    for col in ("metric", "original", "reproduction", "difference"):
        t.add_column(col, justify="right")
    for key, a, b, d in out.rows:
        t.add_row(key, f"{a:.6f}", f"{b:.6f}", f"{d:+.2e}" if d else "0")
    console.print(t)
    for w in out.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if out.identical:
        console.print("[green]identical[/]: every metric repeats exactly")
    elif out.within_tolerance:
        console.print("[green]agrees[/] within the tolerance of 1e-6")
    else:
        console.print(
            "[yellow]differs[/] beyond the tolerance of 1e-6 (a different machine, "
            "software or non-deterministic ops; see the warnings)"
        )
    if out.reproduction:
        console.print(f"new MLflow run {out.reproduction} (tag reproduces={out.original})")


def show_evaluate(console: Console, out: Evaluation) -> None:
    from cifar_exp.data import CLASS_NAMES

    console.print(f"model: {out.model}")
    console.print(f"test accuracy {out.accuracy:.4f}, test loss {out.loss:.4f}")
    t = Table(title="per class", title_justify="left")
    t.add_column("class")
    t.add_column("accuracy", justify="right")
    for name, acc in zip(CLASS_NAMES, out.per_class_accuracy, strict=True):
        t.add_row(name, f"{acc:.3f}")
    console.print(t)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    cm.add_column("")
    for name in CLASS_NAMES:
        cm.add_column(name[:5], justify="right")
    for name, row in zip(CLASS_NAMES, out.confusion_matrix, strict=True):
        cm.add_row(name, *(str(v) for v in row))
    console.print(cm)
    if out.run_id:
        console.print(f"logged as MLflow run {out.run_id}")


def show_predictions(
    console: Console, results: list[Prediction], source: str, as_json: bool
) -> None:
    """Top classes per image as a table (or JSON); failures as one `error:` line each."""
    import json

    if as_json:
        payload = {"model": source, "results": [r.as_dict() for r in results]}
        console.print_json(json.dumps(payload))
        return
    console.print(f"model: {source}", highlight=False)
    ok = [r for r in results if not r.error]
    if ok:
        t = Table(title_justify="left")
        t.add_column("image", overflow="fold")
        for i in range(len(ok[0].top)):
            t.add_column(f"#{i + 1}")
        for r in ok:
            t.add_row(r.image, *(f"{c} {p:.1%}" for c, p in r.top))
        console.print(t)
    from rich.text import Text

    err = Console(stderr=True)
    for r in results:
        if r.error:
            err.print(Text.assemble(("error: ", "bold red"), r.error), soft_wrap=True)
