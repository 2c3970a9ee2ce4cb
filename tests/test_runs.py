"""What every tracked run records beyond its history: the best epoch as well as the last."""

import math

import mlflow
import optuna
import pytest

from cifar_exp.runs import best_epoch
from cifar_exp.study.storage import storage_url
from cifar_exp.tracking import tracking_uri


def test_best_epoch_is_the_best_of_the_mean_curve():
    h = {"val_accuracy": [0.2, 0.6, 0.5], "val_loss": [2.0, 1.0, 1.5]}
    assert best_epoch([h], "val_accuracy", maximize=True) == (2, 0.6)
    assert best_epoch([h], "val_loss", maximize=False) == (2, 1.0)
    # several seeds: the epoch where their mean is best; a seed that stopped early counts
    # only in the epochs it reached
    other = {"val_accuracy": [0.4, 0.4, 0.9, 0.95]}
    epoch, value = best_epoch([h, other], "val_accuracy", maximize=True)
    assert (epoch, value) == (4, pytest.approx(0.95))
    assert best_epoch([{"val_accuracy": [math.nan, 0.3]}], "val_accuracy", True) == (2, 0.3)
    assert best_epoch([{"loss": [1.0]}], "val_accuracy", True) is None


def test_trials_and_runs_record_their_best_epoch(study_cfg):
    cfg, _, _ = study_cfg
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    for t in study.trials:
        if t.state.name != "COMPLETE":
            continue
        assert 1 <= t.user_attrs["best_epoch"] <= t.user_attrs["epochs_run"]
        assert t.user_attrs["best_val_accuracy"] >= t.value - 1e-9  # never worse than the last
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert 1 <= metrics["best_epoch"] <= t.user_attrs["epochs_run"]
        assert metrics["best_val_accuracy"] >= metrics["val_accuracy"] - 1e-9
