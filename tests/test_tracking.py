import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from cifar_exp.config import with_overrides
from cifar_exp.runs import train_tracked
from cifar_exp.tracking import tracking_uri


def test_train_run_is_recorded_in_mlflow(cfg, workdir):
    out = train_tracked(cfg, verbose="0")
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert (workdir / "mlruns" / "mlflow.db").exists()
    # params: the flattened resolved config
    assert run.data.params["optimizer.lr"] == "0.01"
    assert run.data.params["trainer.epochs"] == "2"
    # per-epoch metrics with step = epoch
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2], key
    assert run.data.metrics["test_accuracy"] == pytest.approx(out.test.accuracy)
    assert run.data.tags["git_commit"] and run.data.tags["version.tensorflow"]
    assert run.data.tags["experiment"] == "tiny"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    files |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "config.yaml",
        "model_summary.txt",
        "history.csv",
        "test_metrics.json",
        "plots/accuracy.png",
        "plots/loss.png",
        "plots/confusion_matrix.png",
    } <= files
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(workdir))
    assert "seed_cnn" in Path(config).read_text()
    metrics_file = client.download_artifacts(run.info.run_id, "test_metrics.json", str(workdir))
    metrics = json.loads(Path(metrics_file).read_text())
    assert len(metrics["per_class_accuracy"]) == 10
    # the logged model loads and predicts
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking))
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    probs = model.predict(np.zeros((3, 32, 32, 3), np.float32), verbose=0)
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_failed_training_marks_the_run_failed(cfg):
    bad = with_overrides(
        cfg, {"optimizer.lr": 1e6, "optimizer.momentum": 0.0, "model.max_norm": None}
    )
    seen = {}
    with pytest.raises(Exception, match="loss became"):
        train_tracked(bad, on_run=lambda rid: seen.setdefault("id", rid), verbose="0")
    run = mlflow.MlflowClient(tracking_uri(cfg.tracking)).get_run(seen["id"])
    assert run.info.status == "FAILED"
    assert "loss became" in run.data.tags["failure_reason"]


def test_tracking_off_writes_nothing(cfg, workdir):
    out = train_tracked(with_overrides(cfg, {"tracking.enabled": False}), verbose="0")
    assert out.run_id is None and out.final["loss"] > 0
    assert not (workdir / "mlruns").exists()


def test_a_tracked_run_leaves_the_environment_as_it_was(cfg, monkeypatch):
    """MLflow exports the URI it was given as MLFLOW_TRACKING_URI, from which `tracking.uri`
    defaults: a config composed after a run must not silently point at that run's store."""
    import os

    from cifar_exp.config import compose
    from cifar_exp.tracking import setup

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    setup(cfg.tracking)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert compose([]).tracking.uri is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    setup(cfg.tracking)  # the user's own setting stays
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
