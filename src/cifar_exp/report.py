"""Research reports: a study turned into Markdown and a self-contained HTML page.

`report(cfg)` runs three steps: gather (the study from Optuna, every trial's history and the
study's provenance from MLflow), evaluate (the best model on the held-out test set, once,
as a run of its own), render (figures, Markdown, HTML: from the gathered record alone, no
MLflow or storage calls), then writes `reports/<study>/report.md`, `report.html` (figures
embedded) and `figures/`, and logs them to the study's parent run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow import MlflowClient

from cifar_exp.config import METRICS, Config, ConfigError, mask
from cifar_exp.data import load_cifar10
from cifar_exp.pareto import BudgetAnswer, within_budget
from cifar_exp.render import (
    StudyRecord,
    TrialRow,
    make_figures,
    render_html,
    render_markdown,
    trials_table,
)
from cifar_exp.runs import evaluate_and_log
from cifar_exp.stores import TrackingUnavailable
from cifar_exp.study.confirm import recorded
from cifar_exp.study.grammar import space_specs
from cifar_exp.study.storage import storage_url
from cifar_exp.study.trials import best_trial, counts, own
from cifar_exp.tracking import (
    find_evaluation,
    log_data,
    missing_store,
    read_data,
    read_test_metrics,
    run,
    run_config,
    run_tags,
    setup,
)
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)


@dataclass
class ReportResult:
    """The files a report wrote, its test evaluation and its trial table."""

    markdown: Path
    html: Path
    figures: dict[str, Path]
    test: Evaluation | None
    table: pd.DataFrame
    budget: BudgetAnswer | None = None  # the answer to `--budget-minutes`


# --------------------------------------------------------------------------- gather


def gather(cfg: Config) -> StudyRecord:
    """The study, each trial with its MLflow per-epoch history, and the study's provenance."""
    url = storage_url(cfg, existing=True)
    try:
        study = optuna.load_study(study_name=cfg.search.study_name, storage=url)
    except KeyError:
        raise ConfigError(
            f"search.study_name: no study {cfg.search.study_name!r} in "
            f"{mask(url)}; run `sweep` first"
        ) from None
    store = missing_store(cfg.tracking)
    if store is None:
        setup(cfg.tracking)
    elif study.user_attrs.get("mlflow_parent_run_id") or any(
        t.user_attrs.get("mlflow_run_id") for t in study.trials
    ):  # its runs are in a store that is not here: say so, and make no empty one
        raise TrackingUnavailable(
            f"MLflow store {store}: no such file; the study's runs are in another store "
            "(point tracking.dir or tracking.uri at it)"
        )
    client = MlflowClient()
    rows = []
    for t in own(study.trials):  # not a warm start's prior trials from another study
        run_id = t.user_attrs.get("mlflow_run_id")
        history: dict[str, list[float]] = {}
        std: dict[str, list[float]] = {}
        params: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if run_id:
            run = client.get_run(run_id)
            params, metrics = run.data.params, run.data.metrics
            for key in METRICS:
                history[key] = _history(client, run_id, key)
                if metrics.get("n_seeds", 1) > 1:
                    std[key] = _history(client, run_id, f"{key}_std")
        rows.append(TrialRow(t, run_id, history, params, metrics, std))
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    confirmation = recorded(study)
    best = best_trial(study)
    if confirmation is not None:  # the best on confirmed means
        best = next((r.trial for r in rows if r.trial.number == confirmation.winner.number), best)
    # the data a trial trained on is on its training run (a several-seed trial's first seed)
    first_run = next(
        (r.trial.user_attrs.get("model_run_id") or r.run_id for r in rows if r.run_id), None
    )
    return StudyRecord(
        study=_snapshot(study),
        rows=rows,
        counts=counts(study),
        best=best,
        space=_space(study.trials) or _configured_space(cfg),
        parent_run_id=parent_id,
        confirmation=confirmation,
        parent_tags=client.get_run(parent_id).data.tags if parent_id else {},
        data=read_data(first_run) if first_run else {},
        storage=mask(url),
    )


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


def _snapshot(study: optuna.Study) -> optuna.Study:
    """The study copied into memory, as it stands now."""
    copy = optuna.create_study(study_name=study.study_name, directions=study.directions)
    copy.add_trials(own(study.get_trials(deepcopy=False)))
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    if study.metric_names:
        copy.set_metric_names(study.metric_names)
    return copy


def _configured_space(cfg: Config) -> dict[str, dict[str, Any]]:
    """The space as configured (`search.space` and `search.params`), for a study with no trial
    yet; {} when nothing is searched."""
    try:
        specs = space_specs(cfg)
    except ConfigError:
        return {}
    return {k: {f: v for f, v in spec.items() if v is not None} for k, spec in specs.items()}


def _space(trials: list[optuna.trial.FrozenTrial]) -> dict[str, dict[str, Any]]:
    """The distributions Optuna drew the trials' values from, as `{key: {type, ...}}`."""
    out: dict[str, dict[str, Any]] = {}
    for t in trials:
        for key, dist in t.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                out[key] = {"type": "categorical", "choices": list(dist.choices)}
                continue
            kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
            spec = {"type": kind, "low": dist.low, "high": dist.high}
            if dist.log:
                spec["log"] = True
            if dist.step is not None and not (kind == "int" and dist.step == 1):
                spec["step"] = dist.step
            out[key] = spec
    return out


# --------------------------------------------------------------------------- test evaluation


def evaluate_best(
    cfg: Config, best: optuna.trial.FrozenTrial | None, parent_run_id: str | None = None
) -> Evaluation | None:
    """The best trial's model on the held-out test set of the data it trained on (the run's
    record, not this environment), computed once: recorded as a `test-evaluation` run of its
    own under the study's parent run, so the finished trial run is never re-opened, and found
    again by the next report."""
    run_id = (
        (best.user_attrs.get("model_run_id") or best.user_attrs.get("mlflow_run_id"))
        if best
        else None
    )
    if not run_id:
        return None
    model_uri = f"runs:/{run_id}/model"
    cached = find_evaluation(model_uri, parent_run_id)
    if cached is None:  # earlier reports logged the evaluation onto the trial's run
        cached = read_test_metrics(run_id)
    if cached is not None:
        return cached
    from cifar_exp.registry import ModelNotFound, ModelRefused, load_model

    trial_cfg = run_config(run_id, cfg)
    try:
        model, _ = load_model(run_id, cfg)
    except ModelRefused:
        raise
    except ModelNotFound as e:  # e.g. studies run with tracking.log_model=false
        log.warning("best trial %d has no loadable model; no test evaluation (%s)", best.number, e)
        return None
    splits = load_cifar10(trial_cfg.data)
    tags = {**run_tags(cfg), "evaluates": model_uri, "trial": str(best.number)}
    with run("test-evaluation", setup(cfg.tracking), parent_run_id=parent_run_id, tags=tags):
        log_data(splits.info, ("test",))
        return evaluate_and_log(model, splits, trial_cfg.trainer.batch_size)


# --------------------------------------------------------------------------- entry


def report(
    cfg: Config, out_dir: str | Path = "reports", budget_minutes: float | None = None
) -> ReportResult:
    """Write the study's report (gather -> evaluate -> render) and log it to the parent run;
    with `budget_minutes`, it also names the best configuration whose training fits in it."""
    if budget_minutes is not None and not budget_minutes > 0:
        raise ConfigError(f"--budget-minutes: must be > 0 (got {budget_minutes:g})")
    record = gather(cfg)
    out = Path(out_dir) / record.study.study_name
    if not out.resolve().is_relative_to(Path(out_dir).resolve()):  # names are validated too
        raise ConfigError(f"search.study_name: {record.study.study_name!r} leaves {out_dir}")
    out.mkdir(parents=True, exist_ok=True)
    test = evaluate_best(cfg, record.best, record.parent_run_id)
    figures = make_figures(record, out, test, cfg.search.metric)
    table = trials_table(record.rows, cfg)
    budget = None
    if budget_minutes is not None:
        budget = within_budget(record.study, record.rows, budget_minutes, cfg.search.metric)
    md = render_markdown(cfg, record, test, figures, table, budget)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(md)
    html_path.write_text(render_html(md, figures, f"Study {record.study.study_name}"))
    if record.parent_run_id:
        client = MlflowClient()
        client.log_artifact(record.parent_run_id, str(md_path), "report")
        client.log_artifact(record.parent_run_id, str(html_path), "report")
    return ReportResult(md_path, html_path, figures, test, table, budget)
