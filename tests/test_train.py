import math

import numpy as np
import pytest

from cifar_exp.config import with_overrides
from cifar_exp.data import load_cifar10
from cifar_exp.train import TrainingDiverged, build_optimizer, current_lr, train


@pytest.fixture()
def splits(cfg):
    return load_cifar10(cfg.data)


def test_one_epoch_history_and_test_metrics(cfg, splits):
    cfg = with_overrides(cfg, {"trainer.epochs": 1})
    result = train(cfg, splits, verbose="0")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time"):
        assert len(result.history[key]) == 1, key
    assert result.info["epochs_run"] == 1 and result.info["params"] == 4_210_090
    assert 0 <= result.test["accuracy"] <= 1
    cm = np.array(result.test["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == len(splits.y_test)
    assert np.trace(cm) / cm.sum() == pytest.approx(result.test["accuracy"])


def test_same_seed_same_metrics(cfg, splits):
    a = train(cfg, splits, evaluate_test=False, verbose="0")
    b = train(cfg, splits, evaluate_test=False, verbose="0")
    assert a.history["loss"] == b.history["loss"]
    assert a.history["val_accuracy"] == b.history["val_accuracy"]
    c = train(with_overrides(cfg, {"trainer.seed": 8}), splits, evaluate_test=False, verbose="0")
    assert c.history["loss"] != a.history["loss"]


def test_synthetic_classes_are_learnable(cfg, splits):
    cfg = with_overrides(cfg, {"trainer.epochs": 3, "trainer.batch_size": 32})
    result = train(cfg, splits, evaluate_test=False, verbose="0")
    assert result.history["val_accuracy"][-1] > 0.3  # chance is 0.1


def test_divergence_raises(cfg, splits):
    cfg = with_overrides(
        cfg, {"optimizer.lr": 1e6, "optimizer.momentum": 0.0, "model.max_norm": None}
    )
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(cfg, splits, evaluate_test=False, verbose="0")


def test_legacy_decay_schedule(cfg):
    opt = build_optimizer(with_overrides(cfg, {"optimizer.decay": 0.01}).optimizer)
    assert current_lr(opt) == pytest.approx(0.01)
    opt.iterations.assign(100)
    assert current_lr(opt) == pytest.approx(0.01 / (1 + 0.01 * 100))


def test_mixed_bfloat16_trains(cfg, splits):
    cfg = with_overrides(cfg, {"trainer.precision": "mixed_bfloat16", "trainer.epochs": 1})
    result = train(cfg, splits, verbose="0")
    assert result.info["precision"] == "mixed_bfloat16"
    assert math.isfinite(result.history["loss"][0])
    assert result.model.layers[0].compute_dtype == "bfloat16"
    import keras

    keras.mixed_precision.set_global_policy("float32")
