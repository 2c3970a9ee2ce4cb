"""Small batches in real trainings (issue 17): the tool's `train()` on real images at the
reference settings, with and without the levers it adopted for small batches, each case a
fresh process, the cases alternated `--repeats` times:

    python benchmarks/small_batches.py --repeats 4
    python benchmarks/small_batches.py --batches 32,64,128 --repeats 3 --images 10240

Cases: `before` (tf.data's autotuning model on and one train step per compiled call: the two
levers reverted, everything else as now), `autotune off` (the pipelines as
`data.make_dataset` builds them now, one step per call) and `now` (autotune off,
`trainer.steps_per_execution=64`, the default). Each trains `--epochs` epochs on `--images`
training images, validated on 1,000 test images after every epoch, and counts training images
per second over the whole `fit` (`train_time`: tracing, every epoch and the training
iterators' clean-up, where the autotuning model's wait falls) less the validation passes
(`val_time`; a wait on a validation iterator falls there and is not counted, which favours
`before`). Every run must give the same metrics as the first run of `before` (same seed,
same batches): the benchmark checks it. Mann-Whitney's test (two-sided, exact) compares each
case's rates with `before`'s; with 4 runs a side its smallest p is 0.029.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASES: dict[str, tuple[bool, int]] = {  # name: (autotuning on, steps per call)
    "before": (True, 1),
    "autotune off": (False, 1),
    "now": (False, 64),
}


def measure(overrides: list[str], autotune: bool) -> dict[str, Any]:
    """One training in this process: training images per second over its whole `fit`."""
    common.quiet()
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10
    from cifar_exp.train import train

    if autotune:
        common.autotune_on()
    cfg = compose([*overrides, "trainer.verbose=0"])
    splits = load_cifar10(cfg.data)
    result = train(cfg, splits, evaluate_test=False)
    h = result.history
    seconds = result.train_time - sum(h["val_time"])
    return {
        "img_s": len(splits.y_train) * result.epochs_run / seconds,
        "seconds": seconds,
        "epoch_s": [e - v for e, v in zip(h["epoch_time"], h["val_time"], strict=True)],
        "loss": h["loss"],
        "val_accuracy": h["val_accuracy"],
    }


def main() -> None:
    from scipy.stats import mannwhitneyu

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="32", help="batch sizes, e.g. 32,64,128")
    p.add_argument("--repeats", type=int, default=4, help="alternated repeats")
    p.add_argument("--images", type=int, default=10240, help="training images per run")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("overrides", nargs="*", help="config overrides for every case")
    args = p.parse_intermixed_args()
    rows, raw = [], {}
    for batch in (int(b) for b in args.batches.split(",")):
        shared = [
            *common.data_overrides(args.data),
            f"data.limit_train={args.images}",
            "data.validation=test",
            "data.limit_test=1000",
            f"trainer.epochs={args.epochs}",
            f"trainer.batch_size={batch}",
            *args.overrides,
        ]
        got: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}

        def run(name: str, shared: list[str] = shared, got: dict = got) -> Any:
            autotune, spe = CASES[name]
            overrides = [*shared, f"trainer.steps_per_execution={spe}"]

            def go() -> float:
                got[name].append(
                    common.in_fresh_process(
                        "small_batches", "measure", (overrides, autotune), what=name
                    )
                )
                return got[name][-1]["seconds"]

            return go

        common.alternate({name: run(name) for name in CASES}, args.repeats)
        raw[batch] = got
        before = [r["img_s"] for r in got["before"]]
        base = common.stats(before)["median"]
        first = got["before"][0]
        for name in CASES:
            rates = [r["img_s"] for r in got[name]]
            s = common.stats(rates)
            same = all(
                r["loss"] == first["loss"] and r["val_accuracy"] == first["val_accuracy"]
                for r in got[name]
            )
            p_value = mannwhitneyu(rates, before).pvalue if name != "before" else None
            rows.append(
                {
                    "batch": batch,
                    "case": name,
                    "train img/s (median)": round(s["median"]),
                    "range": f"{s['min']:.0f}-{s['max']:.0f}",
                    "x before": round(s["median"] / base, 2),
                    "Mann-Whitney p": "" if p_value is None else f"{p_value:.3f}",
                    "same metrics as before's first run": same,
                }
            )
            print(rows[-1], flush=True)
    common.write(
        "small_batches",
        args.out,
        {"repeats": args.repeats, "images": args.images, "epochs": args.epochs, "raw": raw},
        rows,
        "Small batches in real trainings: training images/s over the whole fit",
    )


if __name__ == "__main__":
    main()
