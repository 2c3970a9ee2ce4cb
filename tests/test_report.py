"""Reports, reproduce, evaluate and the registry, on one tiny study run once per module."""

import re
from html.parser import HTMLParser
from pathlib import Path

import keras
import mlflow
import numpy as np
import optuna
import pytest

from cifar_exp.config import with_overrides
from cifar_exp.registry import CHAMPION, ModelNotFound, evaluate_model, register_best
from cifar_exp.report import report
from cifar_exp.reproduce import reproduce
from cifar_exp.study.storage import storage_url
from cifar_exp.tracking import tracking_uri


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and attrs.get("href", "").startswith("http")):
            self.links.append(attrs)


def test_report_is_complete_and_self_contained(study_cfg):
    cfg, root, sweep_out = study_cfg
    out = report(cfg, root / "reports")
    assert out.html == root / "reports" / "tiny" / "report.html"
    page = _Page()
    page.feed(out.html.read_text())
    assert page.tags[0] == "html" and "table" in page.tags
    assert len(page.images) >= 6 and not page.links
    assert page.tags.count("figure") == page.tags.count("figcaption") == len(page.images)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    for name in (
        "learning_curves.png",
        "all_curves.png",
        "optimization_history.png",
        "parallel_coordinate.png",
        "confusion_matrix.png",
    ):
        assert (root / "reports" / "tiny" / "figures" / name).stat().st_size > 1000, name
    # one row per trial, best first, with the values Optuna and MLflow hold
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    table = out.table
    assert sorted(table["trial"]) == [t.number for t in study.trials]
    assert table["trial"].iloc[0] == study.best_trial.number
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    md = out.markdown.read_text()
    assert md.index("## Summary") < md.index("![Figure 1]") and "nan" not in md.split()
    for t in study.trials:
        row = table[table["trial"] == t.number].iloc[0]
        assert row["val_accuracy"] == pytest.approx(t.value)
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert row["loss"] == pytest.approx(run.data.metrics["loss"])
        assert row["optimizer.lr"] == pytest.approx(t.params["optimizer.lr"])
        assert row["trainer.batch_size"] == t.params["trainer.batch_size"]
        assert row["epochs"] == 2 and row["state"] == "COMPLETE"
        assert "reproduce" in md and t.user_attrs["mlflow_run_id"] in md
    # provenance and the test-set evaluation of the best model
    assert re.search(r"git commit: `[0-9a-f]{40}`", md)
    assert "sha256 `" in md and "tensorflow" in md and "trainer.seed=7" in md
    # the evaluation is a run of its own under the parent: the trial's run is left as it was
    evaluation = client.get_run(out.test.run_id)
    assert evaluation.data.metrics["test_accuracy"] == pytest.approx(out.test.accuracy)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.parentRunId"] == sweep_out.parent_run_id
    assert evaluation.data.tags["evaluates"].startswith("runs:/")
    # logged to the parent run
    files = {a.path for a in client.list_artifacts(sweep_out.parent_run_id, "report")}
    assert files == {"report/report.md", "report/report.html"}
    # the test set is evaluated once: a second report reuses the result
    again = report(cfg, root / "reports")
    assert again.test.cached and again.test.accuracy == out.test.accuracy


def test_reproduce_gives_the_same_metrics(study_cfg):
    cfg, _, _ = study_cfg
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    original = study.trials[1].user_attrs["mlflow_run_id"]
    out = reproduce(original, cfg)
    assert out.identical and out.within_tolerance
    assert {r[0] for r in out.rows} >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    run = mlflow.MlflowClient(tracking_uri(cfg.tracking)).get_run(out.reproduction)
    assert run.data.tags["reproduces"] == original
    assert not [w for w in out.warnings if "data.sha256" in w]


def test_evaluate_keras_file_and_run_id_agree(study_cfg, tmp_path):
    cfg, _, _ = study_cfg
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    run_id = study.best_trial.user_attrs["mlflow_run_id"]
    by_run = evaluate_model(run_id, cfg)
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking))
    model = mlflow.keras.load_model(f"runs:/{run_id}/model")
    path = tmp_path / "model.keras"
    model.save(path)
    by_file = evaluate_model(str(path), cfg)
    assert by_file.accuracy == by_run.accuracy and by_file.loss == by_run.loss
    assert by_file.confusion_matrix == by_run.confusion_matrix
    assert np.array(by_run.confusion_matrix).sum() == 200
    run = mlflow.MlflowClient(tracking_uri(cfg.tracking)).get_run(by_run.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(by_run.accuracy)


def test_champion_is_the_best_registered_model(study_cfg):
    cfg, _, sweep_out = study_cfg
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    reg = sweep_out.registered
    assert reg.name == "cifar10-cnn" and reg.champion
    champion = client.get_model_version_by_alias("cifar10-cnn", CHAMPION)
    assert champion.run_id == sweep_out.best.run_id
    # a worse model is registered but does not take the alias
    study = optuna.load_study(study_name="tiny", storage=storage_url(cfg))
    worst = min((t for t in study.trials), key=lambda t: t.value)
    if worst.value < sweep_out.best.value:
        out = register_best(cfg, worst.user_attrs["mlflow_run_id"], worst.value, "other")
        assert not out.champion
        assert client.get_model_version_by_alias("cifar10-cnn", CHAMPION).version == (
            champion.version
        )
    # evaluate and predict default to the champion
    default = evaluate_model(None, cfg)
    assert default.model == "models:/cifar10-cnn@champion"


def test_model_references_fail_clearly(study_cfg, tmp_path):
    cfg, _, _ = study_cfg
    with pytest.raises(ModelNotFound, match="no such model file"):
        evaluate_model(str(tmp_path / "missing.keras"), cfg)
    with pytest.raises(ModelNotFound, match="not a run id"):
        evaluate_model("hello", cfg)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelNotFound, match="not a loadable Keras model"):
        evaluate_model(str(bad), cfg)
    empty = with_overrides(cfg, {"tracking.registered_model": "nobody"})
    with pytest.raises(ModelNotFound, match="no study has registered a champion"):
        evaluate_model(None, empty)


def test_unsafe_keras_model_is_refused(tmp_path, study_cfg):
    cfg, _, _ = study_cfg
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda x: x[:, 0, 0, :1] * 0 + 1)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelNotFound, match=r"safe_mode|unsafe|Lambda"):
        evaluate_model(str(path), cfg)


def test_report_of_an_unknown_study_is_a_clear_error(study_cfg):
    from cifar_exp.config import ConfigError

    cfg, root, _ = study_cfg
    with pytest.raises(ConfigError, match="no study 'nope'"):
        report(with_overrides(cfg, {"search.study_name": "nope"}), root / "r")


def test_report_cli(study_cfg):
    import subprocess
    import sys

    cfg, root, _ = study_cfg
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_exp",
            "report",
            "tiny",
            f"data.path={cfg.data.path}",
            f"tracking.dir={cfg.tracking.dir}",
            f"data.cache_dir={cfg.data.cache_dir}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout and Path(root / "reports/tiny/report.md").exists()


def test_reading_commands_make_no_store_where_there_is_none(tmp_path, cfg):
    """`report` and `predict` pointed at a folder with no stores say so and leave nothing
    behind (they made the folder, an empty optuna.db and an mlflow.db)."""
    from cifar_exp.stores import TrackingUnavailable
    from cifar_exp.study.storage import StorageUnavailable

    fresh = with_overrides(cfg, {"tracking.dir": str(tmp_path / "fresh" / "mlruns")})
    with pytest.raises(StorageUnavailable, match=r"optuna\.db: no such file; run `sweep` first"):
        report(fresh, tmp_path / "r")
    with pytest.raises(ModelNotFound, match=r"no MLflow store at .*mlflow\.db \(no study has"):
        evaluate_model(None, fresh)
    elsewhere = with_overrides(cfg, {"search.storage": f"sqlite:///{tmp_path}/fresh/x.db"})
    with pytest.raises(StorageUnavailable, match="no such file"):
        report(elsewhere, tmp_path / "r")
    assert not (tmp_path / "fresh").exists()
    # a study whose runs are in a store that is not here: said, and no empty store made
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/s.db")
    study.set_user_attr("mlflow_parent_run_id", "abc")
    moved = with_overrides(elsewhere, {"search.storage": f"sqlite:///{tmp_path}/s.db"})
    with pytest.raises(TrackingUnavailable, match=r"mlflow\.db: no such file; the study's runs"):
        report(moved, tmp_path / "r")
    assert not (tmp_path / "fresh").exists()
