"""Study throughput against the number of workers (`search.n_workers`): the same study (the
reference CNN, the same space, sampler seed and trial seeds) run to the same number of
finished trials with N = 1, 2, ... workers, whole `sweep` processes, alternated.

    python benchmarks/workers.py --workers 1 2 --trials 6 --images 5000 --epochs 2 --repeats 2

Reports finished trials per hour (median over repeats) and the speed-up against one worker;
`trainer.threads` is split between the workers as `sweep --workers N` does.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def run_study(workers: int, args: object) -> float:
    """Seconds for a whole `sweep --workers N` process to finish the study, from scratch."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "cifar_exp",
            "sweep",
            "-q",
            "--workers",
            str(workers),
            "experiment=lr_batch",
            f"search.n_trials={args.trials}",
            "search.confirm.top_k=0",
            "search.pruner.name=none",
            "search.space.trainer.batch_size=null",
            f"trainer.batch_size={args.batch_size}",
            f"trainer.epochs={args.epochs}",
            f"data.limit_train={args.images}",
            "tracking.log_model=false",
            f"tracking.dir={tmp}/mlruns",
            *common.data_overrides(args.data),
        ]
        seconds, proc = common.timed(
            lambda: subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        )
        if proc.returncode != 0:
            raise SystemExit(f"sweep --workers {workers} failed:\n{proc.stderr[-2000:]}")
        return seconds


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cases = {f"{n} worker(s)": (lambda n=n: run_study(n, args)) for n in args.workers}
    times = common.alternate(cases, args.repeats)
    base = common.stats(times[f"{args.workers[0]} worker(s)"])["median"]
    rows = []
    for n in args.workers:
        s = common.stats(times[f"{n} worker(s)"])
        rows.append(
            {
                "workers": n,
                "study seconds (median)": round(s["median"], 1),
                "min-max": f"{s['min']:.0f}-{s['max']:.0f}",
                "trials per hour": round(args.trials * 3600 / s["median"], 1),
                f"speed-up vs {args.workers[0]}": round(base / s["median"], 2),
                "repeats": s["n"],
            }
        )
    common.write(
        "workers",
        args.out,
        {"args": {k: v for k, v in vars(args).items() if k != "out"}, "times": times},
        rows,
        f"Study throughput by workers ({args.trials} trials of {args.epochs} epochs on "
        f"{args.images} images, batch {args.batch_size})",
    )


if __name__ == "__main__":
    main()
