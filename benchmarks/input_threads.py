"""The input pipeline's own threads (`trainer.input_threads`) against TensorFlow's shared pool,
in real trainings: the tool's `train()` on real images, each case a fresh process (thread
pools are fixed when TensorFlow starts), the cases alternated `--repeats` times.

    python benchmarks/input_threads.py --repeats 3
    python benchmarks/input_threads.py --repeats 3 --settings reference --images 10000
    python benchmarks/input_threads.py --repeats 3 trainer.seed=1   # overrides for every case

Settings: `airbench` (experiment=airbench: batch 1024, augmented crops and alternating flips,
Lookahead, one step per call), `reference` (the reference CNN at batch 32, no augmentation,
with `steps_per_execution` 1 and 64: whether the compiled step's gain shows in a real epoch).
Each case trains 2 epochs on `--images` training images, validated on 1,000 test images, and
is timed on its second epoch (the first traces and compiles) without its validation
(`val_time`): training images per second. The metrics of the cases that differ only in
threads must agree: the benchmark checks that they do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SETTINGS: dict[str, dict[str, list[str]]] = {
    "airbench": {
        "shared pool": ["experiment=airbench", "trainer.input_threads=null"],
        "own thread": ["experiment=airbench", "trainer.input_threads=1"],
    },
    "reference": {
        "shared pool, spe 1": ["trainer.input_threads=null", "trainer.steps_per_execution=1"],
        "shared pool, spe 64": ["trainer.input_threads=null", "trainer.steps_per_execution=64"],
        "own thread, spe 1": ["trainer.input_threads=1", "trainer.steps_per_execution=1"],
        "own thread, spe 64": ["trainer.input_threads=1", "trainer.steps_per_execution=64"],
    },
}


def measure(overrides: list[str]) -> dict[str, Any]:
    """One training in this process: its second epoch's training images per second."""
    common.quiet()
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10
    from cifar_exp.train import train

    cfg = compose(
        [
            *overrides,
            "data.validation=test",
            "data.limit_test=1000",
            "trainer.epochs=2",
            "trainer.verbose=0",
        ]
    )
    splits = load_cifar10(cfg.data)
    h = train(cfg, splits, evaluate_test=False).history
    seconds = h["epoch_time"][1] - h["val_time"][1]
    return {
        "img_s": len(splits.y_train) / seconds,
        "seconds": seconds,
        "loss": h["loss"],
        "val_accuracy": h["val_accuracy"],
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--settings", default="airbench,reference", help="of: airbench, reference")
    p.add_argument("--repeats", type=int, default=3, help="alternated repeats")
    p.add_argument("--images", type=int, default=10240, help="training images per case")
    p.add_argument("overrides", nargs="*", help="config overrides for every case")
    args = p.parse_intermixed_args()
    data = [*common.data_overrides(args.data), f"data.limit_train={args.images}", *args.overrides]
    rows, raw = [], {}
    for setting in args.settings.split(","):
        if setting not in SETTINGS:
            raise SystemExit(f"error: --settings: unknown setting {setting!r}")
        cases = SETTINGS[setting]
        got: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}

        def run(name: str, cases: dict = cases, got: dict = got) -> Any:
            def go() -> float:
                got[name].append(
                    common.in_fresh_process(
                        "input_threads", "measure", ([*data, *cases[name]],), what=name
                    )
                )
                return got[name][-1]["seconds"]

            return go

        common.alternate({name: run(name) for name in cases}, args.repeats)
        raw[setting] = got
        names = list(cases)
        base = common.stats([r["img_s"] for r in got[names[0]]])["median"]
        for name in names:
            s = common.stats([r["img_s"] for r in got[name]])
            twin = names[names.index(name) % (len(names) // 2)]  # same case, shared pool
            same = all(
                a["loss"] == b["loss"] and a["val_accuracy"] == b["val_accuracy"]
                for a, b in zip(got[name], got[twin], strict=True)
            )
            rows.append(
                {
                    "setting": setting,
                    "case": name,
                    "train img/s (median)": round(s["median"]),
                    "range": f"{s['min']:.0f}-{s['max']:.0f}",
                    f"x {names[0]}": round(s["median"] / base, 2),
                    "same metrics as on the shared pool": same,
                }
            )
            print(rows[-1], flush=True)
    common.write(
        "input_threads",
        args.out,
        {"repeats": args.repeats, "images": args.images, "raw": raw},
        rows,
        "The input pipeline's own thread against the shared pool: training images/s",
    )


if __name__ == "__main__":
    main()
