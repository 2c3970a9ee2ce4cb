"""The study's parent run in MLflow: created once per study and shared by every worker and
every resume (its id is kept in the study's user attributes); at the end it holds the study's
summary (trial counts, the best trial, the trials table, Optuna's figures)."""

from __future__ import annotations

import logging

import optuna
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from cifar_exp import plots, tracking
from cifar_exp.config import Config, TrackingConfig, flatten, mask, to_yaml
from cifar_exp.study.trials import PRIOR, best_trial, counts, directions, objectives, primary

log = logging.getLogger(__name__)


def study_parent_run(cfg: Config, study: optuna.Study) -> str:
    """The study's MLflow parent run: created once, reopened (RUNNING) on resume."""
    experiment_id = tracking.setup(cfg.tracking)
    client = MlflowClient()
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            log.warning(
                "parent run %s of study %r is gone; starting a new one", run_id, study.study_name
            )
    s = cfg.search
    tags = {
        **tracking.run_tags(cfg),
        "optuna.study_name": study.study_name,
        "optuna.storage": mask(str(s.storage or "embedded sqlite")),
        "optuna.sampler": str(s.sampler.name),
        "optuna.pruner": str(s.pruner.name),
        "optuna.direction": ",".join(directions(s)),
        "optuna.metric": s.metric,
        "optuna.objectives": ",".join(objectives(s)),
        "mlflow.runName": f"study-{study.study_name}",
    }
    run = client.create_run(experiment_id, tags=tags, run_name=f"study-{study.study_name}")
    run_id = run.info.run_id
    params = [
        Param(k, mask(str(v)))
        for k, v in flatten(cfg).items()
        if not k.startswith(("search.n_trials", "reference"))
    ]
    client.log_batch(run_id, params=params)
    client.log_text(run_id, to_yaml(cfg), "config.yaml")
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def close_trial_run(tracking_cfg: TrackingConfig, trial: optuna.trial.FrozenTrial) -> None:
    """End the MLflow run of a trial whose worker died (its heartbeat went stale), and the
    seed runs under it that were still running."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not (run_id and tracking_cfg.enabled):
        return
    reason = "worker died: no heartbeat (trial re-queued)"
    client = MlflowClient(tracking.tracking_uri(tracking_cfg))
    try:
        experiment = client.get_run(run_id).info.experiment_id
        children = client.search_runs(
            [experiment],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        )
    except MlflowException as e:
        log.warning("could not look up the seed runs of run %s: %s", run_id, e)
        children = []
    for child in children:
        tracking.close_run(tracking_cfg, child.info.run_id, "KILLED", reason)
    tracking.close_run(tracking_cfg, run_id, "KILLED", reason)


def log_study(run_id: str, study: optuna.Study) -> None:
    """Best value and params, the trials table and Optuna's figures, on the parent run."""
    from matplotlib import pyplot as plt

    client = MlflowClient()
    by_state = counts(study)
    for state in optuna.trial.TrialState:
        client.log_metric(run_id, f"trials_{state.name.lower()}", by_state.get(state.name, 0))
    table = study.trials_dataframe()
    if f"user_attrs_{PRIOR}" in table:  # a warm start's priors are not this study's trials
        table = table[table[f"user_attrs_{PRIOR}"].isna()]
    client.log_text(run_id, table.to_csv(index=False), "trials.csv")
    best = best_trial(study)
    if best is not None:
        client.log_metric(run_id, "best_value", primary(best), step=len(study.trials))
        tracking.tag_run(
            run_id,
            {
                "best.trial": str(best.number),
                "best.mlflow_run_id": str(best.user_attrs.get("mlflow_run_id")),
                **{f"best.{k}": str(v) for k, v in best.params.items()},
            },
        )
        client.log_dict(
            run_id,
            {
                "number": best.number,
                "value": primary(best),  # the first objective's
                "values": dict(zip(study.metric_names or ["value"], best.values, strict=False)),
                "params": best.params,
                "user_attrs": best.user_attrs,
            },
            "best_trial.json",
        )
    for name, fig in plots.study_figures(study).items():
        client.log_figure(run_id, fig, f"optuna/{name}")
        plt.close(fig)


def finish_parent_run(
    run_id: str, study: optuna.Study, *, complete: bool, interrupted: bool
) -> None:
    """Log the study summary on the parent run and end it (KILLED when interrupted)."""
    try:
        log_study(run_id, study)
    except Exception as e:  # the summary must never hide the study's own outcome
        log.warning("could not log the study summary to MLflow: %s", e)
    tracking.tag_run(run_id, {"study.complete": str(complete).lower()})
    MlflowClient().set_terminated(run_id, "KILLED" if interrupted else "FINISHED")
