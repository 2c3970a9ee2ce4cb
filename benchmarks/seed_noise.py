"""Seed noise: one setting trained with k seeds (the data split fixed), and the spread of its
final metrics: mean, standard deviation and 95 % t-interval of val_accuracy and test_accuracy.

    # the reference CNN at the reference settings, 10 epochs, held-out split, 5 seeds
    python benchmarks/seed_noise.py --seeds 5 trainer.epochs=10

The differences a study decides on must be read against this spread (docs/statistics.md).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds to train (trainer.seed + i)")
    p.add_argument("overrides", nargs="*", help="config overrides (the setting to measure)")
    args = p.parse_intermixed_args()
    common.quiet()
    from cifar_exp.config import compose, with_overrides
    from cifar_exp.runs import train_tracked
    from cifar_exp.stats import summarize

    tmp = Path(tempfile.mkdtemp(prefix="bench-noise-"))
    base = compose(
        [
            *common.data_overrides(args.data),
            f"tracking.dir={tmp / 'mlruns'}",
            "tracking.log_model=false",
            "trainer.verbose=0",
            *args.overrides,
        ]
    )
    runs = []
    for i in range(args.seeds):
        seed = base.trainer.seed + i
        start = time.perf_counter()
        out = train_tracked(with_overrides(base, {"trainer.seed": seed}))
        runs.append(
            {
                "seed": seed,
                "val_accuracy": out.final["val_accuracy"],
                "test_accuracy": out.test.accuracy,
                "val_loss": out.final["val_loss"],
                "test_loss": out.test.loss,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(f"  seed {seed}: {runs[-1]}", flush=True)
    rows = []
    for metric in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        s = summarize([r[metric] for r in runs])
        rows.append(
            {
                "metric": metric,
                "seeds": s.n,
                "mean": s.mean,
                "std": s.std,
                "95% CI low": s.ci_low,
                "95% CI high": s.ci_high,
                "min": min(r[metric] for r in runs),
                "max": max(r[metric] for r in runs),
            }
        )
    what = " ".join(args.overrides) or "defaults"
    common.write(
        "seed_noise", args.out, {"runs": runs, "setting": what}, rows, f"Seed noise: {what}"
    )


if __name__ == "__main__":
    main()
