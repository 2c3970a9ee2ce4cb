"""The recording after `fit`: a tracked training's time from `fit` returning to its run being
recorded (test metrics, plots, history, the model logged), with what that needs prepared on a
thread while `fit` runs (`tracking.RecordAhead`, the tool) and without it (`after fit`: the
callback switched off, as before 2026-12-08). Each run a fresh process (the preparation is
per process), the cases alternated `--repeats` times:

    python benchmarks/recording.py --repeats 8
    python benchmarks/recording.py --repeats 4 --images 10000 trainer.batch_size=128

For each run: `fit` (from `on_train_begin` to `fit` returning, which must not grow: the
thread shares the machine with the training), the recording after it, whether the
preparation had started and whether it was done (MLflow's package map built) when `fit`
returned, and the test accuracy, which must agree between the cases. Mann-Whitney U compares
the cases' times.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CASES = ("ahead (now)", "after fit (before)")


def measure(overrides: list[str], ahead: bool) -> dict[str, Any]:
    """One tracked training in this process: `fit`'s time and the recording's after it, s."""
    common.quiet()
    from mlflow.utils import requirements_utils

    from cifar_exp import runs, tracking
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10

    if not ahead:
        tracking.RecordAhead.on_train_batch_end = lambda *a, **k: None  # type: ignore[method-assign]

    def at_return(marks: dict[str, Any]) -> None:
        # MLflow's package map, the largest part of the preparation, ready when `fit` returned
        marks["prepared"] = requirements_utils._MODULES_TO_PACKAGES is not None
        started = any(t.name == "cifar-exp-ahead" for t in threading.enumerate())
        marks["started"] = started or marks["prepared"]

    marks = common.mark_fit(at_return)
    cfg = compose([*overrides, "trainer.verbose=0"])
    result = runs.train_tracked(cfg, load_cifar10(cfg.data), verbose="0")
    recorded = time.perf_counter()
    return {
        "fit_s": marks["returned"] - marks["begin"],
        "recording_s": recorded - marks["returned"],
        "started_in_fit": marks["started"],
        "prepared_when_fit_returned": marks["prepared"],
        "test_accuracy": result.test.accuracy if result.test else None,
    }


def main() -> None:
    from scipy.stats import mannwhitneyu

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=8, help="alternated repeats")
    p.add_argument("--images", type=int, default=20000, help="training images per run")
    p.add_argument("overrides", nargs="*", help="config overrides for every case")
    args = p.parse_intermixed_args()
    overrides = [
        *common.data_overrides(args.data),
        f"data.limit_train={args.images}",
        "data.validation=test",
        "trainer.epochs=1",
        f"tracking.dir={Path(args.out) / 'recording_mlruns'}",
        *args.overrides,
    ]
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in CASES}

    def run(name: str) -> Any:
        def go() -> float:
            got[name].append(
                common.in_fresh_process(
                    "recording", "measure", (overrides, name == CASES[0]), what=name
                )
            )
            print(f"  {name}: {got[name][-1]}", flush=True)
            return got[name][-1]["recording_s"]

        return go

    common.alternate({name: run(name) for name in CASES}, args.repeats)
    p_values = {
        key: float(
            mannwhitneyu(
                *([r[key] for r in got[name]] for name in CASES), alternative="two-sided"
            ).pvalue
        )
        for key in ("fit_s", "recording_s")
    }
    accuracies = {r["test_accuracy"] for runs_ in got.values() for r in runs_}
    rows = []
    for name in CASES:
        row: dict[str, Any] = {"case": name, "runs": len(got[name])}
        for key, label in (("fit_s", "fit, s"), ("recording_s", "recording after fit, s")):
            s = common.stats([r[key] for r in got[name]])
            row[f"{label} (median, range)"] = f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
        rows.append(row)
    common.write(
        "recording",
        args.out,
        {
            "repeats": args.repeats,
            "images": args.images,
            "overrides": overrides,
            "mann_whitney_p": p_values,
            "same_test_accuracy": len(accuracies) == 1 and None not in accuracies,
            "raw": got,
        },
        rows,
        f"Mann-Whitney U (two-sided), {CASES[0]} against {CASES[1]}: recording p = "
        f"{p_values['recording_s']:.3g}, fit p = {p_values['fit_s']:.3g}; test accuracy in "
        f"every run: {sorted(accuracies, key=str)}",
    )


if __name__ == "__main__":
    main()
