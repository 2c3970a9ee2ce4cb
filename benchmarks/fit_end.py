"""The wait at the end of `fit`: tf.data's autotuning thread. A tracked training of the
reference settings (`runs.train_tracked`, as a trial's process calls it, here with its test
pass), each case a fresh process, the cases alternated `--repeats` times:

    python benchmarks/fit_end.py --repeats 4
    python benchmarks/fit_end.py --repeats 4 --images 10000 trainer.epochs=2

Cases: `autotune off` (the tool: every pipeline is built without tf.data's autotuning model)
and `autotune on` (the same pipelines with it switched back on, as before 2026-12-07). For
each run: when the callbacks had ended (the last epoch and every `on_train_end`), when `fit`
returned (destroying the training iterator waited for the autotuning thread's next round),
both in seconds from `on_train_begin` (after `fit` has set up its iterator and model), and
the test accuracy, which must agree between the cases. A wait over 0.5 s counts as a stall;
Fisher's exact test compares the cases' stall counts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASES = ("autotune off", "autotune on")
STALL_S = 0.5


def measure(overrides: list[str], autotune: bool) -> dict[str, Any]:
    """One tracked training in this process: when its callbacks had ended (the last epoch's
    and every `on_train_end`) and when `fit` returned, in seconds from `on_train_begin`."""
    common.quiet()
    from cifar_exp import runs
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10

    if autotune:
        common.autotune_on()
    marks = common.mark_fit()  # every callback's on_train_end, the tracking's included
    cfg = compose([*overrides, "trainer.verbose=0"])
    result = runs.train_tracked(cfg, load_cifar10(cfg.data), verbose="0")
    return {
        "callbacks_end_s": marks["end"] - marks["begin"],
        "wait_s": marks["returned"] - marks["end"],
        "test_accuracy": result.test.accuracy if result.test else None,
    }


def main() -> None:
    from scipy.stats import fisher_exact

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4, help="alternated repeats")
    p.add_argument("--images", type=int, default=20000, help="training images per run")
    p.add_argument("overrides", nargs="*", help="config overrides for every case")
    args = p.parse_intermixed_args()
    tracking = Path(args.out) / "fit_end_mlruns"
    overrides = [
        *common.data_overrides(args.data),
        f"data.limit_train={args.images}",
        "data.validation=test",
        "trainer.epochs=1",
        "tracking.log_model=false",
        f"tracking.dir={tracking}",
        *args.overrides,
    ]
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}

    def run(name: str) -> Any:
        def go() -> float:
            got[name].append(
                common.in_fresh_process(
                    "fit_end", "measure", (overrides, name == "autotune on"), what=name
                )
            )
            print(f"  {name}: {got[name][-1]}", flush=True)
            return got[name][-1]["wait_s"]

        return go

    common.alternate({name: run(name) for name in CASES}, args.repeats)
    stalls = {name: sum(r["wait_s"] > STALL_S for r in got[name]) for name in CASES}
    _, p_value = fisher_exact([[stalls[name], len(got[name]) - stalls[name]] for name in CASES])
    accuracies = {r["test_accuracy"] for runs_ in got.values() for r in runs_}
    rows = []
    for name in CASES:
        wait = common.stats([r["wait_s"] for r in got[name]])
        end = common.stats([r["callbacks_end_s"] for r in got[name]])
        rows.append(
            {
                "case": name,
                "runs": len(got[name]),
                f"stalls (> {STALL_S} s)": stalls[name],
                "wait after the callbacks, s (median, range)": (
                    f"{wait['median']:.2f} ({wait['min']:.2f}-{wait['max']:.2f})"
                ),
                "callbacks ended at, s (median)": round(end["median"], 1),
                "fit returned at, s (each run)": ", ".join(
                    f"{r['callbacks_end_s'] + r['wait_s']:.1f}" for r in got[name]
                ),
            }
        )
    common.write(
        "fit_end",
        args.out,
        {
            "repeats": args.repeats,
            "images": args.images,
            "overrides": overrides,
            "fisher_exact_p": p_value,
            "same_test_accuracy": len(accuracies) == 1 and None not in accuracies,
            "raw": got,
        },
        rows,
        f"The wait at the end of fit: stall counts differ by Fisher's exact test p = "
        f"{p_value:.3g}; test accuracy in every run: {sorted(accuracies, key=str)}",
    )


if __name__ == "__main__":
    main()
