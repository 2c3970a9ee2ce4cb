"""The benchmark scripts run (in a smoke-test size): a benchmark that cannot run is a defect.
Their numbers are measured by running them for real (docs/benchmarks.md), never here."""

import importlib.util
import json
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def _bench(script, *args, out):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def _tiny_trainings(script, cifar_tarball, workdir, *args):
    """A benchmark of real trainings at smoke size (200 images, one repeat): its JSON result
    and its stderr."""
    out = workdir / "results"
    _, stderr = _bench(
        script,
        f"--data={cifar_tarball}",
        "--images=200",
        "--repeats=1",
        *args,
        f"data.cache_dir={workdir / 'cache'}",
        "data.limit_test=200",
        out=out,
    )
    return json.loads((out / f"{script.removesuffix('.py')}.json").read_text()), stderr


def test_throughput_and_overhead_benchmarks_write_their_tables(cifar_tarball, workdir):
    out = workdir / "results"
    _bench(
        "throughput.py",
        "--models=seed_cnn",
        "--precisions=float32",
        "--batches=32",
        "--seconds=0.2",
        "--jit-batch=32",
        "--threads=1",
        out=out,
    )
    rows = json.loads((out / "throughput.json").read_text())["rows"]
    assert rows[0]["model"] == "seed_cnn" and rows[0]["train img/s"] > 0
    assert [r["xla"] for r in rows] == [False, True, False]  # the XLA row really ran under XLA
    assert rows[2]["precision"] == "float32, 1 thread(s)" and rows[2]["train img/s"] > 0
    printed, _ = _bench(
        "framework_overhead.py",
        f"--data={cifar_tarball}",
        "--repeats=1",
        "--pairs=reference",
        f"data.cache_dir={workdir / 'cache'}",
        "data.val_size=100",
        "data.limit_train=300",
        out=out,
    )
    result = json.loads((out / "framework_overhead.json").read_text())
    row = result["rows"][0]
    assert row["case"] == "reference" and row["epoch ratio ours/plain"] > 0
    assert result["machine"]["cpu_count"] >= 1 and "commit" in result["machine"]
    assert "| reference |" in printed


def test_input_threads_compares_the_pools_on_real_trainings(cifar_tarball, workdir):
    out = workdir / "results"
    _bench(
        "input_threads.py",
        f"--data={cifar_tarball}",
        "--settings=reference",
        "--images=200",
        "--repeats=1",
        f"data.cache_dir={workdir / 'cache'}",
        out=out,
    )
    rows = json.loads((out / "input_threads.json").read_text())["rows"]
    assert [r["case"] for r in rows] == [
        f"{pool}, spe {n}" for pool in ("shared pool", "own thread") for n in (1, 64)
    ]
    assert all(r["train img/s (median)"] > 0 for r in rows)
    assert all(r["same metrics as on the shared pool"] for r in rows)


def test_fit_end_compares_the_wait_with_and_without_autotuning(cifar_tarball, workdir):
    result, _ = _tiny_trainings("fit_end.py", cifar_tarball, workdir)
    assert [r["case"] for r in result["rows"]] == ["autotune off", "autotune on"]
    assert all(r["runs"] == 1 for r in result["rows"])
    assert result["same_test_accuracy"] and 0 <= result["fisher_exact_p"] <= 1


def test_recording_compares_preparing_ahead_with_after_fit(cifar_tarball, workdir):
    result, _ = _tiny_trainings("recording.py", cifar_tarball, workdir)
    assert [r["case"] for r in result["rows"]] == ["ahead (now)", "after fit (before)"]
    assert result["same_test_accuracy"]
    assert set(result["mann_whitney_p"]) == {"fit_s", "recording_s"}
    for runs in result["raw"].values():
        assert len(runs) == 1 and runs[0]["fit_s"] > 0 and runs[0]["recording_s"] > 0
    started = {case: runs[0]["started_in_fit"] for case, runs in result["raw"].items()}
    assert started == {"ahead (now)": True, "after fit (before)": False}


def test_small_batches_compares_the_levers_on_real_trainings(cifar_tarball, workdir):
    result, stderr = _tiny_trainings("small_batches.py", cifar_tarball, workdir, "--epochs=2")
    assert [r["case"] for r in result["rows"]] == ["before", "autotune off", "now"]
    assert all(r["batch"] == 32 and r["train img/s (median)"] > 0 for r in result["rows"])
    assert all(r["same metrics as before's first run"] for r in result["rows"])
    run = result["raw"]["32"]["now"][0]
    assert len(run["epoch_s"]) == 2 and len(run["loss"]) == 2
    assert "oneDNN" not in stderr and "cuInit" not in stderr  # TensorFlow's start-up, quiet


def test_time_to_accuracy_reads_a_training_run(cifar_tarball, workdir):
    out = workdir / "results"
    _bench(
        "time_to_accuracy.py",
        "train",
        f"--data={cifar_tarball}",
        "--thresholds=0.0,1.01",
        f"data.cache_dir={workdir / 'cache'}",
        f"tracking.dir={workdir / 'mlruns'}",
        "experiment=tiny",
        "trainer.epochs=2",
        "tracking.log_model=false",
        out=out,
    )
    result = json.loads((out / "time_to_accuracy_train_tiny.json").read_text())["result"]
    assert result["time_to"]["0.0"] is not None and result["time_to"]["1.01"] is None
    assert len(result["best_over_time"]) >= 1


def test_search_vs_keras_tuner_runs_both_searches(cifar_tarball, workdir):
    pytest.importorskip("keras_tuner", reason="the `bench` extra (make test installs it)")
    out = workdir / "results"
    _bench(
        "search_vs_keras_tuner.py",
        f"--data={cifar_tarball}",
        "--budget=20",
        f"data.cache_dir={workdir / 'cache'}",
        "data.val_size=100",
        "data.limit_train=300",
        "trainer.epochs=2",
        out=out,
    )
    result = json.loads((out / "search_vs_keras_tuner.json").read_text())
    rows = {r["search"]: r for r in result["rows"]}
    assert set(rows) == {"keras_tuner_hyperband", "cifar_exp_lr_batch"}
    for name, row in rows.items():
        assert row["epochs trained"] >= 1, name
        assert 0.0 < row["best at 100% of budget"] <= 1.0, name
        times = [t for t, _ in result["raw"][name]]
        assert times == sorted(times) and times[0] >= 0, name


def test_airbench_original_runs_beside_ours(cifar_tarball, workdir):
    """The side-by-side with the original airbench94, in a smoke-test size (its `airbench`
    extra is a multi-gigabyte install that CI leaves out: then this skips)."""
    # found, not imported: torch imported beside TensorFlow in this process can crash it
    if not all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "airbench")):
        pytest.skip("the `airbench` extra: pip install -e '.[airbench]'")
    out = workdir / "results"
    _bench(
        "airbench_original.py",
        f"--data={cifar_tarball}",
        "--epochs=2",
        "--batch-size=200",
        "--",
        f"data.cache_dir={workdir / 'cache'}",
        f"tracking.dir={workdir / 'mlruns'}",
        "tracking.log_model=false",
        out=out,
    )
    result = json.loads((out / "airbench_original.json").read_text())
    original, ours = result["results"]["original"], result["results"]["ours"]
    assert [e["epoch"] for e in original["per_epoch"]] == [1, 2]
    assert [e["epoch"] for e in ours["per_epoch"]] == [1, 2]
    assert set(original["final"]) == {"tta0", "tta1", "tta2"}
    assert 0 <= ours["final"]["tta2"] <= 1 and original["precision"] == "bfloat16"
    assert result["rows"][-1]["epoch"] == "final"


def test_batch_norm_compares_the_fused_kernel_with_keras(workdir):
    out = workdir / "results"
    _bench(
        "batch_norm.py",
        "--repeats=1",
        "--steps=3",
        "model.width=8",
        "trainer.batch_size=16",
        out=out,
    )
    result = json.loads((out / "batch_norm.json").read_text())
    rows = result["rows"]
    assert [(r["model"], r["case"]) for r in rows] == [
        (model, case)
        for model in ("airbench", "resnet_small")
        for case in ("fused (now)", "keras (before)")
    ]
    # the cases differ: only the tool's layer runs the fused kernel
    assert [r["fused kernel"] for r in rows] == [True, False, True, False]
    assert set(result["mann_whitney_p"]) == {"airbench", "resnet_small"}
    for by_case in result["raw"].values():
        for (run,) in by_case.values():
            assert run["batch"] == 16 and run["step_s"] > 0 and run["predict_img_s"] > 0
        # the same training computed two ways: the losses agree to rounding
        fused, keras_own = (runs[0]["loss"] for runs in by_case.values())
        assert 0 < fused < 10 and fused == pytest.approx(keras_own, rel=1e-3)
