"""Workers writing the same MLflow record at the same moment.

MLflow looks a record up and then inserts it (an experiment by name, a registered model, an
experiment's datasets); of workers doing so at once, all but one get a unique-key error. On a
tracking server backed by PostgreSQL, three processes logging the same datasets at once
failed in 2 of 8 rounds with `BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key
value violates unique constraint "dataset_pk"` (a probe, 2026-11-26), which failed a trial of
the three-worker scale-out test in CI. The tests here replay each interleaving on a real
store: the other worker's record is there, and this worker's look-up did not see it."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

from cifar_exp import tracking
from cifar_exp.stores import created_elsewhere

# what the server answered the probe (MLflow 3.17, PostgreSQL 15)
POSTGRES = (
    "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique "
    'constraint "dataset_pk"\nDETAIL:  Key (experiment_id, name, digest)=(1, cifar10-train, '
    "d3) already exists."
)
DATA = {"source": "/data/cifar-10-python.tar.gz", "sha256": "ab" * 32, "split_seed": 7}
DATA.update(n_train=500, n_val=200, n_test=200)


@pytest.mark.parametrize(
    "error, raced",
    [
        (MlflowException(POSTGRES, error_code="BAD_REQUEST"), True),
        (
            MlflowException("UNIQUE constraint failed: datasets.name", error_code="BAD_REQUEST"),
            True,
        ),
        (MlflowException("(1062, \"Duplicate entry '1-x' for key 'PRIMARY'\")"), True),
        (MlflowException("Experiment 'x' already exists.", RESOURCE_ALREADY_EXISTS), True),
        (MlflowException("Param value '1e6' had length 3000", error_code="BAD_REQUEST"), False),
        (MlflowException("Run 'abc' not found", error_code="RESOURCE_DOES_NOT_EXIST"), False),
        (ConnectionError("connection refused"), False),
    ],
)
def test_a_lost_insert_race_is_told_from_a_broken_store(error, raced):
    assert created_elsewhere(error) is raced


def test_datasets_another_worker_inserted_first_are_logged_once_more(cfg, monkeypatch):
    experiment = tracking.setup(cfg.tracking)
    client = mlflow.MlflowClient()
    other = client.create_run(experiment).info.run_id
    real, calls = mlflow.log_inputs, []

    def racing(**kwargs):
        calls.append(1)
        if len(calls) == 1:  # the other worker's run inserts the datasets first
            with mlflow.start_run(run_id=other, nested=True):
                real(**kwargs)
            raise MlflowException(POSTGRES, error_code="BAD_REQUEST")
        return real(**kwargs)

    monkeypatch.setattr(mlflow, "log_inputs", racing)
    with mlflow.start_run(experiment_id=experiment) as run:
        tracking.log_data(DATA)
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == [
        "cifar10-test",
        "cifar10-train",
        "cifar10-val",
    ]
    assert len(calls) == 2


def test_any_other_logging_error_still_fails_the_run(cfg, monkeypatch):
    experiment = tracking.setup(cfg.tracking)

    def broken(**kwargs):
        raise MlflowException("Dataset input must have a dataset", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(mlflow, "log_inputs", broken)
    with mlflow.start_run(experiment_id=experiment), pytest.raises(MlflowException):
        tracking.log_data(DATA)


def test_an_experiment_made_by_another_process_after_the_look_up_is_used(cfg, monkeypatch):
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.tracking))
    existing = mlflow.create_experiment(cfg.tracking.experiment_name)  # the other process's
    real, looked = mlflow.get_experiment_by_name, []

    def late(name):  # the first look-up ran before the other process committed
        looked.append(name)
        return None if len(looked) == 1 else real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", late)
    assert tracking.setup(cfg.tracking) == existing
    assert len(looked) == 2


def test_a_registered_model_made_by_another_study_meanwhile_is_used(cfg, monkeypatch):
    from cifar_exp.config import with_overrides
    from cifar_exp.registry import register_best
    from cifar_exp.runs import train_tracked

    cfg = with_overrides(cfg, {"trainer.epochs": 1})
    run = train_tracked(cfg, verbose="0")
    client = mlflow.MlflowClient(tracking.tracking_uri(cfg.tracking))
    client.create_registered_model(cfg.tracking.registered_model)  # the other study's
    real = mlflow.MlflowClient.get_registered_model
    looked = []

    def late(self, name):
        looked.append(name)
        if len(looked) == 1:
            raise MlflowException(f"Registered Model {name} not found", "RESOURCE_DOES_NOT_EXIST")
        return real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_registered_model", late)
    registered = register_best(cfg, run.run_id, run.final["val_accuracy"], "tiny")
    assert registered.champion and registered.version == 1
