"""Benchmarks 1 and 2: framework and tracking overhead.

One epoch of the reference config through `cifar_exp` (`runs.train_tracked`, the `train`
command's path, MLflow on) against a plain Keras script of the same model written the way the
reference wrote it (float arrays scaled in NumPy, one-hot labels, `model.fit` on arrays),
alternating, several repeats. Same 45,000/5,000 split for both. Reported: the epoch time
(fit, validation included) and the whole call, their ratio, and where the framework's extra
time goes: MLflow per epoch, and the fixed per-run cost (model, plots, test evaluation, logging).

`--processes`: whole process against whole process, as a user meets them: `python -m
cifar_exp train` (reference CNN and SGD, MLflow on, validated on the test set) against the
reference's own script (read the archive, scale, fit validating on the test set, evaluate on
it), each a fresh subprocess, alternated; wall time, time in `fit` and the rest (fixed cost).
`--trial-startup`: what a study's isolated trial process costs before and around its
training (forkserver start, fork, imports not preloaded, MLflow set-up), against the same
training in the calling process. Longer than the other scripts: the three comparisons share
its plain-Keras side.

    python benchmarks/framework_overhead.py --repeats 3 [--pairs reference,b128] [OVERRIDES]
    python benchmarks/framework_overhead.py --processes --repeats 5 [--limit-train 20000]
        [--baseline-src DIR]   # DIR: e.g. `git archive HEAD | tar -x -C DIR`, timed alongside
    python benchmarks/framework_overhead.py --trial-startup --repeats 5 [--preload cifar_exp.runs]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

PAIRS = {
    # name: (batch size, framework precision); the plain script is always float32 as written
    "reference": (32, "float32"),
    "b128": (128, "auto"),
}


def _plain_model():
    """The reference CNN as the reference script builds and compiles it."""
    import keras
    from keras import layers

    c = keras.constraints.MaxNorm(3)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_constraint=c),
            layers.Dropout(0.2),
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_constraint=c),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu", kernel_constraint=c),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    lr = keras.optimizers.schedules.InverseTimeDecay(0.01, decay_steps=1, decay_rate=0.01 / 25)
    model.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=0.9),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def plain_keras(splits, batch_size: int) -> dict[str, float]:
    """The reference study's script, modernised only where Keras 3 requires it."""
    import keras

    start = time.perf_counter()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    x_train = splits.x_train.astype("float32") / 255.0
    x_val = splits.x_val.astype("float32") / 255.0
    y_train = keras.utils.to_categorical(splits.y_train, 10)
    y_val = keras.utils.to_categorical(splits.y_val, 10)
    model = _plain_model()
    t0 = time.perf_counter()
    model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=batch_size, verbose=0
    )
    epoch = time.perf_counter() - t0
    return {"epoch": epoch, "wall": time.perf_counter() - start}


def plain_script(path: str, limit_train: int, batch_size: int = 32) -> None:
    """The reference's whole script, as its own process: read the archive (as
    keras.datasets.cifar10 does), scale, one-hot, fit validating on the test set, evaluate on
    the test set, print the accuracy. Prints `fit_s=` for the caller."""
    import pickle
    import tarfile

    import keras
    import numpy as np

    def batch(tar, name):
        d = pickle.load(tar.extractfile(f"cifar-10-batches-py/{name}"), encoding="bytes")
        return d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.array(d[b"labels"])

    with tarfile.open(path) as tar:
        parts = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
        x_test, y_test = batch(tar, "test_batch")
    x_train = np.concatenate([x for x, _ in parts])[:limit_train].astype("float32") / 255.0
    y_train = keras.utils.to_categorical(np.concatenate([y for _, y in parts])[:limit_train], 10)
    x_test, y_test = x_test.astype("float32") / 255.0, keras.utils.to_categorical(y_test, 10)
    model = _plain_model()
    t0 = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=1,
        batch_size=batch_size,
        verbose=2,
    )
    fit_s = time.perf_counter() - t0
    scores = model.evaluate(x_test, y_test, verbose=0)
    print(f"Accuracy: {scores[1] * 100:.2f}%")
    print(f"fit_s={fit_s}")


def framework(overrides: list[str], probe: dict) -> dict[str, float]:
    from cifar_exp.config import compose
    from cifar_exp.runs import train_tracked

    cfg = compose(overrides)
    probe.update(mlflow_epoch=0.0, log_result=0.0)
    start = time.perf_counter()
    out = train_tracked(cfg)
    wall = time.perf_counter() - start
    return {
        "epoch": out.history["epoch_time"][0],
        "wall": wall,
        "train_time": out.train_time,
        "mlflow_epoch": probe["mlflow_epoch"],
        "log_result": probe["log_result"],
        "val_accuracy": out.final["val_accuracy"],
    }


def instrument(probe: dict) -> None:
    """Time spent in MLflow: the per-epoch callback and the end-of-run logging."""
    from cifar_exp import runs, tracking

    def wrap(owner, name, key):
        real = getattr(owner, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                probe[key] += time.perf_counter() - t0

        setattr(owner, name, timed)

    wrap(tracking.MlflowLogger, "on_epoch_end", "mlflow_epoch")
    wrap(runs, "_log_result", "log_result")
    wrap(tracking, "log_test_metrics", "log_result")  # logged apart from the rest since 68213ba


def _plain_script_file(folder: Path) -> Path:
    """The plain script as a file of its own: it imports nothing of this repository."""
    import inspect

    code = "\n\n".join(
        [
            "import sys\nimport time",
            inspect.getsource(_plain_model),
            inspect.getsource(plain_script),
            "plain_script(sys.argv[1], int(sys.argv[2]))\n",
        ]
    )
    path = folder / "plain_reference.py"
    path.write_text(code)
    return path


def processes(args) -> None:
    """Whole process against whole process (see the module's docstring)."""
    import re
    import subprocess

    from mlflow import MlflowClient

    if not args.data:
        raise SystemExit("error: --processes needs --data or $CIFAR10_PATH")
    tmp = Path(tempfile.mkdtemp(prefix="bench-process-"))
    n = str(args.limit_train)
    ours = [
        *(sys.executable, "-m", "cifar_exp", "train", f"data.path={args.data}"),
        *(f"data.limit_train={n}", "trainer.epochs=1", "data.validation=test"),
        *(f"tracking.dir={tmp / 'mlruns'}", f"data.cache_dir={tmp / 'cache'}", *args.overrides),
    ]
    plain = [sys.executable, str(_plain_script_file(tmp)), args.data, n]
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    commands = {"plain": plain, "cifar_exp": ours}
    if args.baseline_src:  # another version of the tool (e.g. `git archive` of a commit)
        commands["cifar_exp baseline"] = ours
    results: dict[str, list[dict]] = {name: [] for name in commands}

    def run(name: str, command: list[str]) -> dict:
        env = None
        if name == "cifar_exp baseline":
            env = {**os.environ, "PYTHONPATH": str(Path(args.baseline_src) / "src")}
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env)
        wall = time.perf_counter() - start
        if out.returncode:
            raise SystemExit(f"error: {name} failed: {(out.stdout + out.stderr)[-600:]}")
        if name == "plain":
            fit = float(re.search(r"fit_s=([0-9.]+)", out.stdout).group(1))
            acc = float(re.search(r"Accuracy: ([0-9.]+)%", out.stdout).group(1)) / 100
        else:
            experiment = client.get_experiment_by_name("cifar10")
            last = client.search_runs(
                [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
            )[0]
            fit, acc = last.data.metrics["train_time"], last.data.metrics["test_accuracy"]
        return {"wall": wall, "fit": fit, "fixed": wall - fit, "test_accuracy": acc}

    def case(name: str, command: list[str]):
        def go() -> float:
            r = run(name, command)
            results[name].append(r)
            return r["wall"]

        return go

    print("warm-up (page cache, data cache, MLflow store), not counted", flush=True)
    for name, command in commands.items():
        run(name, command)
    common.alternate({name: case(name, c) for name, c in commands.items()}, args.repeats)
    med = {
        side: {k: common.stats([r[k] for r in rs]) for k in ("wall", "fit", "fixed")}
        for side, rs in results.items()
    }
    rows = [
        {
            "process": side,
            "wall s (median)": med[side]["wall"]["median"],
            "wall range": f"{med[side]['wall']['min']:.1f}-{med[side]['wall']['max']:.1f}",
            "in fit s": med[side]["fit"]["median"],
            "outside fit s": med[side]["fixed"]["median"],
            "test acc": common.stats([r["test_accuracy"] for r in rs])["median"],
        }
        for side, rs in results.items()
    ]
    ratio = med["cifar_exp"]["wall"]["median"] / med["plain"]["wall"]["median"]
    rows.append({"process": "ratio cifar_exp/plain", "wall s (median)": ratio})
    if args.baseline_src:
        base = med["cifar_exp baseline"]["wall"]["median"] / med["plain"]["wall"]["median"]
        rows.append({"process": "ratio baseline/plain", "wall s (median)": base})
    common.write(
        "framework_processes",
        args.out,
        {
            "repeats": args.repeats,
            "commands": commands,
            "baseline": args.baseline_src,
            "raw": results,
        },
        rows,
        f"Whole process: `train` against the plain script, {n} training images, one epoch, "
        "validated on the test set",
    )


def trial_startup(args) -> None:
    """An isolated trial process against the same training in this process."""
    from cifar_exp.config import compose, to_dict
    from cifar_exp.runs import train_tracked
    from cifar_exp.study import trial_process

    tmp = Path(tempfile.mkdtemp(prefix="bench-trial-"))
    cfg = compose(
        [
            *common.data_overrides(args.data),
            "data.limit_train=1000",
            "data.limit_test=1000",
            "trainer.epochs=1",
            "trainer.verbose=0",
            f"tracking.dir={tmp / 'mlruns'}",
            *args.overrides,
        ]
    )
    tree = to_dict(cfg)
    marks: dict[str, float] = {}
    if args.preload:  # e.g. the old preload, `cifar_exp.runs`, for a before/after
        trial_process.PRELOAD = args.preload.split(",")

    def isolated() -> float:
        start = time.perf_counter()
        trial_process.run_trial(
            tree,
            lambda epoch, logs: False,
            on_run=lambda run_id: marks.setdefault("run", time.perf_counter() - start),
            close_run=lambda *a: None,
        )
        return time.perf_counter() - start

    def in_process() -> float:
        return common.timed(lambda: train_tracked(cfg, verbose="0"))[0]

    first = isolated()  # starts the forkserver: TensorFlow and the training stack imported
    print(f"  first isolated trial (forkserver start): {first:.2f} s", flush=True)
    in_process()  # warm-up: this process's imports, MLflow store, TensorFlow start-up
    times = common.alternate({"in-process": in_process, "isolated": isolated}, args.repeats)
    m = {k: common.stats(v) for k, v in times.items()}
    startup = [i - p for i, p in zip(times["isolated"], times["in-process"], strict=True)]
    rows = [
        {"case": k, "s (median)": v["median"], "range": f"{v['min']:.2f}-{v['max']:.2f}"}
        for k, v in m.items()
    ]
    rows.append({"case": "first isolated trial (forkserver start)", "s (median)": first})
    rows.append(
        {
            "case": "per-trial start-up (isolated - in-process)",
            "s (median)": common.stats(startup)["median"],
            "range": f"{min(startup):.2f}-{max(startup):.2f}",
        }
    )
    common.write(
        "trial_startup",
        args.out,
        {"repeats": args.repeats, "raw": times, "first": first, "preload": trial_process.PRELOAD},
        rows,
        "Per-trial start-up of an isolated trial process (1,000 images, one epoch)",
    )


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pairs", default="reference,b128", help=f"comma list of {list(PAIRS)}")
    p.add_argument("overrides", nargs="*", help="config overrides for both (e.g. a data subset)")
    p.add_argument("--processes", action="store_true", help="whole process against process")
    p.add_argument("--limit-train", type=int, default=20000, help="training images (--processes)")
    p.add_argument("--baseline-src", help="also time the tool from this source tree (--processes)")
    p.add_argument("--trial-startup", action="store_true", help="isolated trial start-up")
    p.add_argument("--preload", help="modules the trials' forkserver imports (--trial-startup)")
    args = p.parse_intermixed_args()
    if args.processes:
        return processes(args)
    common.quiet()
    if args.trial_startup:
        return trial_startup(args)
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    base = [
        *common.data_overrides(args.data),
        "trainer.epochs=1",
        "trainer.verbose=0",
        *args.overrides,
    ]
    splits = load_cifar10(compose(base).data)
    probe: dict = {}
    instrument(probe)
    rows, raw = [], {}
    for pair in args.pairs.split(","):
        batch, precision = PAIRS[pair]
        print(f"{pair}: batch {batch}, framework precision {precision}", flush=True)
        over = [
            *base,
            f"trainer.batch_size={batch}",
            f"trainer.precision={precision}",
            f"tracking.dir={tmp / 'mlruns'}",
        ]
        results: dict[str, list[dict]] = {"plain": [], "cifar_exp": []}

        def run_plain(batch: int = batch, results: dict = results) -> float:
            r = plain_keras(splits, batch)
            results["plain"].append(r)
            return r["epoch"]

        def run_framework(over: list = over, results: dict = results) -> float:
            r = framework(over, probe)
            results["cifar_exp"].append(r)
            return r["epoch"]

        common.alternate({"plain": run_plain, "cifar_exp": run_framework}, args.repeats)
        raw[pair] = results
        med = {k: common.stats([r["epoch"] for r in v])["median"] for k, v in results.items()}
        wall = {k: common.stats([r["wall"] for r in v])["median"] for k, v in results.items()}
        fw = results["cifar_exp"]
        per_epoch_mlflow = common.stats([r["mlflow_epoch"] for r in fw])["median"]
        fixed = common.stats([r["wall"] - r["train_time"] for r in fw])["median"]
        log_result = common.stats([r["log_result"] for r in fw])["median"]
        spread = {
            k: f"{min(r['epoch'] for r in v):.1f}-{max(r['epoch'] for r in v):.1f}"
            for k, v in results.items()
        }
        rows.append(
            {
                "case": pair,
                "batch": batch,
                "precision (ours)": precision,
                "plain epoch s (median)": med["plain"],
                "plain range": spread["plain"],
                "ours epoch s (median)": med["cifar_exp"],
                "ours range": spread["cifar_exp"],
                "epoch ratio ours/plain": med["cifar_exp"] / med["plain"],
                "whole-call ratio": wall["cifar_exp"] / wall["plain"],
                "MLflow per epoch s": per_epoch_mlflow,
                "MLflow share of epoch %": 100 * per_epoch_mlflow / med["cifar_exp"],
                "end-of-run logging s": log_result,
                "fixed cost per run s": fixed,
                "val acc (ours)": common.stats([r["val_accuracy"] for r in fw])["median"],
            }
        )
    common.write(
        "framework_overhead",
        args.out,
        {"repeats": args.repeats, "raw": raw},
        rows,
        "Framework and tracking overhead: one epoch, reference CNN, 45,000 training images",
    )


if __name__ == "__main__":
    main()
