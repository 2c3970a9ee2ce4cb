import math

import numpy as np
import pytest

from cifar_exp.callbacks import current_lr
from cifar_exp.config import with_overrides
from cifar_exp.data import load_cifar10
from cifar_exp.optimizers import build_optimizer
from cifar_exp.train import TrainingDiverged, train


@pytest.fixture()
def splits(cfg):
    return load_cifar10(cfg.data)


def test_one_epoch_history_and_test_metrics(cfg, splits):
    cfg = with_overrides(cfg, {"trainer.epochs": 1})
    result = train(cfg, splits, verbose="0")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time", "val_time"):
        assert len(result.history[key]) == 1, key
    assert 0 < result.history["val_time"][0] < result.history["epoch_time"][0]
    assert result.epochs_run == 1 and result.params == 4_210_090
    assert 0 <= result.test.accuracy <= 1
    cm = np.array(result.test.confusion_matrix)
    assert cm.shape == (10, 10) and cm.sum() == len(splits.y_test)
    assert np.trace(cm) / cm.sum() == pytest.approx(result.test.accuracy)


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


def test_onecycle_schedule_and_weight_decay(cfg):
    o = with_overrides(
        cfg,
        {
            "optimizer.schedule": "onecycle",
            "optimizer.decay": 0.0,
            "optimizer.warmup": 0.2,
            "optimizer.weight_decay": 5e-4,
        },
    ).optimizer
    opt = build_optimizer(o, total_steps=100)
    assert opt.weight_decay == pytest.approx(5e-4)
    lrs = []
    for step in (0, 10, 20, 60, 100):
        opt.iterations.assign(step)
        lrs.append(current_lr(opt))
    assert lrs[0] == pytest.approx(0.0) and lrs[1] == pytest.approx(o.lr / 2)
    assert lrs[2] == pytest.approx(o.lr) and lrs[3] == pytest.approx(o.lr / 2)
    assert lrs[4] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="needs the number of steps"):
        build_optimizer(o)


def test_triangle_schedule_is_airbenchs_and_saves(cfg, tmp_path):
    """Linear from 0.2 x lr up to lr at 23% of the steps, linear down to 0.07 x lr at the end;
    a model compiled with it saves and loads in safe mode."""
    import keras

    from cifar_exp.keras_files import load_keras_file

    o = with_overrides(
        cfg,
        {
            "optimizer.schedule": "triangle",
            "optimizer.decay": 0.0,
            "optimizer.lr": 1.0,
            "optimizer.warmup": 0.25,
            "optimizer.start_factor": 0.2,
            "optimizer.end_factor": 0.07,
        },
    ).optimizer
    opt = build_optimizer(o, total_steps=100)
    expected = {0: 0.2, 10: 0.52, 25: 1.0, 50: 1 - 0.93 / 3, 100: 0.07, 150: 0.07}
    for step, lr in expected.items():
        opt.iterations.assign(step)
        assert current_lr(opt) == pytest.approx(lr, abs=1e-6), step
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()])
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "m.keras")
    loaded = load_keras_file(tmp_path / "m.keras", "m.keras").optimizer
    for step in (10, 50):
        loaded.iterations.assign(step)
        assert current_lr(loaded) == pytest.approx(expected[step], abs=1e-6)


def test_onecycle_starts_and_ends_at_its_factors(cfg):
    o = with_overrides(
        cfg,
        {
            "optimizer.schedule": "onecycle",
            "optimizer.decay": 0.0,
            "optimizer.warmup": 0.2,
            "optimizer.start_factor": 0.1,
            "optimizer.end_factor": 0.05,
        },
    ).optimizer
    opt = build_optimizer(o, total_steps=100)
    for step, lr in {0: 0.1 * o.lr, 20: o.lr, 60: 0.525 * o.lr, 100: 0.05 * o.lr}.items():
        opt.iterations.assign(step)
        assert current_lr(opt) == pytest.approx(lr, rel=1e-5), step


def test_freeze_after_holds_a_variable_from_its_epoch_on():
    import keras

    from cifar_exp.callbacks import FreezeAfter

    v = keras.Variable([1.0, 2.0])
    cb = FreezeAfter(v, epochs=2)
    for epoch in range(4):
        cb.on_epoch_begin(epoch)
        for step in range(3):
            v.assign(v.value + 1.0)  # what a train step would do
            cb.on_train_batch_end(step)
    # trained in epochs 0 and 1 (6 steps), held from epoch 2 on
    np.testing.assert_allclose(np.asarray(v), [7.0, 8.0])


def test_onecycle_and_legacy_decay_do_not_mix(cfg):
    from cifar_exp.config import ConfigError

    with pytest.raises(ConfigError, match=r"optimizer\.decay: must be 0 unless"):
        with_overrides(cfg, {"optimizer.schedule": "onecycle", "optimizer.decay": 0.001})


def test_fast_model_recipe_trains(cfg, splits):
    """resnet_small with augmentation, label smoothing and one-cycle: the lr ends at 0 and the
    synthetic classes are learnt."""
    cfg = with_overrides(
        cfg,
        {
            "model": {"name": "resnet_small", "width": 8},
            "trainer.augment": True,
            "trainer.label_smoothing": 0.2,
            "trainer.epochs": 3,
            "trainer.batch_size": 32,
            "optimizer.lr": 0.05,
            "optimizer.decay": 0.0,
            "optimizer.schedule": "onecycle",
            "optimizer.nesterov": True,
            "optimizer.weight_decay": 5e-4,
        },
    )
    result = train(cfg, splits, verbose="0")
    assert result.history["lr"][-1] == pytest.approx(0.0, abs=1e-9)
    assert result.history["val_accuracy"][-1] > 0.3 and 0 <= result.test.accuracy <= 1
    # every loss reported is plain cross-entropy; the smoothed objective keeps its own name
    from cifar_exp.train import evaluate

    assert {"objective", "val_objective", "loss", "val_loss"} <= set(result.history)
    assert "xent" not in result.history and "val_xent" not in result.history
    plain = evaluate(result.model, splits.x_val, splits.y_val).loss
    assert result.history["val_loss"][-1] == pytest.approx(plain, rel=0.02)
    assert abs(result.history["val_objective"][-1] - plain) > 0.05  # smoothing: another number


def test_mixed_bfloat16_trains(cfg, splits):
    cfg = with_overrides(cfg, {"trainer.precision": "mixed_bfloat16", "trainer.epochs": 1})
    result = train(cfg, splits, verbose="0")
    assert result.precision == "mixed_bfloat16"
    assert math.isfinite(result.history["loss"][0])
    assert result.model.layers[0].compute_dtype == "bfloat16"
    import keras

    keras.mixed_precision.set_global_policy("float32")


def test_lookahead_moves_weights_to_their_growing_average():
    import keras

    from cifar_exp.callbacks import Lookahead

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    w = model.weights[0]
    cb = Lookahead(total_steps=10, start_epoch=1, every=2, base=0.5, power=1.0)
    cb.set_model(model)
    cb.set_params({"epochs": 2, "steps": 5})
    cb.on_epoch_begin(0)
    for step in range(5):  # epoch 0: before start_epoch, nothing happens
        w.assign([[9.0]])
        cb.on_train_batch_end(step)
    assert float(w[0, 0]) == 9.0
    cb.on_epoch_begin(1)
    w.assign([[1.0]])
    cb.on_train_batch_end(0)  # step 6: the average starts here, at 1.0
    w.assign([[3.0]])
    cb.on_train_batch_end(1)  # step 7: not a multiple of `every`
    assert float(w[0, 0]) == 3.0
    cb.on_train_batch_end(2)  # step 8: rho = 0.5**2 * 8/10 = 0.2 -> 1 + 0.8 * (3 - 1)
    assert float(w[0, 0]) == pytest.approx(2.6)
    w.assign([[5.0]])
    cb.on_train_batch_end(3)  # step 9: nothing
    assert float(w[0, 0]) == 5.0
    cb.on_train_batch_end(4)  # step 10: 2.6 + (1 - 0.25) * (5 - 2.6), the epoch's last step
    assert float(w[0, 0]) == pytest.approx(4.4)
    w.assign([[7.0]])
    cb.on_epoch_begin(2)
    for step in range(4):  # steps 11-14: the average moves to 4.4 + 0.7 * (7 - 4.4) = 6.22
        cb.on_train_batch_end(step)
    w.assign([[8.0]])
    cb.on_train_batch_end(4)  # step 15, no update, but the epoch's last: back to the average
    assert float(w[0, 0]) == pytest.approx(6.22)


def test_airbench_recipe_trains(cfg, splits):
    """airbench's recipe as `experiment=airbench` sets it, on a narrow network: whitening from
    the training images (its bias held after 3 epochs), 2-pixel crops with alternating flips,
    label smoothing, the triangle schedule, Lookahead, 6-view TTA after training: the synthetic
    classes are learnt, and the test evaluation is the 6-view one."""
    cfg = with_overrides(
        cfg,
        {
            "model": {"name": "airbench", "width": 8, "tta": True, "tta_shift": 1},
            "trainer.augment": True,
            "trainer.translate": 2,
            "trainer.alternate_flips": True,
            "trainer.label_smoothing": 0.2,
            "trainer.lookahead": True,
            "trainer.epochs": 5,
            "trainer.batch_size": 32,
            "optimizer.lr": 0.2,
            "optimizer.momentum": 0.85,
            "optimizer.decay": 0.0,
            "optimizer.schedule": "triangle",
            "optimizer.warmup": 0.23,
            "optimizer.start_factor": 0.2,
            "optimizer.end_factor": 0.07,
            "optimizer.nesterov": True,
        },
    )
    held = []

    class Watch(__import__("keras").callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            bias = next(v for v in self.model.weights if v.path.endswith("whiten_bias/bias"))
            held.append(np.asarray(bias).copy())

    result = train(cfg, splits, callbacks=[Watch()], verbose="0")
    assert result.history["val_accuracy"][-1] > 0.3
    assert not np.array_equal(held[0], held[1])  # trained in the first epochs
    assert np.array_equal(held[2], held[3]) and np.array_equal(held[3], held[4])  # then held
    assert result.model.get_layer("shift_tta") is not None
    from cifar_exp.train import evaluate

    again = evaluate(result.model, splits.x_test, splits.y_test)
    assert again.accuracy == pytest.approx(result.test.accuracy)


def test_input_threads_reach_every_pipeline_of_a_training(cfg, splits, monkeypatch):
    """`trainer.input_threads` sets the training, validation and test-set pipelines alike."""
    import cifar_exp.train as train_module

    seen, real = [], train_module.make_dataset
    monkeypatch.setattr(
        train_module, "make_dataset", lambda *a, **k: seen.append(k.get("threads")) or real(*a, **k)
    )
    train(
        with_overrides(cfg, {"trainer.epochs": 1, "trainer.input_threads": 2}), splits, verbose="0"
    )
    assert len(seen) == 3 and set(seen) == {2}  # train, validation, test
