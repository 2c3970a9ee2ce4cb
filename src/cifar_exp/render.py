"""Rendering a report: figures, the trial table, Markdown and a self-contained HTML page, all
from a `StudyRecord` gathered beforehand (see report.py). Nothing here reads MLflow or the
study storage, so what a report shows is exactly what was gathered."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from matplotlib import pyplot as plt

from cifar_exp import findings, pareto, plots, provenance
from cifar_exp.config import METRICS, Config, to_yaml
from cifar_exp.data import CLASS_NAMES
from cifar_exp.findings import TrialRow
from cifar_exp.pareto import BudgetAnswer
from cifar_exp.study.confirm import Confirmation
from cifar_exp.study.trials import directions, objectives
from cifar_exp.train import Evaluation
from cifar_exp.typeset import DASH, DPI, Numbered, md_table, shown_table, space_table
from cifar_exp.typeset import render_html as render_html  # report.py renders through here

# the reference table's learning rate and batch size, shown whether searched or not
TABLE_CONFIG = ("optimizer.lr", "trainer.batch_size")


@dataclass
class StudyRecord:
    """Everything a report shows, gathered from Optuna and MLflow."""

    study: optuna.Study  # an in-memory snapshot: reading it queries no storage
    rows: list[TrialRow]
    counts: dict[str, int]  # trials by state
    best: optuna.trial.FrozenTrial | None
    space: dict[str, dict[str, Any]]  # the distributions the trials were drawn from
    parent_run_id: str | None
    confirmation: Confirmation | None = None
    parent_tags: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # the trials' data.json record
    storage: str = ""  # credentials masked


def _number(text: str | None) -> float | int | str | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def trials_table(rows: list[TrialRow], cfg: Config) -> pd.DataFrame:
    """One row per trial, best first: the reference study's columns plus state, what became of
    the trial in words (`status`: "complete", "pruned at epoch 3", "failed: reason") and its
    duration; with several seeds per trial, each metric is their mean followed by the
    half-width of its 95 % interval (`<metric> ±`), and the number of seeds."""
    several = any(r.trial.user_attrs.get("n_seeds", 1) > 1 for r in rows)
    records = []
    for r in rows:
        t, last = r.trial, {k: (v[-1] if v else None) for k, v in r.history.items()}
        values: dict[str, Any] = {}
        for k in METRICS:
            values[k] = last.get(k)
            if several:  # the mean, then the half-width of its 95 % interval
                s = findings.metric_summary(r, k)
                ok = s is not None and s.ci_low is not None
                values[f"{k} ±"] = (s.ci_high - s.ci_low) / 2 if ok else None
        if several:
            values["seeds"] = t.user_attrs.get("n_seeds")
        if pareto.TRAIN_TIME in objectives(cfg.search):  # an objective: a column of its own
            values[pareto.TRAIN_TIME] = t.user_attrs.get(pareto.TRAIN_TIME)
        records.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "status": _status(r),
                **values,
                "epochs": len(r.history.get("loss") or []),
                **{k: _number(r.params.get(k)) for k in TABLE_CONFIG},
                **dict(t.params),
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    df = pd.DataFrame(records)
    if df.empty:
        return df
    ascending = directions(cfg.search)[0] == "minimize"  # the first objective, best first
    df["_rank"] = df["state"].map({"COMPLETE": 0, "PRUNED": 1}).fillna(2)
    df = df.sort_values(["_rank", objectives(cfg.search)[0]], ascending=[True, ascending])
    return df.drop(columns="_rank").reset_index(drop=True)


def _status(row: TrialRow) -> str:
    """What became of a trial, in words."""
    t = row.trial
    if t.state.name == "PRUNED":
        epoch = t.user_attrs.get("pruned_at_epoch") or len(row.history.get("loss") or [])
        return f"pruned at epoch {epoch}" if epoch else "pruned"
    if t.state.name == "FAIL":
        reason = str(t.user_attrs.get("fail_reason") or "").strip().splitlines()
        text = reason[0] if reason else "no reason recorded"
        return f"failed: {text[:60] + '…' if len(text) > 60 else text}"
    return t.state.name.lower() + _origin(t)


def _origin(t: optuna.trial.FrozenTrial) -> str:
    """Where a trial's parameters came from, when not from the sampler."""
    if "warm_start_from" in t.user_attrs:  # study/warm.py: "<study>#<trial>"
        return f" (warm start: {t.user_attrs['warm_start_from']})"
    retried = t.system_attrs.get("failed_trial")
    return f" (retry of trial {retried})" if retried is not None else ""


# --------------------------------------------------------------------------- figures


def _fig(figures: dict[str, Path], out: Path, name: str, fig: Any) -> None:
    path = out / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.04)
    plt.close(fig)
    figures[name] = path


def make_figures(
    record: StudyRecord, out: Path, test: Evaluation | None, metric: str = "val_accuracy"
) -> dict[str, Path]:
    """Every figure of the report, saved under `out/figures/`, keyed by file name."""
    figures: dict[str, Path] = {}
    best = _best_row(record)
    if best and best.history.get("loss"):
        _fig(figures, out, "learning_curves.png", plots.curves(best.history, best.std or None))
    curves, bands, stopped = {}, {}, set()
    for r in record.rows:
        label = f"trial {r.trial.number}"
        if r.trial.state.name in ("PRUNED", "FAIL") and r.history.get(metric):
            label += " (pruned)" if r.trial.state.name == "PRUNED" else " (failed)"
            stopped.add(label)
        curves[label], bands[label] = r.history.get(metric, []), r.std.get(metric, [])
    if any(curves.values()):
        _fig(figures, out, "all_curves.png", plots.overlay(curves, metric, bands, stopped))
    for name, fig in plots.study_figures(record.study, metric).items():
        _fig(figures, out, name, fig)
    if test:
        _fig(
            figures,
            out,
            "confusion_matrix.png",
            plots.confusion(test.confusion_matrix, CLASS_NAMES),
        )
    return figures


def _best_row(record: StudyRecord) -> TrialRow | None:
    number = record.best.number if record.best else None
    return next((r for r in record.rows if r.trial.number == number), None)


def _trial_command(study_command: str, params: dict[str, Any]) -> str:
    argv = shlex.split(study_command) if study_command else ["python", "-m", "cifar_exp", "sweep"]
    argv = ["train" if a == "sweep" else a for a in argv]
    return shlex.join([*argv, *(f"{k}={v}" for k, v in params.items())])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def render_markdown(
    cfg: Config,
    record: StudyRecord,
    test: Evaluation | None,
    figures: dict[str, Path],
    table: pd.DataFrame,
    budget: BudgetAnswer | None = None,
) -> str:
    """The report as Markdown, laid out as an appendix reads: the summary first, then the
    setup, the results with numbered tables and figures (the Pareto front, the best within
    `budget`), the test set and the provenance; figures referenced as `figures/<name>`."""
    s, rows, metric = cfg.search, record.rows, cfg.search.metric
    goals = ", ".join(f"`{k}` ({d})" for k, d in zip(objectives(s), directions(s), strict=True))
    num = Numbered(figures)
    searched = list(record.space)
    lines = [
        f"# Study `{record.study.study_name}`",
        "",
        f"_Report of a cifar-exp study, generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; "
        f"experiment `{cfg.experiment}`, {'objectives' if s.objectives else 'metric'} {goals}._",
        "",
        *findings.summary_section(
            cfg, rows, record.best, record.confirmation, test, searched, pareto.wall_seconds(rows)
        ),
        *findings.supports(cfg, rows, record.confirmation),
        "## Setup",
        "",
        f"Each trial trains the `{cfg.model.name}` network with `{cfg.optimizer.name}` for up to "
        f"{cfg.trainer.epochs} epochs on {_count(s.seeds, 'seed')} per configuration and reports "
        f"`{metric}` after its last epoch; `{s.sampler.name}` proposes the configurations "
        f"(seed {s.sampler.seed}) and {pareto.pruning(s)}.",
        "",
        *num.table(space_table(record.space), "The search space: what each trial drew from."),
    ]
    headers, cells, numeric = shown_table(table, metric) if not table.empty else ([], [], [])
    caption = (
        f"Every trial, best `{metric}` first: values after the trial's last epoch (the epoch "
        "a pruned trial stopped at); duration is the trial's own wall time."
    )
    lines += ["## Results", ""]
    lines += (
        num.table(md_table(headers, cells, numeric), caption) if headers else ["_No trials._", ""]
    )
    lines += pareto.front_section(record.study, metric, num)
    lines += pareto.budget_section(budget)
    lines += findings.confirmation_section(record.confirmation, num.table)
    if cfg.reference is not None:
        lines += findings.reference_section(cfg, rows, test.accuracy if test else None, num.table)
    best = _best_row(record)
    if best is not None:
        shown = best.trial.params.items()
        config = ", ".join(f"`{k}` = {findings.param_text(v)}" for k, v in shown)
        seeds = best.trial.user_attrs.get("n_seeds", 1)
        spread = f"; mean of {seeds} seeds, band ± one standard deviation" if best.std else ""
        lines += ["## Learning curves", ""]
        lines += num.figure(
            "learning_curves.png",
            f"Accuracy (a) and loss (b) per epoch of the best trial ({best.trial.number}: "
            f"{config}) on the training images and the validation images{spread}.",
        )
    lines += num.figure(
        "all_curves.png",
        f"`{metric}` per epoch of every trial; a pruned or failed trial is dashed and ends in "
        "a cross at its last recorded epoch (a trial that failed before its first epoch has "
        "no line).",
    )
    search = [
        ("optimization_history.png", f"Optimization history: each finished trial's `{metric}` "
         "(points) and the best so far (line), in the order the trials ran."),
        ("param_importances.png", f"Importance of each hyperparameter for `{metric}` "
         "(Optuna's fANOVA over the complete trials; rough with few trials)."),
        ("parallel_coordinate.png", f"Parallel coordinates: one line per complete trial from "
         f"its `{metric}` (left axis, line colour) through its hyperparameter values."),
        ("slice.png", f"`{metric}` against each hyperparameter, one point per complete trial; "
         "colour gives the trial number."),
    ]  # fmt: skip
    if any(name in figures for name, _ in search):
        lines += ["## Search", ""]
        for name, text in search:
            lines += num.figure(name, text)
    lines += _test_section(test, num)
    lines += _provenance_section(cfg, record)
    return "\n".join(lines) + "\n"


def _test_section(test: Evaluation | None, num: Numbered) -> list[str]:
    if not test:
        return ["## Test set", "", "_No finished trial with a logged model to evaluate._", ""]
    intervals = [f"{lo:.3f} to {hi:.3f}" if lo is not None else DASH for lo, hi in (
        ci or (None, None) for ci in test.per_class_intervals()
    )]  # fmt: skip
    per_class = [
        [name, f"{acc:.3f}", ci, f"{sum(row):,}"]
        for name, acc, ci, row in zip(
            CLASS_NAMES, test.per_class_accuracy, intervals, test.confusion_matrix, strict=True
        )
    ]
    low, high = test.accuracy_interval()
    table = md_table(
        ["class", "accuracy", "95 % CI (Wilson)", "images"], per_class, [False, True, True, True]
    )
    return [
        "## Best model on the held-out test set",
        "",
        f"Evaluated once (MLflow run `{test.run_id}`): **test accuracy "
        f"{test.accuracy:.4f}** (95 % CI {low:.4f} to {high:.4f}, Wilson, {test.n:,} images; "
        f"one model, one seed), test loss {test.loss:.4f}.",
        "",
        *num.table(table, "Test accuracy of the best model per class."),
        *num.figure(
            "confusion_matrix.png",
            f"Confusion matrix of the best model on the {test.n:,} test images: images of each "
            "true class (rows) by predicted class (columns).",
        ),
    ]


def _data_line(data: dict[str, Any]) -> str:
    """Where the trials' data came from, as their runs recorded it (never this environment)."""
    if not data:
        return "not recorded (the study's runs hold no data.json)"
    where = f"<{data['url']}>" if data.get("url") else f"`{data.get('source', '?')}`"
    if data.get("validation") == "test":
        split = "validated on the test set"
    else:
        split = f"{data.get('n_val', 0):,} held out for validation"
    seed = data.get("split_seed", "?")
    sizes = f"{data.get('n_train', 0):,} training and {data.get('n_test', 0):,} test images"
    return f"{where} (sha256 `{data.get('sha256', '?')}`): {sizes}, {split} (split seed {seed})"


def _with_data(command: str, data: dict[str, Any]) -> str:
    """The recorded command with the data source it trained on (a local copy's path), so
    re-running it does not depend on CIFAR10_PATH in the reader's environment."""
    if not data.get("source") or data.get("url") or "data.path=" in command:
        return command
    return f"{command} {shlex.quote('data.path=' + data['source'])}"


def _provenance_section(cfg: Config, record: StudyRecord) -> list[str]:
    tags = record.parent_tags
    versions = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    versions = versions or provenance.versions()
    command = _with_data(tags.get("command") or "python -m cifar_exp sweep", record.data)
    out = [
        "## Provenance",
        "",
        f"- git commit: `{tags.get('git_commit', provenance.git_info()['commit'])}` "
        f"(dirty: {tags.get('git_dirty', provenance.git_info()['dirty'])})",
        f"- hardware: {tags.get('hardware.cpu', '?')} x{tags.get('hardware.cpu_count', '?')}"
        f"; GPUs: {tags.get('hardware.gpus', '?')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- data: {_data_line(record.data)}",
        f"- seeds: trainer.seed={cfg.trainer.seed}, sampler seed={cfg.search.sampler.seed}",
        f"- storage: `{record.storage}`; MLflow parent run: `{record.parent_run_id}`",
        "",
        "Re-run the study (resumes it if the storage still holds it):",
        "",
        "```bash",
        command,
        "```",
        "",
        "Re-run one trial: `python -m cifar_exp reproduce <MLflow run id>`, or train it:",
        "",
        "```bash",
    ]
    for r in record.rows:
        if r.trial.state.name in ("COMPLETE", "PRUNED"):
            out.append(f"# trial {r.trial.number} (run {r.run_id})")
            out.append(_trial_command(command, r.trial.params))
    out += [
        "```",
        "",
        "<details><summary>Resolved config</summary>",
        "",
        "```yaml",
        to_yaml(cfg).strip(),
        "```",
        "",
        "</details>",
    ]
    return out
