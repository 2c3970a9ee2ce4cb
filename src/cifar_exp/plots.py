"""Figures of a training: accuracy and loss per epoch, and the confusion matrix.

Built with matplotlib's object API (no pyplot state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def curve(
    history: dict[str, list[float]],
    metric: str,
    title: str | None = None,
    std: dict[str, list[float]] | None = None,
) -> Figure:
    """`metric` and `val_<metric>` per epoch (train and validation), as in the reference study;
    with `std` (per epoch, over seeds) the mean with a band of ± one standard deviation."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        values = history.get(key)
        if values:
            _line(ax, values, (std or {}).get(key), 0.2, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def confusion(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    title: str = "confusion matrix (test set)",
) -> Figure:
    """Counts of true (rows) vs predicted (columns) classes."""
    n = len(class_names)
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            v = matrix[i][j]
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > peak / 2 else "black",
            )
    fig.tight_layout()
    return fig


def study_figures(study: object) -> dict[str, object]:
    """Optuna's own figures of a study (history, importances, parallel coordinates, slice),
    as matplotlib Figures keyed by file name; a figure the study cannot support yet (too few
    trials, one parameter) is left out."""
    import logging
    import warnings

    import optuna.visualization.matplotlib as ovm

    makers = {
        "optimization_history.png": ovm.plot_optimization_history,
        "param_importances.png": ovm.plot_param_importances,
        "parallel_coordinate.png": ovm.plot_parallel_coordinate,
        "slice.png": ovm.plot_slice,
    }
    out: dict[str, object] = {}
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" and layout notices
            try:
                ax = make(study)
            except Exception as e:  # not enough finished trials for this figure
                logging.getLogger(__name__).info("no %s: %s", name, e)
                continue
            first = ax.flat[0] if hasattr(ax, "flat") else ax
            fig = first.figure
            fig.set_size_inches(max(fig.get_figwidth(), 7), max(fig.get_figheight(), 4.5))
            fig.tight_layout()
        out[name] = fig
    return out


def overlay(
    curves: dict[str, list[float]],
    metric: str,
    std: dict[str, list[float]] | None = None,
) -> Figure:
    """One line per trial (label -> values per epoch), e.g. every trial's val_accuracy; with
    `std` (label -> per epoch, over seeds), each mean with a band of ± one std."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for label, values in curves.items():
        if values:
            _line(ax, values, (std or {}).get(label), 0.15, marker=".", linewidth=1, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial")
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _line(
    ax: Any, values: list[float], spread: list[float] | None, alpha: float, **kw: Any
) -> None:
    """Values per epoch (from 1), with a band of ± `spread` around them where given."""
    epochs = range(1, len(values) + 1)
    (line,) = ax.plot(epochs, values, **kw)
    if spread and len(spread) == len(values):
        low = [v - d for v, d in zip(values, spread, strict=True)]
        high = [v + d for v, d in zip(values, spread, strict=True)]
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=alpha)
