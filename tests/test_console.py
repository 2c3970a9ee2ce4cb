"""What a user sees in a terminal of 80 and 120 columns: progress lines and tables that fit
without cutting numbers (`…`), a bar within the epoch, and log lines above the live display,
never glued onto a bar. The end-to-end check runs the sweep in a real terminal (tmux)."""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from rich.text import Text

from cifar_exp.console import trial_columns
from cifar_exp.live import RichReporter
from cifar_exp.study.progress import Progress, TrialOutcome
from cifar_exp.terminal import Piece, fit_line, fit_table

CLOCK = re.compile(r"\d+:\d\d:\d\d")
BAR = "━"


def _console(width: int) -> Console:
    return Console(width=width, force_terminal=True, color_system=None, record=True)


def test_a_progress_line_wraps_its_params_and_keeps_its_counts_at_80_columns():
    head = [Text("trial 12"), Text("3/10 epochs"), Text("0:01:23")]
    params = {
        "optimizer.lr": 0.00443,
        "trainer.batch_size": 128,
        "model.width": 64,
        "trainer.label_smoothing": 0.1,
    }
    tail = [Piece.of(f"{k}={v}", f"{k.rsplit('.', 1)[-1]}={v}") for k, v in params.items()]
    lines = [t.plain for t in fit_line(head, tail, 80, lambda w: Text(BAR * w), 20)]
    assert all(len(line) <= 80 for line in lines)
    assert "trial 12" in lines[0] and "3/10 epochs" in lines[0] and "0:01:23" in lines[0]
    assert BAR * 20 in lines[0]
    text = " ".join(lines)
    assert all(f"{k.rsplit('.', 1)[-1]}={v}" in text for k, v in params.items())
    assert "trainer.batch_size" not in text  # short forms throughout once any is needed
    at_120 = [t.plain for t in fit_line(head, tail[:2], 120, lambda w: Text(BAR * w), 30)]
    assert len(at_120) == 1 and "trainer.batch_size=128" in at_120[0]


def test_a_line_too_narrow_for_its_bar_drops_the_bar_not_the_numbers():
    head = [Text("study a_long_study_name"), Text("12/100 trials"), Text("1:02:03")]
    lines = [t.plain for t in fit_line(head, [], 50, lambda w: Text(BAR * w), 20)]
    assert lines == ["study a_long_study_name  12/100 trials  1:02:03"]


def _trials(seeds: int) -> pd.DataFrame:
    rows = []
    for i, state in enumerate(["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]):
        row = {
            "trial": i,
            "state": state,
            "loss": 2.3012 + i,
            "accuracy": 0.1234,
            "val_loss": 2.2876,
            "val_accuracy": None if state == "FAIL" else 0.14567 - i / 100,
            "epochs": 2,
            "optimizer.lr": 0.004430375245218269 * (i + 1),
            "trainer.batch_size": 32 * (i + 1),
            "duration_s": 12.345 + i,
        }
        if seeds > 1:
            row |= {"val_accuracy ±": 0.0637, "seeds": seeds}
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seeds", [1, 3])
def test_the_trial_table_fits_80_columns_by_dropping_low_priority_columns(seeds):
    console = _console(80)
    console.print(fit_table(console, "trials", trial_columns(_trials(seeds))))
    out = console.export_text()
    assert "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines())
    header = out.splitlines()[2:4]
    for name in ("trial", "state", "val_", "accuracy", "lr", "batch_"):
        assert any(name in h for h in header), name
    assert "0.1457" in out and "0.00443" in out
    assert "not shown at 80 columns" in out  # what was left out is named
    if seeds > 1:
        assert "0.1457 ± 0.0637" in out
    assert " - " in out.splitlines()[-3] + " "  # a failed trial's metric is `-`, not `nan`


def test_the_trial_table_shows_every_column_at_120():
    console = _console(120)
    console.print(fit_table(console, "trials", trial_columns(_trials(1))))
    out = console.export_text()
    assert "not shown" not in out and "…" not in out
    assert "time (s)" in out and "12.3" in out


def test_the_live_display_shows_batches_and_routes_logs_through_its_console():
    console = _console(80)
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()], force=True)
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(file=io.StringIO()), show_path=False)
    logging.getLogger().addHandler(handler)
    try:
        with RichReporter(console, "val_accuracy") as r:
            r.study_started(Progress("tiny", 0, 4))
            r.trial_started(0, {"optimizer.lr": 0.00443, "trainer.batch_size": 32})
            r.batch_ended(0, 1, 2, 5, 16)
            r.progress.refresh()
            logging.getLogger("cifar_exp.data").info("data: 500 train, 200 val")
            r.epoch_ended(0, 1, 2, {"loss": 2.3, "val_loss": 2.2, "val_accuracy": 0.145})
            r.progress.refresh()
            live = "\n".join(t.plain for t in r.progress.draw(console, r.progress.tasks[1], 80, 7))
            batches = r.progress.draw(console, r.progress.tasks[2], 80, 7)[0].plain
            r.trial_ended(
                TrialOutcome(0, "COMPLETE", 0.145, {"optimizer.lr": 0.00443}),
                Progress("tiny", 1, 4, 0.145, 0),
            )
    finally:
        logging.getLogger().removeHandler(handler)
    out = console.export_text()
    assert "1/2 epochs" in live and "lr=0.00443" in live and "val_accuracy 0.1450" in live
    assert "5/16 batches" in batches and BAR in batches
    # the log line went through the display's console (which clears the bars before it; a
    # recording does not show that: the terminal test below looks at the screen)
    assert "data: 500 train" in out
    assert "trial   0  COMPLETE  val_accuracy=0.1450  optimizer.lr=0.00443" in out
    assert "best val_accuracy 0.1450 (trial 0)" in out or "best 0.1450 (trial 0)" in out


# --------------------------------------------------------------------------- a real terminal


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, check=False
    ).stdout


def _sweep_in_tmux(width: int, overrides: list[str], workdir: Path) -> tuple[list[str], str]:
    """Every distinct screen seen while the sweep ran in a `width`-column tmux terminal, and
    the whole scrollback at the end."""
    socket = f"cifar-exp-test-{width}-{time.time_ns()}"
    small = ["search.n_trials=2", "search.confirm.top_k=2", "search.confirm.seeds=2"]
    command = " ".join([sys.executable, "-m", "cifar_exp", "sweep", *overrides, *small])
    shell = f"cd {workdir} && {command}; echo EXIT=$?; sleep 600"
    _tmux(socket, "new-session", "-d", "-x", str(width), "-y", "40", shell)
    screens: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screen = _tmux(socket, "capture-pane", "-p")
            if not screens or screen != screens[-1]:
                screens.append(screen)
            if "EXIT=" in screen:
                break
            time.sleep(0.3)
        history = _tmux(socket, "capture-pane", "-p", "-S", "-")
    finally:
        _tmux(socket, "kill-server")
    return screens, history


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("width", [80, 120])
def test_the_sweep_in_a_real_terminal(width, overrides, workdir):
    screens, history = _sweep_in_tmux(width, overrides, workdir)
    assert "EXIT=0" in history, history
    for text in [*screens, history]:
        lines = text.splitlines()
        assert not any("…" in line for line in lines), text
        # a log line (rich's `[12:34:56] INFO ...`) never shares a line with a bar
        assert not any(BAR in line and re.search(r"INFO|WARNING", line) for line in lines), text
    study_lines = [
        line for s in screens for line in s.splitlines() if line.startswith("study tiny  ")
    ]  # the live line, not the summary table's title
    assert study_lines, screens
    for line in study_lines:
        assert re.search(r"\d/2 trials", line) and CLOCK.search(line) and "best" in line, line
    trial_lines = [line for s in screens for line in s.splitlines() if "/2 epochs" in line]
    assert trial_lines and all(CLOCK.search(line) for line in trial_lines)
    # the confirmation table and the study's summary, whole
    for column in ("trial", "params", "seeds", "mean ± 95 % CI", "vs best", "finished trials"):
        assert column in history, column
    assert re.search(r"trial +\d  COMPLETE  val_accuracy=0\.\d{4}", history)


@pytest.mark.parametrize(
    "extra, hint",
    [
        ([], ""),
        (["tracking.dir=/tmp/my runs"], " 'tracking.dir=/tmp/my runs'"),
        (
            ["tracking.uri=http://h:5000", "search.storage=postgresql://u:pw@db/optuna"],
            " tracking.uri=http://h:5000 'search.storage=postgresql://u:***@db/optuna'",
        ),
    ],
)
def test_the_next_hint_finds_the_studys_stores(extra, hint, overrides):
    """(`next: python -m cifar_exp report tiny` dropped tracking.dir: it would have reported
    on another study of the same name in ./mlruns.)"""
    from cifar_exp.commands import _stores
    from cifar_exp.config import compose

    cfg = compose([*[o for o in overrides if not o.startswith("tracking.dir=")], *extra])
    assert _stores(cfg) == hint


@pytest.mark.parametrize(
    "queued, said",
    [(0, "1 of 4 trials already finished\n"), (1, "already finished; 1 queued trial (a retry")],
)
def test_resuming_says_which_trials_run_first(queued, said):
    """(After an interrupt it said only how many trials were finished, not that the
    interrupted trial's parameters were queued to run first.)"""
    console = _console(120)
    with RichReporter(console, "val_accuracy") as r:
        r.study_started(Progress("tiny", 1, 4, queued=queued))
    assert said in console.export_text()


def test_the_next_commands_are_whole_lines_at_80_columns():
    """(The report and ui commands shared one line, which an 80-column terminal cut in the
    middle of a word.)"""
    from cifar_exp.console import show_sweep
    from cifar_exp.study.summary import SweepSummary

    out = SweepSummary("tiny", "sqlite:///x.db", "abc", {"COMPLETE": 2}, 2, 2, None, "complete")
    console = _console(80)
    show_sweep(console, out, "val_accuracy", "sqlite:///x", " 'tracking.dir=/tmp/my runs'")
    lines = console.export_text().splitlines()
    assert "next:   python -m cifar_exp report tiny 'tracking.dir=/tmp/my runs'" in lines
    assert "browse: python -m cifar_exp ui 'tracking.dir=/tmp/my runs'" in lines
