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
    from cifar_exp.study.confirm import Confirmation
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

    def seed_ended(self, number: int, seed: int, value: float) -> None:
        self.progress.update(self.trial_task, visible=False)
        self.console.print(
            f"confirm trial {number:3d}  seed {seed}  {self.metric}={value:.4f}", highlight=False
        )

    def confirmed(self, result: Confirmation) -> None:
        self.console.print(confirmation_table(result))
        for line in result.statements():
            self.console.print(f"  {line}", highlight=False)

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
        if trial.n_seeds > 1 and trial.value is not None:
            value += f" (mean of {trial.n_seeds} seeds)"
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


def _with_interval(test: Evaluation) -> str:
    low, high = test.accuracy_interval()
    return f"{test.accuracy:.4f} (95 % CI {low:.4f}-{high:.4f}, {test.n} images)"


def show_train(console: Console, out: TrainResult, uri: str) -> None:
    rows = [(k, f"{v:.4f}") for k, v in out.final.items()]
    if out.test:
        rows += [
            ("test_loss", f"{out.test.loss:.4f}"),
            ("test_accuracy", _with_interval(out.test)),
        ]
    rows += [("precision", out.precision), ("train_time (s)", f"{out.train_time:.1f}")]
    console.print(_table("result (one run, seed " + str(out.seed) + ")", rows))
    if out.run_id:
        console.print(
            f"MLflow run [bold]{out.run_id}[/] in {uri}\n"
            f"browse: mlflow ui --backend-store-uri {uri}"
        )


def confirmation_table(result: Confirmation) -> Table:
    """The confirmed configurations, best first: seeds, mean ± 95 % CI, difference from the
    winner and Welch's p-value."""
    t = Table(title=f"confirmation: {result.metric}, best first", title_justify="left")
    for col in ("trial", "params", "seeds", "mean ± 95 % CI", "vs best", "p"):
        t.add_column(col, justify="right" if col != "params" else "left", overflow="fold")
    comparisons = [None, *result.comparisons]
    for c, comp in zip(result.candidates, comparisons, strict=True):
        s = c.summary
        ci = (
            f"{s.mean:.4f} ± {(s.ci_high - s.ci_low) / 2:.4f}"
            if s.ci_low is not None
            else f"{s.mean:.4f}"
        )
        diff = "-" if comp is None else f"{comp.diff:+.4f}"
        p = "-" if comp is None or comp.p_value is None else f"{comp.p_value:.3g}"
        params = "  ".join(f"{k}={_fmt(v)}" for k, v in c.params.items())
        t.add_row(str(c.number), params, str(s.n), ci, diff, p)
    return t


def show_sweep(console: Console, out: SweepSummary, metric: str, uri: str) -> None:
    rows = [
        ("finished trials", f"{out.finished} of {out.target}"),
        ("by state", ", ".join(f"{k.lower()} {v}" for k, v in out.counts.items())),
    ]
    if out.best:
        b = out.best
        how = b.summary.text() if b.summary else f"{b.value:.4f}"
        label = "confirmed best" if out.confirmation else "best"
        rows.append((f"{label} {metric}", f"{how}, trial {b.number}"))
        rows += [(f"  {k}", str(v)) for k, v in b.params.items()]
    if out.confirmation:
        rows += [
            ("  " if i else "confirmation", s) for i, s in enumerate(out.confirmation.statements())
        ]
    reg = out.registered
    if reg:
        rows.append(("registered model", f"{reg.name} version {reg.version}: {reg.decision}"))
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
        low, high = out.test.accuracy_interval()
        console.print(
            f"best model on the test set: accuracy {out.test.accuracy:.4f} (one model; 95 % CI "
            f"{low:.4f}-{high:.4f}, Wilson, {out.test.n} images), loss {out.test.loss:.4f}"
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
    r = out.replication
    if r is not None:
        t = Table(
            title=f"replication with {len(r.seeds)} new seeds ({', '.join(map(str, r.seeds))})",
            title_justify="left",
        )
        for col in ("metric", "original", "replication mean", "95 % prediction interval", ""):
            t.add_column(col, justify="right")
        for a in r.audits:
            mean = sum(a.values) / len(a.values)
            interval = f"{a.interval[0]:.4f} to {a.interval[1]:.4f}" if a.interval else "-"
            verdict = "[green]inside[/]" if a.inside else "[red]outside[/]"
            t.add_row(a.metric, f"{a.original:.4f}", f"{mean:.4f}", interval, verdict)
        console.print(t)
        if r.consistent:
            console.print("[green]consistent[/]: every original value lies inside the interval")
        else:
            console.print(
                "[red]not consistent[/]: an original value lies outside what runs of this "
                "configuration give (95 % prediction interval)"
            )


def show_evaluate(console: Console, out: Evaluation) -> None:
    from cifar_exp.data import CLASS_NAMES

    console.print(f"model: {out.model}", highlight=False)
    low, high = out.accuracy_interval()
    console.print(
        f"test accuracy {out.accuracy:.4f} (95 % CI {low:.4f}-{high:.4f}, Wilson, "
        f"{out.n} images), test loss {out.loss:.4f}"
    )
    t = Table(title="per class", title_justify="left")
    t.add_column("class")
    t.add_column("accuracy", justify="right")
    t.add_column("95 % CI", justify="right")
    for name, acc, ci in zip(
        CLASS_NAMES, out.per_class_accuracy, out.per_class_intervals(), strict=True
    ):
        t.add_row(name, f"{acc:.3f}", f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-")
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
