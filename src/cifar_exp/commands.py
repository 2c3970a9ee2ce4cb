"""What each command does: call one function of the library and show its result (the CLI's
parsing and error handling are in __main__)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from cifar_exp.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from cifar_exp.config import Config


class CommandError(UserError, ValueError):
    """A command that cannot run here; printed as one line, exit code 2."""


def cmd_train(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.config import mask
    from cifar_exp.console import show_train
    from cifar_exp.runs import RecordingFailed, train_tracked
    from cifar_exp.tracking import tracking_uri

    try:
        show_train(console, train_tracked(cfg), mask(tracking_uri(cfg.tracking)))
    except RecordingFailed as e:  # what was trained is shown, then why it is not recorded
        show_train(console, e.result, mask(tracking_uri(cfg.tracking)))
        raise
    return 0


def cmd_sweep(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.study.workers import run_study

    out = _study_command(cfg, console, run_study, "study")
    return out if isinstance(out, int) else (0 if out.done else 1)


def cmd_confirm(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.study.sweep import confirm_study

    out = _study_command(cfg, console, confirm_study, "confirmation")
    return out if isinstance(out, int) else (0 if out.confirmation else 1)


def _study_command(cfg: Config, console: Console, run: Any, what: str) -> Any:
    """`run(cfg, reporter)` with the progress display, its summary shown; on Ctrl-C or SIGTERM
    the exit code, after saying how to resume."""
    from cifar_exp.config import mask
    from cifar_exp.console import show_sweep
    from cifar_exp.live import RichReporter
    from cifar_exp.tracking import tracking_uri

    try:
        with RichReporter(console, (cfg.search.objectives or [cfg.search.metric])[0]) as reporter:
            out = run(cfg, reporter)
    except KeyboardInterrupt as e:
        return _interrupted(console, e, what)
    show_sweep(console, out, cfg.search.metric, mask(tracking_uri(cfg.tracking)), _stores(cfg))
    return out


def _stores(cfg: Config) -> str:
    """The overrides that point a later command at this study's stores (for its `next:`
    hint), credentials masked: without them it would look in ./mlruns."""
    import shlex

    from cifar_exp.config import mask

    t, s = cfg.tracking, cfg.search
    words = [f"tracking.uri={t.uri}"] if t.uri else []
    if t.dir != "mlruns" and not (t.uri and s.storage):  # its optuna.db, its mlflow.db
        words.append(f"tracking.dir={t.dir}")
    words += [f"search.storage={s.storage}"] if s.storage else []
    return "".join(f" {shlex.quote(mask(w))}" for w in words)


def _interrupted(console: Console, e: KeyboardInterrupt, what: str) -> int:
    from cifar_exp import interrupts

    interrupts.forget()  # handled here: the exit code says it
    if isinstance(e, interrupts.OutputClosed):  # said where it can still be read
        from rich.console import Console

        console = Console(stderr=True)
    console.print(
        f"[yellow]{interrupts.reason(e).split()[0]}:[/] what finished is saved; run the "
        f"same command again to resume the {what}"
    )
    return interrupts.exit_code(e)


def cmd_report(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_report
    from cifar_exp.report import report

    show_report(console, report(cfg, budget_minutes=args.budget_minutes))
    return 0


def cmd_reproduce(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_reproduce
    from cifar_exp.reproduce import reproduce

    out = reproduce(args.targets[0], cfg, args.overrides, seeds=args.seeds)
    show_reproduce(console, out)
    if out.replication is not None:  # --seeds: the audit decides
        return 0 if out.replication.consistent else 1
    return 0 if out.within_tolerance else 1


def cmd_evaluate(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_evaluate
    from cifar_exp.registry import evaluate_model

    reference = args.targets[0] if args.targets else None
    show_evaluate(console, evaluate_model(reference, cfg, args.overrides))
    return 0


def cmd_predict(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.console import show_predictions
    from cifar_exp.predict import Classifier

    classifier = Classifier.load(args.model, cfg)
    results = classifier.predict_paths(args.targets, top=args.top)
    show_predictions(console, results, classifier.card, as_json=args.json)
    return 1 if any(r.error for r in results) else 0


def cmd_gui(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise CommandError(
            "gui: no display (DISPLAY is not set); run it on a desktop, or on a server under "
            "xvfb-run (xvfb-run python -m cifar_exp gui)"
        )
    from cifar_exp.gui import run
    from cifar_exp.predict import Classifier

    run(lambda: Classifier.load(args.model, cfg))
    return 0


def cmd_ui(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.dashboard import serve

    return serve(cfg, console, host=args.host, port=args.port, access_log=args.access_log)


def cmd_dashboard(cfg: Config, console: Console, args: argparse.Namespace) -> int:
    from cifar_exp.dashboard import serve_dashboard

    # a study the user named must be there; otherwise the configured one opens if it is
    named = args.targets or any(
        o.startswith(("experiment=", "search.study_name=")) for o in args.overrides
    )
    return serve_dashboard(
        cfg,
        console,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        study=cfg.search.study_name if named else None,
    )
