"""The speed levers change nothing measured: several train steps per compiled call
(`trainer.steps_per_execution`) give the same metrics and still report batch progress, and the
test evaluation taken from the last epoch's validation (when that ran on the test set) equals
a separate evaluation of the trained model; predictions take one step per compiled call in
batches of at least PREDICT_BATCH, and give what Keras's own predict gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cifar_exp import train as train_module
from cifar_exp.config import with_overrides
from cifar_exp.data import load_cifar10
from cifar_exp.train import EpochHook, evaluate, train


@pytest.fixture()
def tiny(cfg):
    """Batch 32 over 500 training images: 16 steps, so groups of 3 leave a partial group;
    one step per call unless a test says otherwise."""
    return with_overrides(
        cfg, {"trainer.batch_size": 32, "trainer.epochs": 2, "trainer.steps_per_execution": 1}
    )


def test_steps_per_execution_gives_the_same_metrics(tiny):
    splits = load_cifar10(tiny.data)
    one = train(tiny, splits, evaluate_test=False, verbose="0")
    grouped = train(
        with_overrides(tiny, {"trainer.steps_per_execution": 3}),
        splits,
        evaluate_test=False,
        verbose="0",
    )
    assert grouped.model.steps_per_execution == 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        np.testing.assert_allclose(grouped.history[key], one.history[key], rtol=1e-5, err_msg=key)


def test_batch_progress_with_steps_per_execution(tiny):
    splits = load_cifar10(tiny.data)
    heard: list[tuple[int, int, int]] = []
    hook = EpochHook(lambda epoch, logs: False, lambda *a: heard.append(a), every_s=0.0)
    cfg = with_overrides(tiny, {"trainer.steps_per_execution": 3})
    train(cfg, splits, [hook], evaluate_test=False, verbose="0")
    steps = -(-len(splits.y_train) // 32)
    for epoch in (1, 2):
        done = [d for e, d, total in heard if e == epoch]
        assert {total for e, _, total in heard if e == epoch} == {steps}
        assert done[0] == 0 and done[-1] == steps  # starts at 0, ends at the last batch
        assert done == sorted(done) and 1 < len(done) < steps + 1  # grouped, in order


def test_lookahead_keeps_single_steps(tiny):
    splits = load_cifar10(tiny.data)
    cfg = with_overrides(
        tiny, {"trainer.steps_per_execution": 4, "trainer.lookahead": True, "trainer.epochs": 1}
    )
    assert train(cfg, splits, evaluate_test=False, verbose="0").model.steps_per_execution == 1


def test_prediction_is_one_step_per_call_and_not_batch_bound(tiny):
    """Keras unrolls `steps_per_execution` prediction steps into one graph (seconds of tracing
    for 64); predictions take one step per call, in batches of at least PREDICT_BATCH, and
    give what Keras's own predict at the training batch gives."""
    from cifar_exp.models import PREDICT_BATCH

    cfg = with_overrides(tiny, {"trainer.steps_per_execution": 64, "trainer.epochs": 1})
    splits = load_cifar10(cfg.data)
    model = train(cfg, splits, evaluate_test=False, verbose="0").model
    assert model.steps_per_execution == 64
    traced = []
    real_step = model.predict_step
    model.predict_step = lambda data: traced.append(1) or real_step(data)
    x = splits.x_train
    assert len(x) > PREDICT_BATCH  # two batches, the last one short
    probs = train_module.predict_probs(model, x, cfg.trainer.batch_size)
    assert len(traced) <= 2  # the full batch and the short last one; unrolled: 4 or more
    assert model.steps_per_execution == 64  # restored for training
    again = train_module.predict_probs(model, x, cfg.trainer.batch_size)
    assert len(traced) <= 2 and (again == probs).all()  # its function is kept
    keras_own = model.predict(x.astype(np.float32) / 255, batch_size=32, verbose=0)
    assert len(traced) > 3  # Keras's own prediction, unrolled as compiled
    assert probs.shape == keras_own.shape == (len(x), 10)
    np.testing.assert_allclose(probs, keras_own, rtol=1e-6, atol=1e-7)
    assert (probs.argmax(1) == keras_own.argmax(1)).all()


def _on_test(cfg, **more):
    return with_overrides(cfg, {"data.validation": "test", **more})


def test_test_evaluation_comes_from_the_last_validation(tiny, monkeypatch):
    cfg = _on_test(tiny)
    splits = load_cifar10(cfg.data)
    assert splits.x_val is splits.x_test
    passes = []
    real = train_module.predict_probs
    monkeypatch.setattr(
        train_module, "predict_probs", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    result = train(cfg, splits, verbose="0")
    assert len(passes) == 1  # one pass over the test set, not a second one after training
    separate = evaluate(result.model, splits.x_test, splits.y_test, cfg.trainer.batch_size)
    assert result.test.metrics() == separate.metrics()
    assert result.history["val_accuracy"][-1] == result.test.accuracy
    assert result.history["val_loss"][-1] == result.test.loss
    # its pass is the last epoch's validation time, as Keras's validation is the others'
    times = zip(result.history["val_time"], result.history["epoch_time"], strict=True)
    assert all(0 < v < e for v, e in times)
    # against Keras's own validation of the same training (same seed): the same numbers
    keras_validated = train(cfg, splits, evaluate_test=False, verbose="0")
    for key in ("val_accuracy", "val_loss"):  # Keras averages in float32
        np.testing.assert_allclose(
            result.history[key], keras_validated.history[key], rtol=1e-5, err_msg=key
        )
    assert keras_validated.history["loss"] == result.history["loss"]


def test_objective_of_the_reused_validation_matches_keras(overrides):
    """With label smoothing and a weight penalty, `val_objective` is the compiled loss."""
    from cifar_exp.config import compose

    cfg = compose(
        [
            *overrides,
            "model=resnet_small",
            "model.width=8",
            "model.l2=0.001",
            "trainer.label_smoothing=0.1",
            "trainer.epochs=1",
            "data.validation=test",
        ]
    )
    splits = load_cifar10(cfg.data)
    reused = train(cfg, splits, verbose="0")
    keras_validated = train(cfg, splits, evaluate_test=False, verbose="0")
    for key in ("val_loss", "val_objective", "val_accuracy"):
        np.testing.assert_allclose(
            reused.history[key], keras_validated.history[key], rtol=1e-5, err_msg=key
        )
    assert reused.history["val_objective"][-1] != reused.history["val_loss"][-1]


def test_stopped_early_still_evaluates_the_test_set(tiny):
    cfg = _on_test(tiny)
    splits = load_cifar10(cfg.data)
    hook = EpochHook(lambda epoch, logs: epoch == 1)  # stop after the first of 2 epochs
    result = train(cfg, splits, [hook], verbose="0")
    assert result.epochs_run == 1
    separate = evaluate(result.model, splits.x_test, splits.y_test, cfg.trainer.batch_size)
    assert result.test.metrics() == separate.metrics()


def test_tracked_run_records_the_reused_evaluation(tiny):
    from mlflow import MlflowClient

    from cifar_exp.runs import train_tracked

    cfg = _on_test(tiny, **{"tracking.log_model": False})
    result = train_tracked(cfg, verbose="0")
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["test_accuracy"] == result.test.accuracy
    assert run.data.metrics["val_accuracy"] == result.test.accuracy
    path = MlflowClient().download_artifacts(result.run_id, "test_metrics.json")
    recorded = json.loads(Path(path).read_text())
    assert recorded["confusion_matrix"] == result.test.confusion_matrix
    assert result.test.run_id == result.run_id


def _python(code: str, cwd: Path) -> str:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_optuna_is_quieted_when_first_imported(tmp_path):
    code = (
        "import sys\n"
        "from cifar_exp import logs\n"
        "logs.quiet_libraries()\n"
        "print('optuna' in sys.modules)\n"
        "import optuna\n"
        "print(optuna.logging.get_verbosity() == optuna.logging.ERROR)\n"
    )
    assert _python(code, tmp_path).split() == ["False", "True"]


def test_train_imports_no_optuna(cifar_tarball, workdir):
    """The `train` command, MLflow on, end to end: Optuna is never imported."""
    code = (
        "import sys\n"
        "from cifar_exp.__main__ import main\n"
        f"rc = main(['train', 'experiment=tiny', 'trainer.epochs=1', 'data.validation=test',\n"
        f"           'data.path={cifar_tarball}', 'tracking.dir={workdir / 'mlruns'}'])\n"
        "print(rc, 'optuna' in sys.modules, 'mlflow' in sys.modules)\n"
    )
    assert _python(code, workdir).split()[-3:] == ["0", "False", "True"]


def test_trial_preload_imports_the_trial_stack_and_starts_no_thread(tmp_path):
    """What the forkserver imports once for every trial: all of it, and no thread (a fork
    copies only the forking thread)."""
    code = (
        "import sys, threading\n"
        "import cifar_exp._preload\n"
        "import cifar_exp.ahead as p\n"
        "from mlflow.utils import requirements_utils as r\n"
        "print(threading.active_count(), all(m in sys.modules for m in p.LAZY),\n"
        "      r._MODULES_TO_PACKAGES is not None and 'tensorflow' in r._MODULES_TO_PACKAGES)\n"
    )
    # the last: MLflow's map of installed packages, which logging a model needs, built once
    assert _python(code, tmp_path).split()[-3:] == ["1", "True", "True"]


def test_a_tracked_training_prepares_its_recording_while_fit_runs(overrides, workdir):
    """A tracked training outside a study's forkserver (where nothing prepared anything) builds
    MLflow's package map and imports what recording needs on a thread that starts once `fit`'s
    first batch has ended (not with `fit`: it would share Python with the step's tracing, and
    not after `fit`); the thread is done before anything is recorded."""
    code = (
        "import threading, keras\n"
        "from mlflow.utils import requirements_utils as r\n"
        "from cifar_exp import tracking\n"
        "from cifar_exp.config import compose\n"
        "from cifar_exp.runs import train_tracked\n"
        "seen = {}\n"
        "def alive():\n"
        "    return any(t.name == 'cifar-exp-ahead' for t in threading.enumerate())\n"
        "class Look(keras.callbacks.Callback):\n"
        "    def on_train_begin(self, logs=None):\n"
        "        seen['begin'] = alive() or r._MODULES_TO_PACKAGES is not None\n"
        "    def on_train_end(self, logs=None):\n"
        "        seen['end'] = alive() or r._MODULES_TO_PACKAGES is not None\n"
        "log_test_metrics = tracking.log_test_metrics\n"
        "def recording(*args, **kwargs):\n"
        "    seen['recording'] = alive()\n"
        "    return log_test_metrics(*args, **kwargs)\n"
        "tracking.log_test_metrics = recording\n"
        f"cfg = compose({overrides!r} + ['trainer.epochs=1'])\n"
        "result = train_tracked(cfg, callbacks=[Look()], verbose='0')\n"
        "built = 'tensorflow' in r._MODULES_TO_PACKAGES\n"
        "print(seen, built, bool(result.run_id))\n"
    )
    out = _python(code, workdir).strip().splitlines()[-1]
    assert out == "{'begin': False, 'end': True, 'recording': False} True True"


@pytest.mark.slow
def test_lever_and_process_benchmarks_write_their_tables(cifar_tarball, workdir):
    """The new benchmark modes run (smoke-test size); their numbers come from real runs."""
    import subprocess
    import sys

    from .conftest import REPO

    def bench(script: str, *args: str) -> None:
        command = [sys.executable, str(REPO / "benchmarks" / script), "--out", "results", *args]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    bench("throughput.py", "--levers", "--spe=1,2", "--spe-batches=32", "--repeats=1",
          "--seconds=0.2")  # fmt: skip
    rows = json.loads((workdir / "results" / "throughput_levers.json").read_text())["rows"]
    assert rows[0]["case"] == "batch 32, steps_per_execution 1" and len(rows) == 6
    raw = json.loads((workdir / "results" / "throughput_levers.json").read_text())["raw"]
    assert raw["batch 32, steps_per_execution 2"][0]["steps_per_execution"] == 2
    assert raw["batch 32, spe 2, XLA (deterministic off)"][0]["xla"] is True
    assert raw["batch 32, spe 2, float32"][0]["precision in force"] == "float32"
    bench("framework_overhead.py", "--processes", f"--data={cifar_tarball}", "--repeats=1",
          "--limit-train=300")  # fmt: skip
    result = json.loads((workdir / "results" / "framework_processes.json").read_text())
    sides = {r["process"]: r for r in result["rows"]}
    assert sides["plain"]["in fit s"] > 0 and sides["cifar_exp"]["in fit s"] > 0
    assert 0 <= sides["cifar_exp"]["test acc"] <= 1
    assert sides["ratio cifar_exp/plain"]["wall s (median)"] > 0


def test_the_cli_exits_at_once_with_everything_recorded(cifar_tarball, workdir):
    """`python -m cifar_exp train` ends without the interpreter's tear-down (`exit_now`): the
    output is complete, the exit code right, the run finished with its model and test record."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    from cifar_exp.config import compose
    from cifar_exp.tracking import setup

    args = ["experiment=tiny", "trainer.epochs=1", "data.validation=test",
            f"data.path={cifar_tarball}", f"tracking.dir={workdir / 'mlruns'}"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "train", *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "browse: python -m cifar_exp ui" in out.stdout  # the last line, flushed
    experiment = setup(compose(args).tracking)
    (run,) = MlflowClient().search_runs([experiment])
    assert run.info.status == "FINISHED"
    assert {"test_accuracy", "val_accuracy", "train_time"} <= set(run.data.metrics)
    names = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"test_metrics.json", "history.csv", "plots"} <= names
    assert MlflowClient().search_logged_models([experiment])  # the model
    bad = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "train", "trainer.nope=1"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
    )
    assert bad.returncode == 2 and "trainer.nope" in bad.stderr
