"""Rendering a report: figures, the trial table, Markdown and a self-contained HTML page, all
from a `StudyRecord` gathered beforehand (see report.py). Nothing here reads MLflow or the
study storage, so what a report shows is exactly what was gathered."""

from __future__ import annotations

import base64
import html
import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from matplotlib import pyplot as plt
from omegaconf import OmegaConf

from cifar_exp import findings, plots, provenance
from cifar_exp.config import METRICS, Config, to_yaml
from cifar_exp.data import CLASS_NAMES
from cifar_exp.findings import TrialRow
from cifar_exp.study.confirm import Confirmation
from cifar_exp.train import Evaluation

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
    data_sha256: str = ""
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
    """One row per trial, best first: the reference study's columns plus state and duration;
    with several seeds per trial, each metric is their mean followed by the half-width of its
    95 % interval (`<metric> ±`), and the number of seeds."""
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
        records.append(
            {
                "trial": t.number,
                "state": t.state.name,
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
    ascending = str(cfg.search.direction) == "minimize"
    df["_rank"] = df["state"].map({"COMPLETE": 0, "PRUNED": 1}).fillna(2)
    df = df.sort_values(["_rank", cfg.search.metric], ascending=[True, ascending])
    return df.drop(columns="_rank").reset_index(drop=True)


# --------------------------------------------------------------------------- render


def _fig(figures: dict[str, Path], out: Path, name: str, fig: Any) -> None:
    path = out / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    figures[name] = path


def make_figures(record: StudyRecord, out: Path, test: Evaluation | None) -> dict[str, Path]:
    figures: dict[str, Path] = {}
    number = record.best.number if record.best else None
    best = next((r for r in record.rows if r.trial.number == number), None)
    if best and best.history.get("loss"):
        for metric in ("accuracy", "loss"):
            title = f"best trial ({best.trial.number}): {metric} per epoch"
            if best.std:
                title += f", mean ± std of {best.trial.user_attrs.get('n_seeds')} seeds"
            curve = plots.curve(best.history, metric, title, std=best.std or None)
            _fig(figures, out, f"best_{metric}.png", curve)
    curves = {f"trial {r.trial.number}": r.history.get("val_accuracy", []) for r in record.rows}
    bands = {f"trial {r.trial.number}": r.std.get("val_accuracy", []) for r in record.rows}
    if any(curves.values()):
        overlay = plots.overlay(curves, "val_accuracy", bands)
        _fig(figures, out, "all_val_accuracy.png", overlay)
    for name, fig in plots.study_figures(record.study).items():
        _fig(figures, out, name, fig)
    if test:
        _fig(
            figures,
            out,
            "confusion_matrix.png",
            plots.confusion(test.confusion_matrix, CLASS_NAMES),
        )
    return figures


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g") if not df.empty else "_no trials_"


def _trial_command(study_command: str, params: dict[str, Any]) -> str:
    argv = shlex.split(study_command) if study_command else ["python", "-m", "cifar_exp", "sweep"]
    argv = ["train" if a == "sweep" else a for a in argv]
    return shlex.join([*argv, *(f"{k}={v}" for k, v in params.items())])


def render_markdown(
    cfg: Config,
    record: StudyRecord,
    test: Evaluation | None,
    figures: dict[str, Path],
    table: pd.DataFrame,
) -> str:
    """The report as Markdown; figures referenced as `figures/<name>`."""
    s, study, rows = cfg.search, record.study, record.rows
    starts = [r.trial.datetime_start for r in rows if r.trial.datetime_start]
    ends = [r.trial.datetime_complete for r in rows if r.trial.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    fig = lambda name, alt: f"![{alt}](figures/{name})\n" if name in figures else ""  # noqa: E731
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"_Report generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by cifar-exp._",
        "",
        "## Study",
        "",
        f"- experiment: `{cfg.experiment}`; metric: `{s.metric}` ({s.direction})",
        f"- sampler: `{s.sampler.name}` (seed {s.sampler.seed}); pruner: `{s.pruner.name}`",
        f"- trials: {len(rows)} ("
        + ", ".join(f"{v} {k.lower()}" for k, v in record.counts.items())
        + f"); target {s.n_trials}",
        f"- wall time: {wall / 60:.1f} min",
        "- search space:",
        "",
        "```yaml",
        OmegaConf.to_yaml(OmegaConf.create(record.space)).strip(),
        "```",
        "",
        *findings.supports(cfg, rows, record.confirmation),
        "## Trials (best first)",
        "",
        _md_table(table),
        "",
        *findings.confirmation_section(record.confirmation),
    ]
    if cfg.reference is not None:
        lines += findings.reference_section(cfg, rows, test.accuracy if test else None)
    lines += [
        "## Learning curves",
        "",
        fig("best_accuracy.png", "best trial accuracy per epoch"),
        fig("best_loss.png", "best trial loss per epoch"),
        fig("all_val_accuracy.png", "validation accuracy of every trial"),
        "## Search",
        "",
        fig("optimization_history.png", "optimization history"),
        fig("param_importances.png", "parameter importances"),
        fig("parallel_coordinate.png", "parallel coordinates"),
        fig("slice.png", "slice plot"),
    ]
    lines += _test_section(test, figures)
    lines += _provenance_section(cfg, record)
    return "\n".join(lines) + "\n"


def _test_section(test: Evaluation | None, figures: dict[str, Path]) -> list[str]:
    if not test:
        return ["## Test set", "", "_No finished trial with a logged model to evaluate._", ""]
    intervals = [f"{lo:.3f} to {hi:.3f}" if lo is not None else "-" for lo, hi in (
        ci or (None, None) for ci in test.per_class_intervals()
    )]  # fmt: skip
    per_class = pd.DataFrame(
        {"class": CLASS_NAMES, "accuracy": test.per_class_accuracy, "95 % CI": intervals}
    )
    low, high = test.accuracy_interval()
    return [
        "## Best model on the held-out test set",
        "",
        f"Evaluated once (MLflow run `{test.run_id}`): **test accuracy "
        f"{test.accuracy:.4f}** (95 % CI {low:.4f} to {high:.4f}, Wilson, {test.n} images; "
        f"one model, one seed), test loss {test.loss:.4f}.",
        "",
        per_class.to_markdown(index=False, floatfmt=".3f"),
        "",
        "![confusion matrix](figures/confusion_matrix.png)\n"
        if "confusion_matrix.png" in figures
        else "",
    ]


def _provenance_section(cfg: Config, record: StudyRecord) -> list[str]:
    tags, sha = record.parent_tags, record.data_sha256
    versions = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    versions = versions or provenance.versions()
    command = tags.get("command") or "python -m cifar_exp sweep"
    out = [
        "## Provenance",
        "",
        f"- git commit: `{tags.get('git_commit', provenance.git_info()['commit'])}` "
        f"(dirty: {tags.get('git_dirty', provenance.git_info()['dirty'])})",
        f"- hardware: {tags.get('hardware.cpu', '?')} x{tags.get('hardware.cpu_count', '?')}"
        f"; GPUs: {tags.get('hardware.gpus', '?')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        f"- data: `{cfg.data.path or 'official download'}` (sha256 `{sha or '?'}`), "
        f"validation: {cfg.data.validation}",
        f"- seeds: trainer.seed={cfg.trainer.seed}, data.split_seed={cfg.data.split_seed}, "
        f"sampler seed={cfg.search.sampler.seed}",
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


def render_html(markdown_text: str, figures: dict[str, Path], title: str) -> str:
    """One self-contained HTML page: the Markdown rendered, every figure inlined."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html"])

    def inline(match: re.Match) -> str:
        name = match.group(1)
        data = base64.b64encode(figures[name].read_bytes()).decode() if name in figures else ""
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="figures/([^"]+)"', inline, body)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; margin: 0.5rem 0; }}
pre {{ background: #f6f6f6; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; }}
code {{ font-size: 0.9em; }}
</style></head>
<body>
{body}
</body></html>
"""
