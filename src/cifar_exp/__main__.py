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

EPILOG_SWEEP = """\
The study (search space, sampler, pruner, n_trials) comes from conf/search/ and the named
studies in experiments/. Running the same command again resumes the study: only the trials
still missing to reach search.n_trials are run. Several processes with the same command share
one study. Examples:
  python -m cifar_exp sweep                               # the default study (lr_batch)
  python -m cifar_exp sweep experiment=tiny               # a one-minute study
  python -m cifar_exp sweep experiment=seed_epochs        # the reference study, 10/20/30 epochs
  python -m cifar_exp sweep search.n_trials=40 search.sampler.name=random
  python -m cifar_exp sweep search.space.optimizer.lr.high=0.5
"""

EPILOG_MAIN = """\
examples:
  python -m cifar_exp sweep experiment=tiny
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
    command(
        "sweep",
        "Run or resume an Optuna study; every trial is a tracked training run.",
        EPILOG_SWEEP,
    )
    return parser


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False)],
    )
    for name in ("mlflow", "alembic", "absl", "tensorflow", "h5py", "matplotlib", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the CLI shows trials and failures itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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


def cmd_sweep(cfg: Any, console: Any) -> int:
    from rich.table import Table

    from cifar_exp.progress import RichReporter
    from cifar_exp.search import sweep
    from cifar_exp.tracking import tracking_uri

    try:
        with RichReporter(console, cfg.search.metric) as reporter:
            out = sweep(cfg, reporter)
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] finished trials are saved; run the same command "
            "again to resume the study"
        )
        return 130
    table = Table(title=f"study {out['study_name']}", show_header=False)
    table.add_row("finished trials", f"{out['finished']} of {out['target']}")
    table.add_row("by state", ", ".join(f"{k.lower()} {v}" for k, v in out["counts"].items()))
    if out["best"]:
        b = out["best"]
        table.add_row(f"best {cfg.search.metric}", f"{b['value']:.4f} (trial {b['number']})")
        for key, value in b["params"].items():
            table.add_row(f"  {key}", str(value))
    table.add_row("storage", out["storage"])
    if out["parent_run_id"]:
        table.add_row("MLflow parent run", out["parent_run_id"])
    console.print(table)
    if out["stopped"] != "complete":
        console.print(
            f"[yellow]stopped early:[/] {out['stopped']}; run the same command again "
            "to continue the study"
        )
    if out["parent_run_id"]:
        console.print(f"browse: mlflow ui --backend-store-uri {tracking_uri(cfg.tracking)}")
    return (
        0 if out["finished"] >= out["target"] or out["stopped"] == "search space exhausted" else 1
    )


COMMANDS: dict[str, Callable[[Any, Any], int]] = {"train": cmd_train, "sweep": cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cifar-exp` and `python -m cifar_exp`; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides after an option (`train -q a=1`) land in `extra`; anything else is an error
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
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
