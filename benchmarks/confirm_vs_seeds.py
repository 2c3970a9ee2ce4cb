"""The confirmation stage against k seeds per trial, for the same training budget: a Monte
Carlo simulation (no training) of random search over a landscape of configurations whose
single runs scatter with the measured seed noise.

    python benchmarks/confirm_vs_seeds.py --noise 0.0060 --budget 60

For each strategy and each of many simulated studies: which configuration it picks, whether
that is the truly best of the configurations it tried, and the true mean of its pick. The
landscape (true means 0.70 - |N(0, spread)|: a few configurations near the top, many below)
and the noise are inputs, stated in the results; take --noise from benchmarks/seed_noise.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def simulate(
    rng: np.random.Generator,
    budget: int,
    noise: float,
    spread: float,
    seeds: int,
    top_k: int,
    confirm_seeds: int,
) -> tuple[bool, float]:
    """One study: (picked the best configuration it tried, true mean of its pick). `seeds`
    runs per trial; then, if `top_k`, the best `top_k` brought to `confirm_seeds` runs."""
    extra = top_k * max(confirm_seeds - seeds, 0)
    n = (budget - extra) // seeds
    if n < max(top_k, 1):
        raise ValueError("budget too small for this strategy")
    truth = 0.70 - np.abs(rng.normal(0.0, spread, n))
    runs = [list(rng.normal(t, noise, seeds)) for t in truth]
    if top_k:
        order = np.argsort([-np.mean(r) for r in runs])[:top_k]
        for i in order:
            runs[i] += list(rng.normal(truth[i], noise, confirm_seeds - seeds))
        candidates = order
    else:
        candidates = np.arange(n)
    pick = max(candidates, key=lambda i: np.mean(runs[i]))
    return bool(truth[pick] == truth.max()), float(truth[pick])


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--noise", type=float, required=True, help="seed std of the metric")
    p.add_argument("--spread", type=float, default=0.03, help="landscape spread (see above)")
    p.add_argument("--budget", type=int, default=60, help="training runs per study")
    p.add_argument("--studies", type=int, default=4000, help="simulated studies per strategy")
    args = p.parse_intermixed_args()
    strategies = {
        "1 seed per trial": (1, 0, 0),
        "2 seeds per trial": (2, 0, 0),
        "3 seeds per trial": (3, 0, 0),
        "5 seeds per trial": (5, 0, 0),
        "1 seed, confirm top 3 to 5 seeds": (1, 3, 5),
        "1 seed, confirm top 5 to 3 seeds": (1, 5, 3),
    }
    rows = []
    for name, (seeds, top_k, confirm_seeds) in strategies.items():
        rng = np.random.default_rng(0)
        results = [
            simulate(rng, args.budget, args.noise, args.spread, seeds, top_k, confirm_seeds)
            for _ in range(args.studies)
        ]
        hits = np.array([r[0] for r in results])
        picked = np.array([r[1] for r in results])
        extra = top_k * max(confirm_seeds - seeds, 0)
        rows.append(
            {
                "strategy": name,
                "configurations tried": (args.budget - extra) // seeds,
                "picks the best it tried": f"{hits.mean():.1%}",
                "true mean of the pick": f"{picked.mean():.4f}",
                "standard error": f"{picked.std(ddof=1) / np.sqrt(len(picked)):.5f}",
                "gap to the landscape's top (0.70)": f"{0.70 - picked.mean():.4f}",
            }
        )
    common.write(
        "confirm_vs_seeds",
        args.out,
        {"inputs": vars(args) | {"out": str(args.out)}},
        rows,
        f"Confirmation vs k seeds per trial (simulation; budget {args.budget} runs, "
        f"noise {args.noise}, landscape spread {args.spread})",
    )


if __name__ == "__main__":
    main()
