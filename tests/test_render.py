"""How a report reads: the summary first, numbered figures with captions, tables with one
format per column, failed and pruned trials in words (never `nan`), and figures in one style
with axes named by the metric. Built from an in-memory study record: no training."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import matplotlib
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from cifar_exp import plots
from cifar_exp.config import with_overrides
from cifar_exp.findings import TrialRow
from cifar_exp.render import StudyRecord, make_figures, render_markdown, trials_table
from cifar_exp.train import Evaluation
from cifar_exp.typeset import render_html, shown_table

DISTS = {
    "optimizer.lr": FloatDistribution(1e-4, 0.1, log=True),
    "trainer.batch_size": CategoricalDistribution([32, 64, 128]),
}
START = datetime(2026, 1, 1, 12, 0, 0)


def _trial(number, state, lr, batch, epochs, **attrs):
    """A trial with a made-up history of `epochs` epochs (val_accuracy rising with lr)."""
    acc = [min(0.9, 0.2 + 2 * lr + 0.05 * e) for e in range(epochs)]
    history = {
        "val_accuracy": acc,
        "accuracy": [a + 0.02 for a in acc],
        "val_loss": [2.0 - a for a in acc],
        "loss": [1.9 - a for a in acc],
    }
    trial = create_trial(
        state=state,
        value=acc[-1] if state == TrialState.COMPLETE else None,
        params={"optimizer.lr": lr, "trainer.batch_size": batch},
        distributions=DISTS,
        user_attrs=attrs,
        intermediate_values={e + 1: a for e, a in enumerate(acc)},
    )
    trial.number = number
    trial.datetime_start = START + timedelta(seconds=100 * number)
    trial.datetime_complete = trial.datetime_start + timedelta(seconds=12.34 * (number + 1))
    return TrialRow(trial, f"run{number}", history if epochs else {}, {})


@pytest.fixture()
def interrupted(cfg):
    """A study that was interrupted: four complete trials, one pruned after its first epoch
    (a one-point curve) and one failed before any epoch."""
    rows = [
        _trial(0, TrialState.COMPLETE, 0.01, 64, 3),
        _trial(1, TrialState.COMPLETE, 0.0003, 32, 3),
        _trial(2, TrialState.PRUNED, 0.002, 128, 1, pruned_at_epoch=1),
        _trial(3, TrialState.COMPLETE, 0.05, 128, 3),
        _trial(4, TrialState.FAIL, 0.02, 32, 0, fail_reason="interrupted (Ctrl-C)\nTraceback"),
        _trial(5, TrialState.COMPLETE, 0.003, 64, 3),
    ]
    study = optuna.create_study(study_name="interrupted", direction="maximize")
    study.add_trials([r.trial for r in rows])
    for r, t in zip(rows, study.trials, strict=True):
        r.trial = t
    spec = {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
    return StudyRecord(
        study=study,
        rows=rows,
        counts={"COMPLETE": 4, "PRUNED": 1, "FAIL": 1},
        best=study.best_trial,
        space={**spec, "trainer.batch_size": {"type": "categorical", "choices": [32, 64, 128]}},
        parent_run_id="parent",
    )


def _evaluation() -> Evaluation:
    rng = np.random.default_rng(0)
    matrix = (rng.integers(0, 8, (10, 10)) + np.eye(10, dtype=int) * 80).tolist()
    right = [row[i] / sum(row) for i, row in enumerate(matrix)]
    total = sum(map(sum, matrix))
    return Evaluation(1.2, sum(matrix[i][i] for i in range(10)) / total, right, matrix, "eval")


@pytest.fixture()
def rendered(cfg, interrupted, tmp_path):
    cfg = with_overrides(cfg, {"search.n_trials": 8})
    figures = make_figures(interrupted, tmp_path, _evaluation(), "val_accuracy")
    table = trials_table(interrupted.rows, cfg)
    md = render_markdown(cfg, interrupted, _evaluation(), figures, table)
    page = render_html(md, figures, "Study interrupted")
    (tmp_path / "report.html").write_text(page)  # for a look: CIFAR_EXP_KEEP=1 pytest ...
    return md, page, figures


def _text(page: str) -> str:
    return re.sub(r'src="data:[^"]+"', "", page)


def test_summary_comes_first_and_says_what_was_found(rendered):
    md, page, _ = rendered
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[0] == "Summary"
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "**Question.**" in summary and "`val_accuracy`" in summary
    assert "Trial 3" in summary and "(1 seed)" in summary  # the best, and what it rests on
    assert re.search(r"Test accuracy.\*\* 0\.\d{4} \(95 % CI 0\.\d{4} to 0\.\d{4}, Wilson", summary)
    assert "6 of 8 planned: 4 complete, 1 pruned, 1 failed" in summary
    assert "wall time 9.6 min" in summary  # 12:00:00 to 12:09:34
    assert page.index("Summary") < page.index("<figure")


def test_figures_are_numbered_with_captions(rendered):
    md, page, figures = rendered
    numbers = [int(n) for n in re.findall(r"^!\[Figure (\d+)\]\(figures/", md, flags=re.M)]
    assert numbers == list(range(1, len(figures) + 1)) and len(figures) >= 6
    for n in numbers:
        assert f"*Figure {n}: " in md
    html_figures = re.findall(r"<figure[^>]*>.*?</figure>", page, flags=re.S)
    assert len(html_figures) == len(figures)
    for n, block in enumerate(html_figures, 1):
        assert f"<figcaption><b>Figure {n}:</b>" in block and "data:image/png;base64," in block
    assert page.count("<img") == len(figures)  # no image outside a captioned figure
    tables = re.findall(r"<caption><b>Table (\d+):</b>", page)
    assert tables == [str(n) for n in range(1, len(tables) + 1)] and len(tables) >= 3


def test_failed_and_pruned_trials_read_as_such_never_nan(rendered):
    md, page, _ = rendered
    assert not re.search(r"\bnan\b", md, flags=re.I)
    assert not re.search(r"\bnan\b", _text(page), flags=re.I)
    assert "| pruned at epoch 1 |" in md
    assert "| failed: interrupted (Ctrl-C) |" in md
    assert "Traceback" not in md  # the reason's first line only


def test_table_columns_have_one_format_and_units(cfg, interrupted):
    headers, rows, numeric = shown_table(trials_table(interrupted.rows, cfg), "val_accuracy")
    assert headers[:3] == ["trial", "status", "val_accuracy"]
    assert "duration (s)" in headers
    for i, header in enumerate(headers):
        cells = [r[i] for r in rows if r[i] != "\u2013"]
        if numeric[i] and cells:
            decimals = {len(c.split(".")[1]) if "." in c else 0 for c in cells}
            assert len(decimals) == 1, (header, cells)
    lr = [r[headers.index("optimizer.lr")] for r in rows]
    assert all(re.fullmatch(r"\d\.\d\de-0\d", v) for v in lr), lr  # spans decades: scientific
    failed = rows[[r[1] for r in rows].index("failed: interrupted (Ctrl-C)")]
    assert failed[2] == "\u2013"


def test_one_epoch_curves_have_whole_epoch_ticks():
    fig = plots.overlay({"trial 0": [0.5], "trial 1 (pruned)": [0.4]}, "val_accuracy")
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert list(ticks) == [1.0]
    fig = plots.curves({"accuracy": [0.3], "val_accuracy": [0.25], "loss": [2], "val_loss": [2]})
    fig.canvas.draw()
    assert all(list(ax.get_xticks()) == [1.0] for ax in fig.axes)


def test_optuna_figures_in_our_style_and_named_by_metric(interrupted):
    before = dict(matplotlib.rcParams)
    figures = plots.study_figures(interrupted.study, "val_accuracy")
    assert set(figures) == {
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinate.png",
        "slice.png",
    }
    assert dict(matplotlib.rcParams) == before  # Optuna's ggplot sheet did not leak
    for name, fig in figures.items():
        fig.canvas.draw()
        for ax in fig.axes:
            assert "Objective" not in ax.get_ylabel() + ax.get_xlabel(), name
            assert ax.get_facecolor()[:3] == (1.0, 1.0, 1.0), name
            assert not any(ax.get_title(loc=loc) for loc in ("left", "center", "right")), name
    history = figures["optimization_history.png"].axes[0]
    assert history.get_ylabel() == "val_accuracy" and history.get_xlabel() == "trial"
    assert all(float(t).is_integer() for t in history.get_xticks())
    slice_fig = figures["slice.png"]
    panels = [ax for ax in slice_fig.axes if ax.get_xlabel()]
    colorbar = [ax for ax in slice_fig.axes if ax not in panels]
    assert colorbar and panels[0].get_ylabel() == "val_accuracy"
    renderer = slice_fig.canvas.get_renderer()
    bar = colorbar[0].get_window_extent(renderer)
    for ax in panels:  # the colorbar keeps a column of its own
        assert not bar.overlaps(ax.get_tightbbox(renderer)), ax.get_xlabel()


def test_confusion_matrix_labels_read_on_their_cells():
    matrix = [[90, 1], [30, 5]]
    fig = plots.confusion(matrix, ["cat", "dog"])
    ax = fig.axes[0]
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["90"] == "white" and colours["1"] == "black"
    assert not any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
