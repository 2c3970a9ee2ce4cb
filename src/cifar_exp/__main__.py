"""Command line: parse, compose the config, call one function, show the result; every
failure is one `error:` line (see README, "When something is wrong")."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifar_exp.commands import (
    CommandError,
    cmd_confirm,
    cmd_dashboard,
    cmd_evaluate,
    cmd_gui,
    cmd_predict,
    cmd_report,
    cmd_reproduce,
    cmd_sweep,
    cmd_train,
    cmd_ui,
)
from cifar_exp.errors import UserError, first_line

if TYPE_CHECKING:
    pass

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

EPILOG_MAIN = """\
examples:
  python -m cifar_exp sweep experiment=tiny
  python -m cifar_exp train trainer.epochs=1 data.path=cifar-10-python.tar.gz
  python -m cifar_exp train --cfg     # print the resolved config and exit
See README.md for the whole guide.
"""


def _error(console: Any, e: Exception) -> None:
    from rich.text import Text

    console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)


@dataclass
class Command:
    run: Callable[..., int]
    help: str
    # a few example lines for --help (short: the README holds the long form)
    examples: tuple[str, ...]
    # the positional words (those without "="): (metavar, least, most or None for many)
    positional: tuple[str, int, int | None] | None = None
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()

    def epilog(self, name: str) -> str:
        return "examples:\n" + "\n".join(
            f"  python -m cifar_exp {name} {e}".rstrip() for e in self.examples
        )


# options besides the overrides: (flags, argparse keyword arguments)
MODEL = (
    ("--model",),
    {"metavar": "MODEL", "help": "run id, models:/NAME/VERSION, models:/NAME@ALIAS or a .keras "
     "file (default: the registry champion)"},
)  # fmt: skip
PREDICT = (
    MODEL,
    (("--json",), {"action": "store_true", "help": "print JSON instead of a table"}),
    (("--top",), {"type": int, "default": 3, "choices": range(1, 11), "metavar": "K",
                  "help": "classes to show per image (default 3)"}),
)  # fmt: skip
REPRODUCE = (
    (("--seeds",), {"type": int, "default": 0, "metavar": "K",
                    "help": "also re-train with K new seeds: is the original value inside the "
                    "replication's 95 %% interval? (exit 0 if so, 1 if not)"}),
)  # fmt: skip
HOST = (("--host",), {"default": "127.0.0.1", "help": "address to bind (default 127.0.0.1)"})
ACCESS_LOG = (
    ("--access-log",),
    {"action": "store_true", "help": "show the server's log of every request"},
)
UI = (
    HOST,
    (("--port",), {"type": int, "default": 5000, "help": "port (default 5000)"}),
    ACCESS_LOG,
)
REPORT = (
    (("--budget-minutes",), {"type": float, "metavar": "MIN",
                             "help": "also name the best configuration whose training took at "
                             "most MIN minutes"}),
)  # fmt: skip
DASHBOARD = (
    HOST,
    (("--port",), {"type": int, "default": 8080, "help": "port (default 8080)"}),
    ACCESS_LOG,
)


COMMANDS: dict[str, Command] = {
    "train": Command(
        cmd_train,
        "Train the configured CNN once and record the run in MLflow.",
        ("trainer.epochs=3 optimizer.lr=0.05", "optimizer=adam tracking=none"),
    ),
    "sweep": Command(
        cmd_sweep,
        "Run or resume an Optuna study; every trial is a tracked training run.",
        ("experiment=tiny", "experiment=seed_epochs", "--workers 2 search.n_trials=40"),
        None,
        (
            (
                ("--workers",),
                {"metavar": "N", "help": "trials at once: a number or auto (search.n_workers)"},
            ),
        ),
    ),
    "confirm": Command(
        cmd_confirm,
        "Re-train a study's best configurations with more seeds and choose on the means.",
        ("tiny", "lr_batch search.confirm.top_k=5"),
        ("STUDY", 0, 1),
    ),
    "report": Command(
        cmd_report,
        "Write a study's report (Markdown and self-contained HTML).",
        ("tiny", "seed_epochs", "lr_batch --budget-minutes 10"),
        ("STUDY", 0, 1),
        REPORT,
    ),
    "reproduce": Command(
        cmd_reproduce,
        "Re-run a logged run from its record and compare the metrics.",
        ("RUN_ID", "RUN_ID --seeds 3", "RUN_ID data.path=/data/cifar-10-python.tar.gz"),
        ("RUN_ID", 1, 1),
        REPRODUCE,
    ),
    "evaluate": Command(
        cmd_evaluate,
        "Evaluate a model on the test set (default: the champion).",
        ("", "models:/cifar10-cnn/3", "model.keras data.limit_test=1000"),
        ("MODEL", 0, 1),
    ),
    "predict": Command(
        cmd_predict,
        "Classify your own images (top classes with probabilities).",
        ("cat.jpg photos/", "--model models:/cifar10-cnn/2 --json cat.jpg"),
        ("IMAGE", 1, None),
        PREDICT,
    ),
    "gui": Command(
        cmd_gui,
        "Open a window to upload an image and classify it.",
        ("", "--model path/to/model.keras"),
        None,
        (MODEL,),
    ),
    "ui": Command(
        cmd_ui,
        "Start the MLflow UI on the project's tracking store.",
        ("", "--port 5001 tracking.dir=/data/mlruns"),
        None,
        UI,
    ),
    "dashboard": Command(
        cmd_dashboard,
        "Start optuna-dashboard on the study storage (opens STUDY's page if given).",
        ("", "tiny --port 8081", "search.storage=postgresql://user@host/studies"),
        ("STUDY", 0, 1),
        DASHBOARD,
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-exp",
        description="Hyperparameter studies for CIFAR-10 image classification\n"
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
            epilog=command.epilog(name),
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
        for flags, kwargs in command.options:
            p.add_argument(*flags, **kwargs)
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
    """`report NAME`, `confirm NAME`, `dashboard NAME`: NAME is an experiment (its study) or a
    study name."""
    if command not in ("report", "confirm", "dashboard") or target is None:
        return []
    from cifar_exp.config import list_experiments

    if target in list_experiments():
        return [f"experiment={target}"]
    return [f"search.study_name={target}"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cifar-exp` and `python -m cifar_exp`; returns the exit code."""
    from cifar_exp import interrupts, logs

    interrupts.guard_output()  # a closed stdout is /dev/null; a broken one stops (`| head`)
    parser = _parser()
    args = _split_args(parser, argv)
    if args.command != "gui":  # Tk's loop would only see the signal at its next event
        interrupts.terminate_as_interrupt()
    target = args.targets[0] if args.targets else None
    try:  # from here a Ctrl-C or SIGTERM, even during an import, ends in one line
        from rich.console import Console

        from cifar_exp.config import ConfigError, to_yaml
        from cifar_exp.study.grammar import command_config

        console, errors = Console(), Console(stderr=True)
        # a sweep expression (`optimizer.lr=interval(..)`) is a search parameter, not a value
        overrides = [*_target_overrides(args.command, target), *args.overrides]
        if getattr(args, "workers", None):
            overrides.append(f"search.n_workers={args.workers}")
        cfg = command_config(args.command, overrides)
    except KeyboardInterrupt as e:  # first: the names below may not be imported yet
        print(interrupts.reason(e), file=sys.stderr)
        return interrupts.exit_code(e)
    except ConfigError as e:
        _error(errors, e)
        return EXIT_BAD_INPUT
    if args.cfg:
        console.print(to_yaml(cfg), highlight=False, soft_wrap=True, end="")
        return 0
    from cifar_exp.config import mask

    try:
        logs.setup(logging.WARNING if args.quiet else logging.INFO)
        logs.import_tensorflow_quietly()
        code = COMMANDS[args.command].run(cfg, console, args)
        interrupts.checkpoint()  # a Ctrl-C swallowed after the last checkpoint: still 130
        return code
    except UserError as e:  # a bad input, an unusable store or server: the message says which
        _error(errors, e)
    except _loaded("cifar_exp.train", "TrainingDiverged") as e:  # the run is recorded FAILED
        _error(errors, CommandError(f"training diverged: {e} (try a lower optimizer.lr)"))
    # MLflow and SQLAlchemy are imported by the commands that use them, not here
    except _loaded("mlflow.exceptions", "MlflowException") as e:  # tracking server down or
        _error(errors, CommandError(f"MLflow: {mask(first_line(e))}"))  # refusing: one line
    except _loaded("sqlalchemy.exc", "SQLAlchemyError") as e:  # a store broke while in use
        _error(errors, CommandError(f"database: {mask(first_line(getattr(e, 'orig', e)))}"))
    except KeyboardInterrupt as e:
        errors.print(f"[yellow]{interrupts.reason(e)}[/]")
        return interrupts.exit_code(e)
    except Exception as e:  # a failure nobody foresaw: one line; the traceback on request
        if os.environ.get("CIFAR_EXP_TRACEBACK"):
            raise
        if isinstance(e, OSError) and e.filename and e.strerror:  # a read-only folder, say
            _error(errors, CommandError(f"{e.filename}: {e.strerror}"))
            return EXIT_BAD_INPUT
        _error(
            errors,
            CommandError(
                f"{type(e).__name__}: {mask(first_line(e))} (unexpected; "
                "CIFAR_EXP_TRACEBACK=1 shows where)"
            ),
        )
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def _loaded(module: str, name: str) -> type | tuple:
    """The exception class `module.name` if that module is imported, else () (an `except`
    that catches nothing): an exception of a module never imported cannot have been raised."""
    found = sys.modules.get(module)
    return getattr(found, name) if found is not None else ()


def exit_now(code: int) -> None:
    """End the process with `code` once the command is done: the exit handlers run (logging's
    flush, multiprocessing's clean-up) and the output is flushed, but the interpreter does not
    tear TensorFlow, MLflow and the rest down object by object (1-2 s; docs/benchmarks.md).
    A normal exit where another thread still runs, whose end Python would wait for."""
    import atexit
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()  # what sys.exit would run; os._exit skips it
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
