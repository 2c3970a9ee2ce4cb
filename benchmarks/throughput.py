"""Benchmark 5: training and inference throughput (images/s) of every model, by precision
and batch size, through the tool's own input pipeline (`make_dataset` from uint8) and compile.

    python benchmarks/throughput.py [--models seed_cnn,resnet_small] [--batches 32,128,512]
    python benchmarks/throughput.py --backends jax    # also Keras on JAX (pip install jax)
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
) -> dict[str, float]:
    import keras
    import numpy as np

    from cifar_exp.config import compose
    from cifar_exp.data import make_dataset
    from cifar_exp.train import compile_model, configure_runtime

    # Keras silently refuses XLA while TensorFlow's deterministic ops are on: turn them off
    # for an XLA case (in its own process: determinism cannot be switched off once on)
    cfg = compose(
        [
            f"model={model_name}",
            f"trainer.precision={precision}",
            f"trainer.jit_compile={jit}",
            f"trainer.deterministic={jit != 'true'}",
            f"trainer.threads={threads if threads else 'null'}",
        ]
    )
    keras.backend.clear_session()
    configure_runtime(cfg.trainer)
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
    }


def _in_subprocess(
    model: str, precision: str, batch: int, seconds: float, backend: str | None = None, **kw
) -> dict:
    """A case in a fresh process: XLA (deterministic ops, on in this one, disable it), thread
    counts (fixed when TensorFlow starts) and other Keras backends (chosen at import)."""
    import json
    import os
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import common, throughput; "
        "common.quiet(); "
        "print(json.dumps(throughput.measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), "
        "float(sys.argv[5]), **json.loads(sys.argv[6]))))"
    )
    here = str(Path(__file__).resolve().parent)
    args = [here, model, precision, str(batch), str(seconds), json.dumps(kw)]
    env = {**os.environ, "KERAS_BACKEND": backend} if backend else None
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise SystemExit(f"error: case {model} {backend or ''} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    args = p.parse_intermixed_args()
    common.quiet()
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
