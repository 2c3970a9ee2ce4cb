"""Benchmark 3 and the fast model's targets: wall time until a run (or a whole study) first
reaches an accuracy.

    # train the fast model and time it to 85/90/93 % test accuracy (validated on the test set)
    python benchmarks/time_to_accuracy.py train experiment=resnet_fast
    # the default study on the full data set, with a wall-clock budget, timed to 73.4 %
    python benchmarks/time_to_accuracy.py sweep --budget 1800 --thresholds 0.734
    # an existing run or study from mlruns/ (no training)
    python benchmarks/time_to_accuracy.py run RUN_ID

Times come from MLflow's metric timestamps, relative to the start of the run (or of the
study's parent run), so they include model building, validation and logging: wall time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def analyse(cfg, parent_or_run: str, metric: str, thresholds: list[float]) -> dict:
    import mlflow

    from cifar_exp.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    run = client.get_run(parent_or_run)
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_or_run}'",
        max_results=5000,
    )
    run_ids = [c.info.run_id for c in children] or [parent_or_run]
    points = common.trajectory(client, run_ids, run.info.start_time, metric)
    history = common.best_so_far(points)
    return {
        "run_id": parent_or_run,
        "runs": len(run_ids),
        "metric": metric,
        "best": history[-1][1] if history else None,
        "elapsed_s": points[-1][0] if points else None,
        "time_to": {str(t): common.time_to(points, t) for t in thresholds},
        "best_over_time": history,
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("mode", choices=["train", "sweep", "run"])
    p.add_argument("rest", nargs="*", help="config overrides, or the run id for `run`")
    p.add_argument("--thresholds", default=None, help="default 0.85,0.9,0.93 (train), 0.734")
    p.add_argument("--budget", type=float, default=1800, help="sweep: wall-clock seconds")
    p.add_argument("--metric", default="val_accuracy")
    args = p.parse_intermixed_args()
    common.quiet()
    from cifar_exp.config import compose

    default = "0.85,0.9,0.93" if args.mode == "train" else "0.734"
    thresholds = [float(t) for t in (args.thresholds or default).split(",")]
    if args.mode == "run":
        cfg = compose(common.data_overrides(args.data))
        target, label = args.rest[0], f"run {args.rest[0][:8]}"
    elif args.mode == "train":
        from cifar_exp.runs import train_tracked

        cfg = compose([*common.data_overrides(args.data), "trainer.verbose=2", *args.rest])
        target = train_tracked(cfg).run_id
        label = f"train {' '.join(args.rest)}"
    else:
        from cifar_exp.study.sweep import sweep

        name = f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = compose(
            [
                *common.data_overrides(args.data),
                f"search.study_name={name}",
                f"search.timeout={args.budget}",
                "search.n_trials=1000",
                *args.rest,
            ]
        )
        target = sweep(cfg).parent_run_id
        what = cfg.experiment or "defaults"
        label = f"sweep {what} {' '.join(args.rest)} (budget {args.budget:g} s)"
    result = analyse(cfg, target, args.metric, thresholds)
    row = {"what": label, "runs": result["runs"], "best": result["best"]}
    for t, s in result["time_to"].items():
        row[f"time to {float(t):.1%} (min)"] = round(s / 60, 1) if s is not None else "not reached"
    row["elapsed (min)"] = round(result["elapsed_s"] / 60, 1) if result["elapsed_s"] else None
    name = "time_to_accuracy_" + args.mode + ("_" + (cfg.experiment or "defaults"))
    common.write(name, args.out, {"result": result}, [row], "Time to accuracy")


if __name__ == "__main__":
    main()
