"""Research reports: a study turned into Markdown and a self-contained HTML page.

`report(cfg)` reads the study from Optuna and every trial's history from MLflow, evaluates the
best model once on the held-out test set (cached on its run), and writes
`reports/<study>/report.md`, `report.html` (figures embedded) and `figures/`, then logs them
to the study's parent run.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from matplotlib import pyplot as plt
from mlflow import MlflowClient
from omegaconf import OmegaConf

from cifar_exp import plots, provenance
from cifar_exp.config import ConfigError, mask, to_yaml
from cifar_exp.data import CLASS_NAMES, load_cifar10
from cifar_exp.search import parse_space
from cifar_exp.storage import storage_url
from cifar_exp.tracking import log_test_metrics, run_config, setup
from cifar_exp.train import evaluate

log = logging.getLogger(__name__)

# The reference study's published results (validation on the test set, per epoch budget).
REFERENCE = {10: 0.635, 20: 0.647, 30: 0.734}
REFERENCE_TEST_10 = 0.6742
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
TABLE_CONFIG = ("optimizer.lr", "trainer.batch_size")


def _number(text: str | None) -> float | int | str | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


@dataclass
class TrialRow:
    trial: optuna.trial.FrozenTrial
    run_id: str | None
    history: dict[str, list[float]]
    params: dict[str, str]  # the run's MLflow params: its whole resolved config


# --------------------------------------------------------------------------- gather


def gather(cfg: Any) -> tuple[optuna.Study, list[TrialRow], dict[str, Any]]:
    """The study, each trial with its MLflow per-epoch history, and the parent run's record."""
    try:
        study = optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg))
    except KeyError:
        raise ConfigError(
            f"search.study_name: no study {cfg.search.study_name!r} in "
            f"{mask(storage_url(cfg))}; run `sweep` first"
        ) from None
    setup(cfg.tracking)
    client = MlflowClient()
    rows = []
    for t in study.trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        history: dict[str, list[float]] = {}
        params: dict[str, str] = {}
        if run_id:
            params = client.get_run(run_id).data.params
            for key in HISTORY_KEYS:
                points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
                history[key] = [m.value for m in points]
        rows.append(TrialRow(t, run_id, history, params))
    parent: dict[str, Any] = {}
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    if parent_id:
        run = client.get_run(parent_id)
        parent = {"run_id": parent_id, "tags": run.data.tags}
    return study, rows, parent


def trials_table(rows: list[TrialRow], cfg: Any) -> pd.DataFrame:
    """One row per trial, best first: the reference study's columns plus state and duration."""
    records = []
    for r in rows:
        t, last = r.trial, {k: (v[-1] if v else None) for k, v in r.history.items()}
        records.append(
            {
                "trial": t.number,
                "state": t.state.name,
                **{k: last.get(k) for k in HISTORY_KEYS},
                "epochs": len(r.history.get("loss") or []),
                # the reference table's learning rate and batch size, searched or not
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


# --------------------------------------------------------------------------- test evaluation


def evaluate_best(cfg: Any, study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's model on the held-out test set, computed once and cached on its run."""
    import json

    import mlflow

    try:
        best = study.best_trial
    except ValueError:
        return None
    run_id = best.user_attrs.get("mlflow_run_id")
    if not run_id:
        return None
    client = MlflowClient()
    run = client.get_run(run_id)
    if "test_accuracy" in run.data.metrics:
        path = client.download_artifacts(run_id, "test_metrics.json")
        return {**json.loads(Path(path).read_text()), "run_id": run_id, "cached": True}
    from cifar_exp.registry import ModelNotFound, load_model

    trial_cfg = run_config(run_id, cfg)
    try:
        model, _ = load_model(run_id, cfg)
    except ModelNotFound as e:  # e.g. studies run with tracking.log_model=false
        log.warning("best trial %d has no loadable model; no test evaluation (%s)", best.number, e)
        return None
    splits = load_cifar10(trial_cfg.data)
    result = evaluate(model, splits.x_test, splits.y_test, trial_cfg.trainer.batch_size)
    with mlflow.start_run(run_id=run_id):  # reopening ends it FINISHED again
        log_test_metrics(result)
    return {**result, "run_id": run_id, "cached": False}


# --------------------------------------------------------------------------- render


def _fig(figures: dict[str, Path], out: Path, name: str, fig: Any) -> None:
    path = out / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    figures[name] = path


def make_figures(
    rows: list[TrialRow], study: optuna.Study, cfg: Any, out: Path, test: dict | None
) -> dict[str, Path]:
    figures: dict[str, Path] = {}
    best = next((r for r in rows if r.trial.number == _best_number(study)), None)
    if best and best.history.get("loss"):
        for metric in ("accuracy", "loss"):
            title = f"best trial ({best.trial.number}): {metric} per epoch"
            _fig(figures, out, f"best_{metric}.png", plots.curve(best.history, metric, title))
    curves = {f"trial {r.trial.number}": r.history.get("val_accuracy", []) for r in rows}
    if any(curves.values()):
        _fig(figures, out, "all_val_accuracy.png", plots.overlay(curves, "val_accuracy"))
    for name, fig in plots.study_figures(study).items():
        _fig(figures, out, name, fig)
    if test:
        _fig(
            figures,
            out,
            "confusion_matrix.png",
            plots.confusion(test["confusion_matrix"], CLASS_NAMES),
        )
    return figures


def _best_number(study: optuna.Study) -> int | None:
    try:
        return study.best_trial.number
    except ValueError:
        return None


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".4g") if not df.empty else "_no trials_"


def _trial_command(study_command: str, params: dict[str, Any]) -> str:
    argv = shlex.split(study_command) if study_command else ["python", "-m", "cifar_exp", "sweep"]
    argv = ["train" if a == "sweep" else a for a in argv]
    return shlex.join([*argv, *(f"{k}={v}" for k, v in params.items())])


def render_markdown(
    cfg: Any,
    study: optuna.Study,
    rows: list[TrialRow],
    parent: dict,
    test: dict | None,
    figures: dict[str, Path],
    table: pd.DataFrame,
) -> str:
    """The report as Markdown; figures referenced as `figures/<name>`."""
    s, tags = cfg.search, parent.get("tags", {})
    counts = pd.Series([r.trial.state.name for r in rows]).value_counts().to_dict()
    starts = [r.trial.datetime_start for r in rows if r.trial.datetime_start]
    ends = [r.trial.datetime_complete for r in rows if r.trial.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    space = {
        p.key: {k: v for k, v in vars(p).items() if v not in (None, False) and k != "key"}
        for p in parse_space(cfg)
    }
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
        + ", ".join(f"{v} {k.lower()}" for k, v in counts.items())
        + f"); target {s.n_trials}",
        f"- wall time: {wall / 60:.1f} min",
        "- search space:",
        "",
        "```yaml",
        OmegaConf.to_yaml(OmegaConf.create(space)).strip(),
        "```",
        "",
        "## Trials (best first)",
        "",
        _md_table(table),
        "",
    ]
    if study.study_name.startswith("seed_epochs") or cfg.experiment == "seed_epochs":
        lines += _reference_section(table, test)
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
    lines += _provenance_section(cfg, study, rows, tags)
    return "\n".join(lines) + "\n"


def _reference_section(table: pd.DataFrame, test: dict | None) -> list[str]:
    out = [
        "## Replication of the reference study",
        "",
        "| epochs | reference val_accuracy | this study val_accuracy |",
        "| --- | --- | --- |",
    ]
    for epochs, ref in REFERENCE.items():
        match = table[table.get("trainer.epochs", pd.Series(dtype=float)) == epochs]
        ours = f"{match['val_accuracy'].iloc[0]:.4f}" if len(match) else "not run"
        out.append(f"| {epochs} | {ref:.3f} | {ours} |")
    out += ["", f"Reference test accuracy after 10 epochs: {REFERENCE_TEST_10:.2%}."]
    if test:
        out.append(f"This study's best model on the test set: {test['accuracy']:.2%}.")
    return [*out, ""]


def _test_section(test: dict | None, figures: dict[str, Path]) -> list[str]:
    if not test:
        return ["## Test set", "", "_No finished trial with a logged model to evaluate._", ""]
    per_class = pd.DataFrame({"class": CLASS_NAMES, "accuracy": test["per_class_accuracy"]})
    return [
        "## Best model on the held-out test set",
        "",
        f"Evaluated once (MLflow run `{test['run_id']}`): **test accuracy "
        f"{test['accuracy']:.4f}**, test loss {test['loss']:.4f}.",
        "",
        per_class.to_markdown(index=False, floatfmt=".3f"),
        "",
        "![confusion matrix](figures/confusion_matrix.png)\n"
        if "confusion_matrix.png" in figures
        else "",
    ]


def _provenance_section(
    cfg: Any, study: optuna.Study, rows: list[TrialRow], tags: dict
) -> list[str]:
    versions = {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")}
    versions = versions or provenance.versions()
    command = tags.get("command") or "python -m cifar_exp sweep"
    best_data = next((r for r in rows if r.run_id), None)
    sha = ""
    if best_data:
        sha = MlflowClient().get_run(best_data.run_id).data.tags.get("data.sha256", "")
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
        f"- storage: `{mask(storage_url(cfg))}`; MLflow parent run: "
        f"`{study.user_attrs.get('mlflow_parent_run_id')}`",
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
    for r in rows:
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


# --------------------------------------------------------------------------- entry


def report(cfg: Any, out_dir: str | Path = "reports") -> dict[str, Any]:
    """Write the study's report; returns {"markdown", "html", "figures", "test", "table"}."""
    study, rows, parent = gather(cfg)
    out = Path(out_dir) / study.study_name
    out.mkdir(parents=True, exist_ok=True)
    test = evaluate_best(cfg, study)
    figures = make_figures(rows, study, cfg, out, test)
    table = trials_table(rows, cfg)
    md = render_markdown(cfg, study, rows, parent, test, figures, table)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(md)
    html_path.write_text(render_html(md, figures, f"Study {study.study_name}"))
    if parent.get("run_id"):
        client = MlflowClient()
        client.log_artifact(parent["run_id"], str(md_path), "report")
        client.log_artifact(parent["run_id"], str(html_path), "report")
    return {
        "markdown": md_path,
        "html": html_path,
        "figures": figures,
        "test": test,
        "table": table,
    }
