"""Benchmarks 1 and 2: framework and tracking overhead.

One epoch of the reference config through `cifar_exp` (`runs.train_tracked`, the `train`
command's path, MLflow on) against a plain Keras script of the same model written the way the
reference wrote it (float arrays scaled in NumPy, one-hot labels, `model.fit` on arrays),
alternating, several repeats. Same 45,000/5,000 split for both. Reported: the epoch time
(fit, validation included) and the whole call, their ratio, and where the framework's extra
time goes: MLflow per epoch, and the fixed per-run cost (model, plots, test evaluation, logging).

    python benchmarks/framework_overhead.py --repeats 3 [--pairs reference,b128] [OVERRIDES]
"""

from __future__ import annotations

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


def plain_keras(splits, batch_size: int) -> dict[str, float]:
    """The reference study's script, modernised only where Keras 3 requires it."""
    import keras
    from keras import layers

    start = time.perf_counter()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    x_train = splits.x_train.astype("float32") / 255.0
    x_val = splits.x_val.astype("float32") / 255.0
    y_train = keras.utils.to_categorical(splits.y_train, 10)
    y_val = keras.utils.to_categorical(splits.y_val, 10)
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
    t0 = time.perf_counter()
    model.fit(
        x_train, y_train, validation_data=(x_val, y_val), epochs=1, batch_size=batch_size, verbose=0
    )
    epoch = time.perf_counter() - t0
    return {"epoch": epoch, "wall": time.perf_counter() - start}


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


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pairs", default="reference,b128", help=f"comma list of {list(PAIRS)}")
    p.add_argument("overrides", nargs="*", help="config overrides for both (e.g. a data subset)")
    args = p.parse_intermixed_args()
    common.quiet()
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
