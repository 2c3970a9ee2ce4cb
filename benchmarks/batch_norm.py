"""Batch normalisation by TensorFlow's fused kernel (`layers.FusedBatchNormalization`, the
tool) against Keras's own computation (`keras`: the layer as before 2026-12-08), in the models
that normalise: seconds per training step and prediction images/s. Each run is a fresh
process; the cases are alternated `--repeats` times:

    python benchmarks/batch_norm.py --repeats 5
    python benchmarks/batch_norm.py --models resnet_small --repeats 3 --steps 12

Each run compiles the model as `train` does, at its experiment's settings (`airbench`:
`experiment=airbench`, batch 1,024; `resnet_small`: `experiment=resnet_fast`, batch 256), one
train step per compiled call so that every step is timed. It trains `--steps` steps on
synthetic images through the tool's pipeline (`data.make_dataset`), the first two untimed
(tracing), and keeps the median of the others. Then it predicts 2,048 images as validation does
(`train.predict_probs`, test-time augmentation included) twice, timing the second.
Each run records whether the model's forward pass in training mode (traced apart from `fit`)
has the fused kernel, and the loss after the last step: both cases start from the same weights
and see the same batches, and the two computations round differently, so their losses agree
closely but not bitwise (the table shows both).
Mann-Whitney U compares the cases' step times, model by model.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASES = ("fused (now)", "keras (before)")
EXPERIMENTS = {"airbench": "experiment=airbench", "resnet_small": "experiment=resnet_fast"}
PREDICT_IMAGES = 2048


def measure(model_name: str, steps: int, fused: bool, overrides: list[str]) -> dict[str, Any]:
    """One run in this process: the median step time (s), prediction images/s and more."""
    common.quiet()
    import keras
    import numpy as np
    import tensorflow as tf

    from cifar_exp.config import compose
    from cifar_exp.data import make_dataset
    from cifar_exp.models import layers
    from cifar_exp.train import compile_model, configure_runtime, predict_probs

    if not fused:
        layers.FusedBatchNormalization.call = keras.layers.BatchNormalization.call  # type: ignore[method-assign]
    cfg = compose(
        [EXPERIMENTS[model_name], "trainer.steps_per_execution=1", "trainer.verbose=0", *overrides]
    )
    configure_runtime(cfg.trainer)
    batch = int(cfg.trainer.batch_size)
    model = compile_model(cfg, steps_per_epoch=steps)
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    one_hot = bool(cfg.trainer.label_smoothing)
    data = make_dataset(x, rng.integers(0, 10, n), batch, shuffle=False, seed=0, one_hot=one_hot)
    ends: list[float] = []
    mark = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter())
    )
    history = model.fit(data, epochs=1, verbose=0, callbacks=[mark])
    step_s = [b - a for a, b in itertools.pairwise(ends[1:])]  # steps 3, 4, ...
    images = x[:PREDICT_IMAGES]
    predict_probs(model, images, batch)
    seconds, _ = common.timed(lambda: predict_probs(model, images, batch))
    spec = tf.TensorSpec((2, 32, 32, 3), "float32")
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(spec).graph
    return {
        "batch": batch,
        "step_s": float(np.median(step_s)),
        "steps_s": step_s,
        "predict_img_s": PREDICT_IMAGES / seconds,
        "fused_kernel": "FusedBatchNormV3" in {op.type for op in graph.get_operations()},
        "loss": float(history.history["loss"][-1]),
    }


def main() -> None:
    from scipy.stats import mannwhitneyu

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="airbench,resnet_small", help="of: " + ", ".join(EXPERIMENTS)
    )
    p.add_argument("--repeats", type=int, default=5, help="alternated repeats")
    p.add_argument("--steps", type=int, default=8, help="train steps per run, 2 untimed")
    p.add_argument("overrides", nargs="*", help="config overrides for every case")
    args = p.parse_intermixed_args()
    names = args.models.split(",")
    if unknown := sorted(set(names) - set(EXPERIMENTS)):
        p.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(EXPERIMENTS)}")
    if args.steps < 3:
        p.error("--steps must be at least 3: the first two are not timed")
    rows, raw, p_values = [], {}, {}
    for name in names:
        got: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}

        def run(case: str, name: str = name, got: dict = got) -> Any:
            def go() -> float:
                got[case].append(
                    common.in_fresh_process(
                        "batch_norm",
                        "measure",
                        (name, args.steps, case == CASES[0], args.overrides),
                        what=f"{name}, {case}",
                    )
                )
                return got[case][-1]["step_s"]

            return go

        common.alternate({case: run(case) for case in CASES}, args.repeats)
        steps = [[r["step_s"] for r in got[case]] for case in CASES]
        p_values[name] = float(mannwhitneyu(*steps, alternative="two-sided").pvalue)
        before = common.stats(steps[1])["median"]
        for case in CASES:
            s = common.stats([r["step_s"] for r in got[case]])
            pred = common.stats([r["predict_img_s"] for r in got[case]])
            rows.append(
                {
                    "model": name,
                    "case": case,
                    "batch": got[case][0]["batch"],
                    "runs": s["n"],
                    "s per step (median, range)": f"{s['median']:.3f} "
                    f"({s['min']:.3f}-{s['max']:.3f})",
                    "x keras": before / s["median"],
                    "predict img/s (median, range)": f"{pred['median']:.0f} "
                    f"({pred['min']:.0f}-{pred['max']:.0f})",
                    "fused kernel": all(r["fused_kernel"] for r in got[case]),
                    "loss after the last step": common.stats([r["loss"] for r in got[case]])[
                        "median"
                    ],
                }
            )
        raw[name] = got
    common.write(
        "batch_norm",
        args.out,
        {"repeats": args.repeats, "steps": args.steps, "mann_whitney_p": p_values, "raw": raw},
        rows,
        "Batch norm, fused kernel against Keras's own: Mann-Whitney U (two-sided) on the step "
        "times, " + ", ".join(f"{name} p = {p:.3g}" for name, p in p_values.items()),
    )


if __name__ == "__main__":
    main()
