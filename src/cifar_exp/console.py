"""What a user sees at the end of every command: its results, as tables that fit the terminal
(the live display of a study is in `live`). A view: it is given results and numbers, and never
reads a study or a run itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cifar_exp.terminal import Column, fit_table

if TYPE_CHECKING:
    import pandas as pd

    from cifar_exp.model_card import ModelCard
    from cifar_exp.predict import Prediction
    from cifar_exp.report import ReportResult
    from cifar_exp.reproduce import Reproduction
    from cifar_exp.study.confirm import Confirmation
    from cifar_exp.study.sweep import SweepSummary
    from cifar_exp.train import Evaluation, TrainResult


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- results


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a long path or URL folds rather than losing its end
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
        console.print(f"MLflow run [bold]{out.run_id}[/] in {uri}\nbrowse: python -m cifar_exp ui")


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


def show_sweep(
    console: Console, out: SweepSummary, metric: str, uri: str, stores: str = ""
) -> None:
    """The study's summary table, what stopped it, and the commands to look at it (`stores`:
    the overrides that find its stores, e.g. ` tracking.dir=runs`)."""
    rows = [
        ("finished trials", f"{out.finished} of {out.target}"),
        ("by state", ", ".join(f"{k.lower()} {v}" for k, v in out.counts.items())),
    ]
    if out.best:
        b = out.best
        how = b.summary.text() if b.summary else f"{b.value:.4f}"
        label = "confirmed best" if out.confirmation else "best"
        if out.front:  # of a multi-objective study: the front's best on the first objective
            metric, label = out.objectives[0], "best on the front:"
        rows.append((f"{label} {metric}", f"{how}, trial {b.number}"))
        rows += [(f"  {k}", _fmt(v)) for k, v in b.params.items()]
    for i, f in enumerate(out.front):
        shown = [
            f"{k} {v:.1f} s" if k == "train_time" else f"{k} {v:.4f}" for k, v in f.values.items()
        ]
        rows.append(("" if i else "Pareto front", f"trial {f.number}: {', '.join(shown)}"))
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
    if "failed in a row" in out.stopped:  # the same command would fail the same way
        console.print(
            f"[yellow]stopped early:[/] {out.stopped}; their reasons are in `report "
            f"{out.study_name}` and MLflow: mend the cause, then run the command again"
        )
    elif out.stopped != "complete":
        console.print(
            f"[yellow]stopped early:[/] {out.stopped}; run the same command again "
            "to continue the study"
        )
    if out.parent_run_id:
        browse = uri if uri.startswith("http") else f"python -m cifar_exp ui{stores}"
        # a line each: a command cut by the terminal's wrap cannot be copied whole
        console.print(
            f"next:   python -m cifar_exp report {out.study_name}{stores}", soft_wrap=True
        )
        console.print(f"browse: {browse}", soft_wrap=True)


# columns of the trial table by importance: kept first when the terminal is narrow
RANKS = {"trial": 0, "val_accuracy": 1, "state": 2, "status": 2, "seeds": 3, "val_loss": 6}
RANKS |= {"accuracy": 7}
RANKS |= {"loss": 8, "epochs": 9, "duration_s": 10}
PARAM_RANK = 4  # a searched value: after the metric, state and seeds


def _cell(value: Any, digits: int = 4) -> str:
    """One table cell: `-` for a missing value, integers whole, metrics to `digits` decimals,
    other numbers (params) to 4 significant digits."""
    if value is None or value != value:  # None or NaN
        return "-"
    if isinstance(value, float) and value.is_integer() and digits < 0:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits >= 0 else f"{value:.4g}"
    return str(value).lower() if isinstance(value, str) and value.isupper() else str(value)


def trial_columns(table: pd.DataFrame) -> list[Column]:
    """The trial table's columns for a terminal: a metric with its `±` column merged into
    `mean ± half-width`, params under their short names where unique, the duration in s."""
    names = [c for c in table.columns if not str(c).endswith(" ±")]
    if "status" in names:  # "pruned at epoch 3" says what "PRUNED" does, and more
        names.remove("state")
    short = [str(c).rsplit(".", 1)[-1] for c in names]
    columns = []
    for name, brief in zip(names, short, strict=True):
        values = table[name].tolist()
        if name in ("trial", "seeds", "epochs"):
            cells = [_cell(v, -1) for v in values]
        elif name == "duration_s":
            name, cells = "time (s)", [_cell(v, 1) for v in values]
            brief = name
        elif f"{name} ±" in table.columns:
            cells = [
                _cell(v) + ("" if h is None or h != h or v != v else f" ± {h:.4f}")
                for v, h in zip(values, table[f"{name} ±"], strict=True)
            ]
        elif name in RANKS:
            cells = [_cell(v) for v in values]
        else:  # a searched value
            cells = [_cell(v, -1) for v in values]
        header = brief if short.count(brief) == 1 else str(name)
        rank = RANKS.get(str(name), RANKS["duration_s"] if name == "time (s)" else PARAM_RANK)
        columns.append(
            Column(header, cells, rank, "left" if name in ("state", "status") else "right")
        )
    return columns


def show_report(console: Console, out: ReportResult) -> None:
    table = out.table
    if not table.empty:
        shown = table.head(10)
        title = f"trials, best first ({len(shown)} of {len(table)})"
        console.print(fit_table(console, title, trial_columns(shown)))
    if out.budget is not None:
        console.print(out.budget.text().replace("`", ""), highlight=False)
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
    console: Console, results: list[Prediction], card: ModelCard, as_json: bool
) -> None:
    """The model (reference, test accuracy, a warning when near chance), then the top classes
    per image as a table (or all of it as JSON); failures as one `error:` line each."""
    import json

    if as_json:
        payload = {"model": card.as_dict(), "results": [r.as_dict() for r in results]}
        console.print_json(json.dumps(payload))
        return
    console.print(f"model: {card.reference_text()}", highlight=False)
    console.print(card.accuracy_text(), highlight=False)
    if card.warning():
        console.print(f"[bold yellow]warning:[/] {card.warning()}", highlight=False)
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
