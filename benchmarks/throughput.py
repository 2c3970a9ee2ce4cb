"""Benchmark 5: training and inference throughput (images/s) of every model, by precision
and batch size, through the tool's own input pipeline (`make_dataset` from uint8) and compile.

    python benchmarks/throughput.py [--models seed_cnn,resnet_small] [--batches 32,128,512]
    python benchmarks/throughput.py --backends jax    # also Keras on JAX (pip install jax)
    python benchmarks/throughput.py --levers --repeats 3   # small-batch levers, reference CNN
    python benchmarks/throughput.py --levers --paired --repeats 10 --seconds 3

`--levers`: the reference CNN at the tool's defaults (precision auto), training images/s with
Keras `steps_per_execution` (train steps per compiled call) at each of `--spe` for batches
`--spe-batches`, and the other levers at batch 32 on top of the largest `--spe` (XLA,
TensorFlow's deterministic ops off, one intra-op thread, float32 instead of the automatic
bfloat16); every case in a fresh process, alternated, `--repeats` times, median and range.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def measure(
    model_name: str,
    precision: str,
    batch: int,
    seconds: float,
    jit: str = "false",
    threads: int | None = None,
    steps_per_execution: int = 1,
    deterministic: bool | None = None,
) -> dict[str, float]:
    import keras
    import numpy as np

    from cifar_exp.config import compose
    from cifar_exp.data import make_dataset
    from cifar_exp.train import compile_model, configure_runtime

    # Keras silently refuses XLA while TensorFlow's deterministic ops are on: turn them off
    # for an XLA case (in its own process: determinism cannot be switched off once on)
    if deterministic is None:
        deterministic = jit != "true"
    cfg = compose(
        [
            f"model={model_name}",
            f"trainer.precision={precision}",
            f"trainer.jit_compile={jit}",
            f"trainer.deterministic={deterministic}",
            f"trainer.threads={threads if threads else 'null'}",
            f"trainer.steps_per_execution={steps_per_execution}",
        ]
    )
    keras.backend.clear_session()
    in_force = configure_runtime(cfg.trainer)
    model = compile_model(cfg, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    n = batch * 8
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    ds = make_dataset(x, y, batch, shuffle=False, seed=0).repeat()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # build and trace
    # steps for about `seconds` s, from a short probe
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)
    steps = max(5, int(seconds / ((time.perf_counter() - t0) / 3)))
    steps = -(-steps // steps_per_execution) * steps_per_execution  # whole executions
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    train = steps * batch / (time.perf_counter() - t0)
    infer_ds = make_dataset(x, y, batch, shuffle=False, seed=0).map(lambda a, b: a).repeat()
    model.predict(infer_ds, steps=3, verbose=0)
    t0 = time.perf_counter()
    model.predict(infer_ds, steps=steps * 2, verbose=0)
    infer = steps * 2 * batch / (time.perf_counter() - t0)
    return {
        "train img/s": train,
        "inference img/s": infer,
        "params": model.count_params(),
        "xla": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution),
        "precision in force": in_force,
    }


def _in_subprocess(
    model: str, precision: str, batch: int, seconds: float, backend: str | None = None, **kw
) -> dict:
    """A case in a fresh process: XLA (deterministic ops, on in this one, disable it), thread
    counts (fixed when TensorFlow starts) and other Keras backends (chosen at import)."""
    import os

    env = {**os.environ, "KERAS_BACKEND": backend} if backend else None
    return common.in_fresh_process(
        "throughput",
        "measure",
        (model, precision, batch, seconds),
        kw,
        env=env,
        what=f"case {model} {backend or ''}",
    )


def paired(batch: int, spes: list[int], seconds: float, rounds: int) -> dict[str, list[float]]:
    """Training img/s of the reference CNN (tool defaults) compiled with each of `spes`, in
    one process, alternated in short timed fits `rounds` times: this VM's speed swings between
    states for minutes, so cases far apart in time are not comparable; neighbours are."""
    import numpy as np

    from cifar_exp.config import compose
    from cifar_exp.data import make_dataset
    from cifar_exp.train import compile_model, configure_runtime

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * 64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    ds = make_dataset(x, y, batch, shuffle=False, seed=0).repeat()
    models = {}
    for spe in spes:
        cfg = compose(["model=seed_cnn", f"trainer.steps_per_execution={spe}"])
        configure_runtime(cfg.trainer)
        models[spe] = compile_model(cfg, steps_per_epoch=100)
        models[spe].fit(ds, steps_per_epoch=2 * spe, epochs=1, verbose=0)  # build and trace
    t0 = time.perf_counter()
    models[spes[0]].fit(ds, steps_per_epoch=8, epochs=1, verbose=0)
    lcm = int(np.lcm.reduce(spes))
    steps = max(lcm, round(seconds / ((time.perf_counter() - t0) / 8) / lcm) * lcm)
    out: dict[str, list[float]] = {str(spe): [] for spe in spes}
    for r in range(rounds):
        for spe in spes if r % 2 == 0 else reversed(spes):
            t0 = time.perf_counter()
            models[spe].fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
            out[str(spe)].append(steps * batch / (time.perf_counter() - t0))
    return out


def paired_levers(args) -> None:
    """`--paired`: steps_per_execution by batch, alternated within one process."""
    spes = [int(n) for n in args.spe.split(",")]
    rows, raw = [], {}
    for batch in (int(b) for b in args.spe_batches.split(",")):
        got = common.in_fresh_process(
            "throughput", "paired", (batch, spes, args.seconds, args.repeats), what=f"batch {batch}"
        )
        raw[batch] = got
        base = got[str(spes[0])]
        for spe in spes:
            v = common.stats(got[str(spe)])
            ratios = [a / b for a, b in zip(got[str(spe)], base, strict=True)]
            rows.append(
                {
                    "batch": batch,
                    "steps_per_execution": spe,
                    "train img/s (median)": v["median"],
                    "range": f"{v['min']:.0f}-{v['max']:.0f}",
                    f"x spe {spes[0]} (median of paired ratios)": common.stats(ratios)["median"],
                    "ratio range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                }
            )
            print(rows[-1], flush=True)
    common.write(
        "throughput_spe_paired",
        args.out,
        {"rounds": args.repeats, "raw": raw},
        rows,
        "steps_per_execution, reference CNN (precision auto), alternated within one process",
    )


def levers(args) -> None:
    """Small-batch levers for the reference CNN (see the module's docstring)."""
    cases: dict[str, tuple[int, dict]] = {}
    for batch in (int(b) for b in args.spe_batches.split(",")):
        for spe in (int(n) for n in args.spe.split(",")):
            cases[f"batch {batch}, steps_per_execution {spe}"] = (
                batch,
                {"steps_per_execution": spe},
            )
    spe = max(int(n) for n in args.spe.split(","))  # the others on top of the largest
    cases[f"batch 32, spe {spe}, XLA (deterministic off)"] = (
        32,
        {"jit": "true", "steps_per_execution": spe},
    )
    cases[f"batch 32, spe {spe}, deterministic off"] = (
        32,
        {"deterministic": False, "steps_per_execution": spe},
    )
    cases[f"batch 32, spe {spe}, 1 intra-op thread"] = (
        32,
        {"threads": 1, "steps_per_execution": spe},
    )
    cases[f"batch 32, spe {spe}, float32"] = (
        32,
        {"precision": "float32", "steps_per_execution": spe},
    )
    measured: dict[str, list[dict]] = {name: [] for name in cases}

    def case(name: str):
        batch, kw = cases[name]

        def go() -> float:
            precision = kw.get("precision", "auto")
            others = {k: v for k, v in kw.items() if k != "precision"}
            r = _in_subprocess("seed_cnn", precision, batch, args.seconds, **others)
            measured[name].append(r)
            return r["train img/s"]

        return go

    common.alternate({name: case(name) for name in cases}, args.repeats)
    rows = []
    for name, rs in measured.items():
        batch = cases[name][0]
        base = common.stats(
            [r["train img/s"] for r in measured[f"batch {batch}, steps_per_execution 1"]]
        )["median"]
        train = common.stats([r["train img/s"] for r in rs])
        infer = common.stats([r["inference img/s"] for r in rs])
        rows.append(
            {
                "case": name,
                "train img/s (median)": train["median"],
                "train range": f"{train['min']:.0f}-{train['max']:.0f}",
                "x today at this batch": train["median"] / base,
                "inference img/s": infer["median"],
            }
        )
        print(rows[-1], flush=True)
    common.write(
        "throughput_levers",
        args.out,
        {"repeats": args.repeats, "raw": measured},
        rows,
        "Small-batch levers: reference CNN (precision auto unless a case says), training img/s",
    )


def _row(model: str, precision: str, batch: int, measured: dict) -> dict:
    row = {"model": model, "precision": precision, "batch": batch, **measured}
    row["s per 50k-image epoch"] = 50000 / measured["train img/s"]
    print(row, flush=True)
    return row


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="seed_cnn,resnet_small")
    p.add_argument("--precisions", default="float32,mixed_bfloat16")
    p.add_argument("--batches", default="32,128,512")
    p.add_argument("--seconds", type=float, default=6.0, help="timed training per case")
    p.add_argument(
        "--jit-batch", type=int, default=128, help="also time XLA (jit_compile) at this batch"
    )
    p.add_argument(
        "--threads",
        default="1,2",
        help="also time these intra-op thread counts (fresh processes) at --jit-batch",
    )
    p.add_argument(
        "--backends",
        default="",
        help="also time these Keras backends (e.g. jax; fresh processes, XLA on as they need) "
        "at --jit-batch in the last precision",
    )
    p.add_argument("--levers", action="store_true", help="small-batch levers (see above)")
    p.add_argument("--spe", default="1,4,16,64", help="steps_per_execution values (--levers)")
    p.add_argument("--spe-batches", default="32,64,128", help="batches for --spe (--levers)")
    p.add_argument("--repeats", type=int, default=3, help="alternated repeats (--levers)")
    p.add_argument(
        "--paired", action="store_true", help="--levers: spe cases alternated in one process"
    )
    args = p.parse_intermixed_args()
    common.quiet()
    if args.levers:
        return paired_levers(args) if args.paired else levers(args)
    rows = []
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.append(
                    _row(model, precision, batch, measure(model, precision, batch, args.seconds))
                )
        if args.jit_batch:  # XLA: Keras's `auto` leaves it off on CPU; measure before using it
            precision = args.precisions.split(",")[0]
            r = _in_subprocess(model, precision, args.jit_batch, args.seconds, jit="true")
            rows.append(_row(model, f"{precision} + XLA", args.jit_batch, r))
            precision = args.precisions.split(",")[-1]
            for n in (int(t) for t in args.threads.split(",") if t):
                r = _in_subprocess(model, precision, args.jit_batch, args.seconds, threads=n)
                rows.append(_row(model, f"{precision}, {n} thread(s)", args.jit_batch, r))
            for backend in (b for b in args.backends.split(",") if b):
                r = _in_subprocess(
                    model, precision, args.jit_batch, args.seconds, backend, jit="auto"
                )
                rows.append(_row(model, f"{precision}, Keras on {backend}", args.jit_batch, r))
    common.write("throughput", args.out, {}, rows, "Throughput by model, precision and batch size")


if __name__ == "__main__":
    main()
