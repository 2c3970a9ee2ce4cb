"""Benchmark 4 (and 3): search efficiency against a peer, Keras Tuner's Hyperband.

The same search space as the default study (`lr_batch`: learning rate 1e-4..1e-1 log, batch
size 32/64/128/256), the same model (the reference CNN, built by cifar_exp), the same data
(45,000 training / 5,000 validation images, fed by the same tf.data pipeline), the same
maximum of 10 epochs per trial and the same wall-clock budget for each. Reported: best
validation accuracy over time for both, and the time each first reaches the reference
study's best (73.4 %; benchmark 3 for our default study).

Needs the `bench` extra (`pip install -e ".[bench]"`). One run of each per call: a budget
is minutes to hours, so repeats are separate calls.

    python benchmarks/search_vs_keras_tuner.py --budget 1800
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TARGET = 0.734  # the reference study's best validation accuracy (30 epochs)


class BudgetSpent(BaseException):
    """Ends Keras Tuner's search loop (it catches Exception from trials, not this)."""


def keras_tuner(cfg, splits, budget: float, workdir: Path) -> list[tuple]:
    import keras
    import keras_tuner as kt

    from cifar_exp.config import with_overrides
    from cifar_exp.data import make_dataset
    from cifar_exp.train import compile_model, configure_runtime

    points: list[tuple] = []
    start = time.perf_counter()

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            points.append((time.perf_counter() - start, float(logs["val_accuracy"])))
            if time.perf_counter() - start >= budget:
                raise BudgetSpent()

    class ReferenceCNN(kt.HyperModel):
        def build(self, hp):
            lr = hp.Float("lr", 1e-4, 1e-1, sampling="log")
            batch = hp.Choice("batch_size", [32, 64, 128, 256])
            trial_cfg = with_overrides(cfg, {"optimizer.lr": lr, "trainer.batch_size": batch})
            keras.backend.clear_session()
            configure_runtime(trial_cfg.trainer)
            steps = -(-len(splits.y_train) // batch)
            return compile_model(trial_cfg, steps_per_epoch=steps)

        def fit(self, hp, model, *args, **kwargs):
            batch = hp.get("batch_size")
            train = make_dataset(splits.x_train, splits.y_train, batch, shuffle=True, seed=42)
            val = make_dataset(splits.x_val, splits.y_val, batch, shuffle=False, seed=42)
            return model.fit(train, validation_data=val, verbose=0, **kwargs)

    tuner = kt.Hyperband(
        ReferenceCNN(),
        objective="val_accuracy",
        max_epochs=cfg.trainer.epochs,
        factor=3,
        hyperband_iterations=10_000,  # keep searching until the budget is spent, as ours does
        seed=0,
        directory=str(workdir),
        project_name="kt",
    )
    with contextlib.suppress(BudgetSpent):
        tuner.search(callbacks=[Clock()])
    if not points:  # Keras Tuner records a crashing trial and goes on; say why it crashed
        failed = [t.message for t in tuner.oracle.trials.values() if t.message]
        why = failed[-1] if failed else "no trial ran"
        raise SystemExit(f"Keras Tuner trained no epoch: {why}")
    return points


def ours(overrides: list[str], budget: float) -> tuple[list[tuple], str]:
    import mlflow

    from cifar_exp.config import compose
    from cifar_exp.study.sweep import sweep
    from cifar_exp.tracking import tracking_uri

    cfg = compose([*overrides, f"search.timeout={budget}", "search.n_trials=1000"])
    parent = sweep(cfg).parent_run_id
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    run = client.get_run(parent)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    ids = [c.info.run_id for c in children]
    return common.trajectory(client, ids, run.info.start_time, "val_accuracy"), parent


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=1800, help="seconds for each search")
    p.add_argument("overrides", nargs="*", help="config overrides for both (e.g. a data subset)")
    args = p.parse_intermixed_args()
    common.quiet()
    from cifar_exp.config import compose
    from cifar_exp.data import load_cifar10

    tmp = Path(tempfile.mkdtemp(prefix="bench-kt-"))
    overrides = [
        *common.data_overrides(args.data),
        "experiment=lr_batch",
        f"search.study_name=bench-{time.strftime('%Y%m%d-%H%M%S')}",
        f"tracking.dir={tmp / 'mlruns'}",
        "tracking.log_model=false",
        *args.overrides,
    ]
    cfg = compose(overrides)
    splits = load_cifar10(cfg.data)
    print(f"Keras Tuner Hyperband, {args.budget:g} s", flush=True)
    kt_points = keras_tuner(cfg, splits, args.budget, tmp)
    print(f"cifar_exp sweep (experiment=lr_batch), {args.budget:g} s", flush=True)
    our_points, parent = ours(overrides, args.budget)
    shutil.rmtree(tmp / "kt", ignore_errors=True)  # Keras Tuner's checkpoints: one per trial
    rows = []
    curves = {"keras_tuner_hyperband": kt_points, "cifar_exp_lr_batch": our_points}
    for name, points in curves.items():
        inside = [(t, v) for t, v in points if t <= args.budget]
        best = common.best_so_far(inside)
        row = {"search": name, "epochs trained": len(inside)}
        for frac in (0.25, 0.5, 1.0):
            upto = [v for t, v in best if t <= frac * args.budget]
            row[f"best at {frac:.0%} of budget"] = max(upto) if upto else None
        reached = common.time_to(inside, TARGET)
        row[f"time to {TARGET:.1%} (min)"] = round(reached / 60, 1) if reached else "not reached"
        rows.append(row)
    common.write(
        "search_vs_keras_tuner",
        args.out,
        {
            "budget_s": args.budget,
            "curves": {k: common.best_so_far(v) for k, v in curves.items()},
            "raw": curves,
            "parent_run_id": parent,
        },
        rows,
        f"Search efficiency: same space, model, data and a {args.budget / 60:g}-minute budget",
    )
    print(f"Our study's runs: mlflow ui --backend-store-uri {tmp / 'mlruns'}")


if __name__ == "__main__":
    main()
