"""Command line: parse, compose the config, call one function, show the result.

python -m cifar_exp train [OVERRIDES...]
python -m cifar_exp sweep [experiment=NAME] [OVERRIDES...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2

EPILOG_TRAIN = """\
overrides are Hydra `key=value` pairs on the composed config (see --cfg), e.g.:
  python -m cifar_exp train trainer.epochs=3 optimizer.lr=0.05
  python -m cifar_exp train data.path=../shared/data/cifar-10-python.tar.gz trainer.epochs=1
  python -m cifar_exp train optimizer=adam trainer.batch_size=128 tracking=none
  python -m cifar_exp train experiment=seed_epochs trainer.epochs=10
"""

EPILOG_MAIN = """\
examples:
  python -m cifar_exp train trainer.epochs=1 data.path=../shared/data/cifar-10-python.tar.gz
  python -m cifar_exp train --cfg            # print the resolved config and exit
  python -m cifar_exp train --help

Runs are recorded in MLflow under ./mlruns (embedded, no server). Browse them with
  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
Set CIFAR10_PATH (or data.path=) to a local cifar-10-python.tar.gz to skip the download.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-exp",
        description="Hyperparameter studies for CIFAR-10 image classification "
        "(Keras, Hydra, Optuna, MLflow).",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="Hydra overrides, e.g. optimizer.lr=0.05 or model=seed_cnn",
        )
        p.add_argument(
            "--cfg",
            action="store_true",
            help="print the resolved config (YAML) and exit without running",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")
        return p

    command("train", "Train the configured CNN once and record the run in MLflow.", EPILOG_TRAIN)
    return parser


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False)],
    )
    for name in ("mlflow", "alembic", "absl", "tensorflow", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with stderr muted at the file-descriptor level.

    Its C++ start-up lines (oneDNN notes, CUDA probing on CPU-only machines) are written before
    any log level applies and say nothing a user can act on. Python errors still surface.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ.get("CIFAR_EXP_TF_VERBOSE"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _error(console: Any, e: Exception) -> None:
    from rich.text import Text

    console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)


def cmd_train(cfg: Any, console: Any) -> int:
    from cifar_exp.tracking import tracking_uri, train_tracked

    out = train_tracked(cfg)
    from rich.table import Table

    table = Table(title="result", show_header=False)
    for key, value in out["final"].items():
        table.add_row(key, f"{value:.4f}")
    if out["test"]:
        table.add_row("test_loss", f"{out['test']['loss']:.4f}")
        table.add_row("test_accuracy", f"{out['test']['accuracy']:.4f}")
    table.add_row("precision", out["info"]["precision"])
    table.add_row("train_time (s)", f"{out['info']['train_time']:.1f}")
    console.print(table)
    if out["run_id"]:
        console.print(
            f"MLflow run [bold]{out['run_id']}[/] in {tracking_uri(cfg.tracking)}\n"
            f"browse: mlflow ui --backend-store-uri {tracking_uri(cfg.tracking)}"
        )
    return 0


COMMANDS: dict[str, Callable[[Any, Any], int]] = {"train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cifar-exp` and `python -m cifar_exp`; returns the exit code."""
    args = _parser().parse_args(argv)
    from rich.console import Console

    from cifar_exp.config import ConfigError, compose, to_yaml

    console, errors = Console(), Console(stderr=True)
    try:
        cfg = compose(args.overrides)
    except ConfigError as e:
        _error(errors, e)
        return EXIT_BAD_INPUT
    if args.cfg:
        console.print(to_yaml(cfg), highlight=False, soft_wrap=True, end="")
        return 0
    _setup_logging(args.quiet)
    _import_tensorflow_quietly()
    from cifar_exp.data import DataError

    try:
        return COMMANDS[args.command](cfg, console)
    except (ConfigError, DataError) as e:
        _error(errors, e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
