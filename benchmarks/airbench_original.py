"""Our `experiment=airbench` against the original airbench94 (Keller Jordan's `airbench`
package, 0.1.8, on PyTorch), side by side: the same local data, the same epochs, this machine;
test accuracy and time after every epoch.

    pip install -e '.[airbench]'   # torch, torchvision, airbench: multi-gigabyte, not in CI
    python benchmarks/airbench_original.py --epochs 10                 # both, one after the other
    python benchmarks/airbench_original.py --epochs 10 --only original
    python benchmarks/airbench_original.py --epochs 10 --only ours -- trainer.seed=1

The package's own code trains (`airbench.train94`: network, initialisation, loader with
alternating flips and reflect-padded crops, schedule, Lookahead, whitening-bias freeze, 6-view
TTA); it is adapted only where it assumes a GPU:
- device: `make_net94` builds the network with `.cuda()` and `.half()` made no-ops, and the
  loader loads onto the CPU;
- precision: the original keeps fp16 weights on the GPU; PyTorch's CPU convolutions in fp16
  are slow, so the network computes in bfloat16 under `torch.autocast` with float32 weights,
  as ours does under Keras's `mixed_bfloat16` (`--precision float32` for plain float32);
- data: its `CifarLoader` reads `cifar10/{train,test}.pt`, written here from the local
  cifar-10-python.tar.gz (our safe reader) instead of torchvision's download; its own code then
  converts, normalises, augments and batches them;
- timing: CUDA events become wall-clock counters (the package's `total_time_seconds` is its
  training time, evaluation excluded).
Each epoch's row is taken from the package's own logging call (`print_training_details`); the
mirror-TTA accuracy is added there (outside the package's timer), to compare with ours, whose
per-epoch validation uses flip TTA. Each side runs in its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SIDES = ("original", "ours")
NEEDS = "the original needs `pip install -e '.[airbench]'` (torch, torchvision, airbench 0.1.8)"


def have_original() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "airbench"))


# --------------------------------------------------------------------------- the original


class _WallEvent:
    """torch.cuda.Event's timing interface on the wall clock."""

    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) * 1000.0  # ms, as CUDA events


def _write_pt_files(data: str, folder: Path) -> None:
    """cifar10/train.pt and test.pt in the layout the package's loader saves after its download
    (uint8 NHWC images, int64 labels, class names)."""
    import torch

    from cifar_exp.cifar_files import read_source
    from cifar_exp.data import CLASS_NAMES

    x_train, y_train, x_test, y_test = read_source(Path(data))
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        torch.save(
            {
                "images": torch.tensor(x),
                "labels": torch.tensor(y.astype("int64")),
                "classes": list(CLASS_NAMES),
            },
            folder / f"{name}.pt",
        )


def run_original(
    data: str, epochs: float, seed: int, precision: str, batch_size: int, mirror: bool = True
) -> dict[str, Any]:
    import torch
    from airbench import lib_airbench94, utils
    from torch import nn

    torch.manual_seed(seed)
    work = Path(tempfile.mkdtemp(prefix="airbench-"))
    _write_pt_files(data, work / "cifar10")
    os.chdir(work)  # the package reads ./cifar10

    class CpuLoader(utils.CifarLoader):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "gpu": "cpu"})
            # the package's own fp16 rounding of the pixels is kept; float32 for the CPU
            self.images = self.images.float()

    autocast = precision == "bfloat16"

    class CpuNet(nn.Sequential):
        def forward(self, x: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return super().forward(x).float()

    def make_net() -> Any:
        with (
            _patched(nn.Module, "half", lambda self: self),
            _patched(nn.Module, "cuda", lambda self, device=None: self),
        ):
            net = lib_airbench94.make_net94()
        net.__class__ = CpuNet
        return net

    rows: list[dict[str, Any]] = []
    start, extra = time.perf_counter(), 0.0  # `extra`: our added evaluations, not counted
    own_print = utils.print_training_details

    def record(variables: dict[str, Any], is_final_entry: bool) -> None:
        nonlocal extra
        own_print(variables, is_final_entry)
        row = {
            k: variables.get(k)
            for k in ("epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc")
        }
        if isinstance(row["epoch"], int):
            row["epoch"] += 1  # the package counts from 0
        row["train_s"] = variables["total_time_seconds"]
        row["wall_s"] = time.perf_counter() - start - extra
        if mirror and not is_final_entry:  # mirror TTA, as ours validates
            t = time.perf_counter()
            model, loader = variables["model"], variables["test_loader"]
            row["mirror_val_acc"] = utils.evaluate(model, loader, tta_level=1)
            model.train()
            extra += time.perf_counter() - t
        rows.append(row)

    with (
        _patched(utils, "CifarLoader", CpuLoader),
        _patched(lib_airbench94, "CifarLoader", CpuLoader),
        _patched(utils, "print_training_details", record),
        _patched(torch.cuda, "Event", _WallEvent),
        _patched(torch.cuda, "synchronize", lambda *a, **k: None),
    ):
        loader = None  # train94 makes its own: batch 1024, airbench's flips and crops
        if batch_size != lib_airbench94.hyp["opt"]["batch_size"]:  # (smoke tests)
            aug = lib_airbench94.hyp["aug"]
            loader = CpuLoader("cifar10", train=True, batch_size=batch_size, aug=aug, altflip=True)
        model = lib_airbench94.train94(loader, epochs=epochs, make_net=make_net)
        test = CpuLoader("cifar10", train=False, batch_size=2000)
        final = {f"tta{k}": utils.evaluate(model, test, tta_level=k) for k in (0, 1, 2)}
    return {
        "side": "original",
        "package": f"airbench {_version('airbench')}, torch {torch.__version__}",
        "precision": precision,
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "per_epoch": [r for r in rows if isinstance(r["epoch"], int)],
        "final": final,
        "wall_s": time.perf_counter() - start - extra,
    }


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Any:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# --------------------------------------------------------------------------- ours


def run_ours(
    data: str | None, epochs: float, seed: int, batch_size: int, overrides: list[str]
) -> dict[str, Any]:
    common.quiet()
    from cifar_exp.config import compose
    from cifar_exp.runs import train_tracked

    cfg = compose(
        [
            *common.data_overrides(data),
            "experiment=airbench",
            f"trainer.epochs={round(epochs)}",
            f"trainer.seed={seed}",
            f"trainer.batch_size={batch_size}",
            "trainer.verbose=2",
            *overrides,
        ]
    )
    start = time.perf_counter()
    result = train_tracked(cfg)
    h = result.history
    wall, train_s, rows = 0.0, 0.0, []
    for i, acc in enumerate(h["val_accuracy"]):
        # like the original's `train_s`: the epochs without their evaluation (`val_time`)
        wall += h["epoch_time"][i]
        train_s += h["epoch_time"][i] - h["val_time"][i]
        rows.append({"epoch": i + 1, "mirror_val_acc": acc, "train_s": train_s, "wall_s": wall})
    return {
        "side": "ours",
        "package": "cifar_exp experiment=airbench " + " ".join(overrides),
        "precision": result.precision,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "run_id": result.run_id,
        "per_epoch": rows,
        # the final test evaluation: mirror views, or 6 with the shifts (`model.tta_shift`)
        "final": {"tta2" if cfg.model.get("tta_shift") else "tta1": result.test.accuracy},
        "wall_s": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- side by side


def _pct(value: float, digits: int) -> float:
    return round(100 * value, digits)


def _minutes(epoch: dict[str, Any]) -> str:
    """Cumulative minutes: training alone (evaluation excluded, the package's own count), then
    wall time with the per-epoch evaluations."""
    return f"{epoch['train_s'] / 60:.1f} / {epoch['wall_s'] / 60:.1f}"


def table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: each side's test accuracy and cumulative minutes (training, then
    wall: `_minutes`), then the final evaluation with each TTA level."""
    o, u = results.get("original"), results.get("ours")
    n = max(len(r["per_epoch"]) for r in results.values())
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"epoch": i + 1}
        if o and i < len(o["per_epoch"]):
            e = o["per_epoch"][i]
            row["original, no TTA (%)"] = _pct(e["val_acc"], 2)
            if "mirror_val_acc" in e:
                row["original, mirror (%)"] = _pct(e["mirror_val_acc"], 2)
            row["original (min: training / wall)"] = _minutes(e)
        if u and i < len(u["per_epoch"]):
            e = u["per_epoch"][i]
            row["ours, mirror (%)"] = _pct(e["mirror_val_acc"], 2)
            row["ours (min: training / wall)"] = _minutes(e)
        rows.append(row)
    final: dict[str, Any] = {"epoch": "final"}
    if o:
        final["original, no TTA (%)"] = _pct(o["final"]["tta0"], 2)
        final["original, mirror (%)"] = _pct(o["final"]["tta1"], 2)
        final["original, 6-view (%)"] = _pct(o["final"]["tta2"], 2)
    if u:
        for level, name in (("tta1", "ours, mirror (%)"), ("tta2", "ours, 6-view (%)")):
            if level in u["final"]:
                final[name] = _pct(u["final"][level], 2)
    rows.append(final)
    return rows


def _child(side: str, args: Any) -> dict[str, Any]:
    """One side in its own process (PyTorch and TensorFlow never share one)."""
    out = Path(tempfile.mkdtemp(prefix="airbench-side-")) / f"{side}.json"
    cmd = [sys.executable, __file__, "--only", side, "--json", str(out)]
    cmd += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    cmd += ["--batch-size", str(args.batch_size)]
    cmd += ["--precision", args.precision] + (["--data", args.data] if args.data else [])
    subprocess.run([*cmd, "--", *args.overrides], check=True)
    return json.loads(out.read_text())


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=10.0, help="both sides (airbench94: 9.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1024, help="both sides (airbench94: 1024)")
    p.add_argument("--only", choices=["original", "ours"], default=None)
    p.add_argument("--precision", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument(
        "--no-mirror",
        dest="mirror",
        action="store_false",
        help="original: skip the per-epoch mirror-TTA evaluation (time-to-accuracy runs)",
    )
    p.add_argument("--json", type=Path, default=None, help=argparse_hidden())
    p.add_argument(
        "--tabulate",
        nargs=2,
        type=Path,
        metavar=("ORIGINAL_JSON", "OURS_JSON"),
        help="no training: the table of two sides saved with --only ... --json",
    )
    p.add_argument("overrides", nargs="*", help="config overrides for ours (after --)")
    args = p.parse_args()
    if args.tabulate:
        results = {s: json.loads(f.read_text()) for s, f in zip(SIDES, args.tabulate, strict=True)}
        return _write(results, args)
    if args.data is None:
        p.error("needs the local data: --data PATH or CIFAR10_PATH")
    if args.only != "ours" and not have_original():
        p.error(NEEDS)
    if args.only == "original":
        result = run_original(
            args.data, args.epochs, args.seed, args.precision, args.batch_size, args.mirror
        )
    elif args.only == "ours":
        result = run_ours(args.data, args.epochs, args.seed, args.batch_size, args.overrides)
    if args.only:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
        else:
            print(json.dumps(result, indent=2, default=str))
        return
    _write({side: _child(side, args) for side in SIDES}, args)


def _write(results: dict[str, dict[str, Any]], args: Any) -> None:
    common.quiet()
    o = results["original"]
    common.write(
        "airbench_original",
        args.out,
        {"results": results},
        table(results),
        f"airbench94: the original (PyTorch, {o['precision']}) and ours (Keras), "
        f"{o['epochs']:g} epochs, seed {o['seed']} (one run each)",
        floatfmt=".2f",
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
