"""Shared by the benchmark scripts: the machine, alternating repeated timings with median
and spread, and results written as JSON plus a Markdown table under benchmarks/results/.

Benchmarks are scripts, not tests: run them on an otherwise idle machine, e.g.
`python benchmarks/framework_overhead.py --repeats 3`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def quiet() -> None:
    """Logging as in a trial process: warnings only, TensorFlow's start-up noise off."""
    import logging

    from cifar_exp import logs

    logs.import_tensorflow_quietly()
    logs.setup(logging.WARNING, rich=False)


def autotune_on() -> None:
    """The training's pipelines as they were before 2026-12-07: tf.data's default, its
    autotuning model on (the tool builds them with it off, `data.make_dataset`). For this
    process only; call before training."""
    import tensorflow as tf

    from cifar_exp import train as training

    built = training.make_dataset

    def tuned(*args: Any, **kwargs: Any) -> Any:
        options = tf.data.Options()
        options.autotune.enabled = True
        return built(*args, **kwargs).with_options(options)

    training.make_dataset = tuned  # type: ignore[assignment]


def mark_fit(at_return: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Patch Keras, in this process, to mark each `fit`'s times (`time.perf_counter()`):
    `begin` at `on_train_begin` (after `fit` has set up its iterator and model), `end` once
    every callback's `on_train_end` has run, `returned` when `fit` returns, then
    `at_return(marks)`. Returns the marks, filled in as `fit` runs."""
    import keras

    marks: dict[str, Any] = {}
    callbacks = keras.callbacks.CallbackList
    begin, end = callbacks.on_train_begin, callbacks.on_train_end

    def on_train_begin(self: Any, logs: dict | None = None) -> None:
        marks["begin"] = time.perf_counter()
        begin(self, logs)

    def on_train_end(self: Any, logs: dict | None = None) -> None:
        end(self, logs)
        marks["end"] = time.perf_counter()

    callbacks.on_train_begin, callbacks.on_train_end = on_train_begin, on_train_end
    fit = keras.Model.fit

    def timed_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        history = fit(self, *args, **kwargs)
        marks["returned"] = time.perf_counter()
        if at_return is not None:
            at_return(marks)
        return history

    keras.Model.fit = timed_fit  # type: ignore[method-assign]
    return marks


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data",
        default=os.environ.get("CIFAR10_PATH"),
        help="cifar-10-python.tar.gz (default: $CIFAR10_PATH, else the official download)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return p


def data_overrides(path: str | None) -> list[str]:
    return [f"data.path={path}"] if path else []


def machine() -> dict[str, Any]:
    """CPU, cores, bf16 support, GPUs, versions, commit: what a number depends on."""
    from cifar_exp import logs, provenance

    logs.import_tensorflow_quietly()  # its start-up lines are no part of a benchmark's table
    from cifar_exp.train import _cpu_has_bf16

    return {
        **provenance.hardware(),
        "cpu_bf16": _cpu_has_bf16(),
        "versions": provenance.versions(),
        **provenance.git_info(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def stats(samples: list[float]) -> dict[str, float]:
    """Median and spread (min, max) of repeated measurements."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
        "samples": samples,
    }


def alternate(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each case `repeats` times, interleaved (A B, B A, A B...) so that drift in the
    machine's speed hits every case alike; each call returns its measured seconds."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            value = cases[name]()
            out[name].append(value)
            print(f"  repeat {r + 1}/{repeats} {name}: {value:.2f} s", flush=True)
    return out


def in_fresh_process(
    module: str,
    function: str,
    args: list | tuple = (),
    kwargs: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    what: str = "case",
) -> Any:
    """`module.function(*args, **kwargs)` (a module in benchmarks/) in a fresh Python process,
    logging quiet: its JSON result. For settings fixed when TensorFlow starts (threads, XLA,
    the Keras backend) and for timings that include a process's own start-up and end."""
    import subprocess

    code = (
        "import importlib, json, sys; sys.path.insert(0, sys.argv[1]); import common; "
        "common.quiet(); f = getattr(importlib.import_module(sys.argv[2]), sys.argv[3]); "
        "print(json.dumps(f(*json.loads(sys.argv[4]), **json.loads(sys.argv[5]))))"
    )
    argv = [str(Path(__file__).resolve().parent), module, function]
    argv += [json.dumps(list(args)), json.dumps(kwargs or {})]
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise SystemExit(f"error: {what} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def write(
    name: str,
    out: Path,
    payload: dict[str, Any],
    rows: list[dict],
    title: str,
    floatfmt: str = ".3g",
) -> None:
    """results/NAME.json (everything) and results/NAME.md (the table), and print the table."""
    from tabulate import tabulate

    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload, "rows": rows}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    m = payload["machine"]
    table = tabulate(rows, headers="keys", tablefmt="github", floatfmt=floatfmt)
    md = (
        f"### {title}\n\n{table}\n\n"
        f"{m['cpu']} ({m['cpu_count']} cores, bf16: {m['cpu_bf16']}, GPUs: {m['gpus'] or 'none'}), "
        f"TensorFlow {m['versions'].get('tensorflow')}, Keras {m['versions'].get('keras')}, "
        f"commit {str(m['commit'])[:8]}{' (dirty)' if m['dirty'] else ''}, {m['date']}.\n"
        f"Command: `{m['command']}`\n"
    )
    (out / f"{name}.md").write_text(md)
    print("\n" + md)


# --------------------------------------------------------------------------- trajectories


def trajectory(client: Any, run_ids: list[str], start_ms: int, metric: str) -> list[tuple]:
    """(seconds since `start_ms`, value) of every logged `metric` point of the runs, in time
    order: MLflow stamps each epoch's metrics when the epoch ends."""
    points = []
    for run_id in run_ids:
        for m in client.get_metric_history(run_id, metric):
            points.append(((m.timestamp - start_ms) / 1000.0, m.value))
    return sorted(points)


def best_so_far(points: list[tuple]) -> list[tuple]:
    """The running maximum: (time, best value up to then), one point per improvement."""
    out, best = [], float("-inf")
    for t, v in points:
        if v > best:
            best = v
            out.append((t, v))
    return out


def time_to(points: list[tuple], threshold: float) -> float | None:
    """Seconds until the metric first reached `threshold`; None if it never did."""
    return next((t for t, v in points if v >= threshold), None)
