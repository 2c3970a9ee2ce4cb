"""Provenance is a fact of the run: the data a study trained on is read back from its runs'
record, never from the environment of the command that reads it, and a finished run is
never modified by a later command."""

import os
import subprocess
import sys

import mlflow
import optuna
import pytest

from cifar_exp.report import report
from cifar_exp.study.storage import storage_url
from cifar_exp.tracking import tracking_uri


def _trial_runs(cfg):
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    return [t.user_attrs["mlflow_run_id"] for t in study.trials if "mlflow_run_id" in t.user_attrs]


def test_runs_record_their_data_as_mlflow_datasets(study_cfg):
    cfg, _, _ = study_cfg
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    run = client.get_run(_trial_runs(cfg)[0])
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"cifar10-train", "cifar10-val"}  # trials never read the test set
    train = inputs["cifar10-train"]
    assert str(cfg.data.path) in train.dataset.source
    assert run.data.tags["data.sha256"].startswith(train.dataset.digest)
    tags = {t.key: t.value for t in train.tags}
    assert tags["mlflow.data.context"] == "training" and int(tags["images"]) > 0


def test_report_reads_the_data_source_from_the_runs_not_the_environment(study_cfg):
    cfg, root, _ = study_cfg
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "report", "tiny", f"tracking.dir={cfg.tracking.dir}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    md = (root / "reports" / "tiny" / "report.md").read_text()
    assert "official download" not in md and "cs.toronto.edu" not in md
    assert f"`{cfg.data.path}`" in md  # the local copy the trials trained on
    assert f"data.path={cfg.data.path}" in md  # the re-run command does not depend on the env


def test_report_never_modifies_a_finished_run(study_cfg):
    cfg, root, _ = study_cfg
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    before = {r: client.get_run(r) for r in _trial_runs(cfg)}
    out = report(cfg, root / "reports-again")
    assert out.test is not None and out.test.run_id not in before
    for run_id, run in before.items():
        now = client.get_run(run_id)
        assert now.info.end_time == run.info.end_time, run_id
        assert now.data.metrics == run.data.metrics, run_id


def test_evaluate_tests_a_run_on_the_data_it_recorded(study_cfg, tmp_path):
    from cifar_exp.config import with_overrides
    from cifar_exp.data import DataError
    from cifar_exp.registry import evaluate_model

    cfg, _, _ = study_cfg
    run_id = _trial_runs(cfg)[0]
    elsewhere = with_overrides(cfg, {"data.path": str(tmp_path)})  # holds no CIFAR-10 files
    out = evaluate_model(run_id, elsewhere)  # this environment's data is not what it used
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    evaluation = client.get_run(out.run_id)
    assert evaluation.data.tags["data.sha256"] == client.get_run(run_id).data.tags["data.sha256"]
    with pytest.raises(DataError):  # a data.* override on the command line is obeyed
        evaluate_model(run_id, elsewhere, [f"data.path={tmp_path}"])
