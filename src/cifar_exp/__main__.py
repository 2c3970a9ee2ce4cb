"""Command line: parse, compose the config, call one function, show the result.

python -m cifar_exp train    [KEY=VALUE...]
python -m cifar_exp sweep    [KEY=VALUE...]
python -m cifar_exp report   [STUDY|EXPERIMENT] [KEY=VALUE...]
python -m cifar_exp reproduce RUN_ID [KEY=VALUE...]
python -m cifar_exp evaluate [MODEL] [KEY=VALUE...]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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

EPILOG_REPORT = """\
STUDY is a study name or the name of an experiment in experiments/ (default: the default
study). Writes reports/<study>/report.md and report.html (self-contained) and logs both to the
study's MLflow parent run. The best trial's model is evaluated once on the test set. Examples:
  python -m cifar_exp report tiny
  python -m cifar_exp report seed_epochs data.path=../shared/data/cifar-10-python.tar.gz
"""

EPILOG_REPRODUCE = """\
RUN_ID is any logged `train` run or trial. Its recorded config, seed and data source are
re-run as a new MLflow run tagged reproduces=RUN_ID, and both runs' metrics are compared.
Overrides apply on top of the recorded config (e.g. data.path= when the data moved). Example:
  python -m cifar_exp reproduce 3f2a...c9
"""

EPILOG_EVALUATE = """\
MODEL is an MLflow run id, a registered model (models:/cifar10-cnn/3, models:/cifar10-cnn@champion)
or a .keras file; by default the registry champion. It is evaluated on the test set of the
data config (the full 10,000 images unless data.limit_test is set). Examples:
  python -m cifar_exp evaluate
  python -m cifar_exp evaluate models:/cifar10-cnn@champion
  python -m cifar_exp evaluate model.keras data.limit_test=1000
"""

EPILOG_PREDICT = """\
IMAGE is any file Pillow reads (PNG, JPEG, BMP, GIF: first frame, WebP, TIFF; grayscale,
palette and transparent images become RGB over white) or a folder of them. Each image is
squeezed whole to 32x32 pixels (aspect ratio not kept, no crop, bicubic), as the reference
study's Image.resize((32, 32)), then scaled to [0, 1] as in training. A file that cannot be
read is reported on its own line and the others are still classified; the exit code is 1 if
any failed. Examples:
  python -m cifar_exp predict cat.jpg photos/
  python -m cifar_exp predict --model models:/cifar10-cnn/2 --json cat.jpg
"""

EPILOG_GUI = """\
Opens the "Image Classification CIFAR10" window: upload an image, classify it, see the top-3
classes. The model (default: the registry champion) loads once, in the background.
  python -m cifar_exp gui
  python -m cifar_exp gui --model path/to/model.keras
"""

EPILOG_UI = """\
Starts the MLflow UI on the same store the runs went to (tracking.dir, default ./mlruns) and
prints its URL; Ctrl-C stops it. For Optuna's own dashboard on the study storage:
  pip install optuna-dashboard && optuna-dashboard sqlite:///mlruns/optuna.db
Examples:
  python -m cifar_exp ui
  python -m cifar_exp ui --port 5001 tracking.dir=/data/mlruns
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


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False)],
    )
    import threading

    from cifar_exp.quiet import quiet_libraries

    quiet_libraries()

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        # e.g. Optuna's heartbeat thread while the database restarts: one line, not a traceback
        name = args.thread.name if args.thread else "thread"
        logging.getLogger("cifar_exp").warning("background %s stopped: %s", name, args.exc_value)

    threading.excepthook = thread_failed


def _error(console: Any, e: Exception) -> None:
    from rich.text import Text

    console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)


def cmd_train(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.config import mask
    from cifar_exp.console import show_train
    from cifar_exp.tracking import tracking_uri, train_tracked

    show_train(console, train_tracked(cfg), mask(tracking_uri(cfg.tracking)))
    return 0


def cmd_sweep(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.config import mask
    from cifar_exp.console import RichReporter, show_sweep
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
    show_sweep(console, out, cfg.search.metric, mask(tracking_uri(cfg.tracking)))
    done = out["finished"] >= out["target"] or out["stopped"] == "search space exhausted"
    return 0 if done else 1


def cmd_report(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_report
    from cifar_exp.report import report

    show_report(console, report(cfg))
    return 0


def cmd_reproduce(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_reproduce
    from cifar_exp.reproduce import reproduce

    out = reproduce(args.targets[0], cfg, args.overrides)
    show_reproduce(console, out)
    return 0 if out["within_tolerance"] else 1


def cmd_evaluate(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_evaluate
    from cifar_exp.registry import evaluate_model

    show_evaluate(console, evaluate_model(args.targets[0] if args.targets else None, cfg))
    return 0


def cmd_predict(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_predictions
    from cifar_exp.predict import Classifier

    classifier = Classifier.load(args.model, cfg)
    results = classifier.predict_paths(args.targets, top=args.top)
    show_predictions(console, results, classifier.source, as_json=args.json)
    return 1 if any(r.error for r in results) else 0


def cmd_gui(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise CommandError(
            "gui: no display (DISPLAY is not set); run it on a desktop or under Xvfb"
        )
    from cifar_exp.gui import run
    from cifar_exp.predict import Classifier

    run(lambda: Classifier.load(args.model, cfg))
    return 0


def cmd_ui(cfg: Any, console: Any, args: argparse.Namespace) -> int:
    from cifar_exp.dashboard import serve

    return serve(cfg, console, host=args.host, port=args.port)


class CommandError(ValueError):
    """A command that cannot run here; printed as one line, exit code 2."""


@dataclass
class Command:
    run: Callable[..., int]
    help: str
    epilog: str
    # the positional words (those without "="): (metavar, least, most or None for many)
    positional: tuple[str, int, int | None] | None = None
    options: Callable[[argparse.ArgumentParser], None] | None = None


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="MODEL",
        default=None,
        help="run id, models:/NAME/VERSION, models:/NAME@ALIAS or a .keras file "
        "(default: the registry champion)",
    )


def _predict_options(p: argparse.ArgumentParser) -> None:
    _model_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--top",
        type=int,
        default=3,
        choices=range(1, 11),
        metavar="K",
        help="classes to show per image (default 3)",
    )


def _ui_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")


COMMANDS: dict[str, Command] = {
    "train": Command(
        cmd_train, "Train the configured CNN once and record the run in MLflow.", EPILOG_TRAIN
    ),
    "sweep": Command(
        cmd_sweep,
        "Run or resume an Optuna study; every trial is a tracked training run.",
        EPILOG_SWEEP,
    ),
    "report": Command(
        cmd_report,
        "Write a study's research report (Markdown and self-contained HTML).",
        EPILOG_REPORT,
        ("STUDY", 0, 1),
    ),
    "reproduce": Command(
        cmd_reproduce,
        "Re-run a logged run from its record and compare the metrics.",
        EPILOG_REPRODUCE,
        ("RUN_ID", 1, 1),
    ),
    "evaluate": Command(
        cmd_evaluate,
        "Evaluate a model on the test set (default: the champion).",
        EPILOG_EVALUATE,
        ("MODEL", 0, 1),
    ),
    "predict": Command(
        cmd_predict,
        "Classify your own images (top classes with probabilities).",
        EPILOG_PREDICT,
        ("IMAGE", 1, None),
        _predict_options,
    ),
    "gui": Command(
        cmd_gui,
        "Open a window to upload an image and classify it.",
        EPILOG_GUI,
        None,
        _model_options,
    ),
    "ui": Command(
        cmd_ui, "Start the MLflow UI on the project's tracking store.", EPILOG_UI, None, _ui_options
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-exp",
        description="Hyperparameter studies for CIFAR-10 image classification "
        "(Keras, Hydra, Optuna, MLflow).",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        pos = command.positional
        usage = "KEY=VALUE" if pos is None else f"{pos[0]} KEY=VALUE"
        p.add_argument(
            "args",
            nargs="*",
            metavar=usage,
            help="Hydra overrides, e.g. optimizer.lr=0.05 or model=seed_cnn"
            + ("" if pos is None else f"; {pos[0]} before them"),
        )
        p.add_argument(
            "--cfg",
            action="store_true",
            help="print the resolved config (YAML) and exit without running",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")
        if command.options:
            command.options(p)
    return parser


def _split_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Options, plus `targets` (the command's positional words) and `overrides` (KEY=VALUE)."""
    args, extra = parser.parse_known_args(argv)
    # words after an option (`train -q a=1`) land in `extra`; other options are errors
    unknown = [x for x in extra if x.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    words = [*args.args, *extra]
    pos = COMMANDS[args.command].positional
    # an image path may contain "=": for predict, existing files are never overrides
    is_target = (
        (lambda w: "=" not in w or Path(w).exists())
        if pos and pos[2] is None
        else (lambda w: "=" not in w)
    )
    args.targets = [w for w in words if is_target(w)]
    args.overrides = [w for w in words if not is_target(w)]
    n = len(args.targets)
    if pos is None and n:
        parser.error(f"{args.command}: overrides are KEY=VALUE (got {args.targets[0]!r})")
    if pos is not None and (n < pos[1] or (pos[2] is not None and n > pos[2])):
        parser.error(
            f"{args.command}: expects {pos[0]}" + (" (one or more)" if pos[2] is None else "")
        )
    return args


def _target_overrides(command: str, target: str | None) -> list[str]:
    """`report NAME`: NAME is an experiment (its study) or a study name."""
    if command != "report" or target is None:
        return []
    from cifar_exp.config import list_experiments

    if target in list_experiments():
        return [f"experiment={target}"]
    return [f"search.study_name={target}"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cifar-exp` and `python -m cifar_exp`; returns the exit code."""
    parser = _parser()
    args = _split_args(parser, argv)
    from rich.console import Console

    from cifar_exp.config import ConfigError, compose, to_yaml

    console, errors = Console(), Console(stderr=True)
    target = args.targets[0] if args.targets else None
    try:
        cfg = compose([*_target_overrides(args.command, target), *args.overrides])
    except ConfigError as e:
        _error(errors, e)
        return EXIT_BAD_INPUT
    if args.cfg:
        console.print(to_yaml(cfg), highlight=False, soft_wrap=True, end="")
        return 0
    _setup_logging(args.quiet)
    from cifar_exp.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from mlflow.exceptions import MlflowException

    from cifar_exp.config import mask
    from cifar_exp.data import DataError
    from cifar_exp.registry import ModelNotFound
    from cifar_exp.storage import StorageUnavailable

    try:
        return COMMANDS[args.command].run(cfg, console, args)
    except (ConfigError, DataError, ModelNotFound, CommandError, StorageUnavailable) as e:
        _error(errors, e)
        return EXIT_BAD_INPUT
    except MlflowException as e:  # tracking server down or refusing: one line, no traceback
        _error(errors, CommandError(f"MLflow: {mask(str(e).strip().splitlines()[0])}"))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
