"""Figures of a training and of a study, in one paper-like style: accuracy and loss per epoch,
every trial's curve, the confusion matrix, and Optuna's own study figures restyled to match.

Built with matplotlib's object API under one set of rcParams (`STYLE`): white background,
one font family and size, light grid, no titles where the report gives captions. Optuna's
matplotlib figures switch to the `ggplot` sheet globally (grey panels, white grid lines that
would then run through later figures, e.g. the confusion matrix); `styled()` keeps that sheet
out, so every figure reads alike.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

# Optuna's colour scale without its white end, so the lowest value still shows on white
LIGHT_BLUES = LinearSegmentedColormap.from_list(
    "light_blues", matplotlib.colormaps["Blues"](np.linspace(0.25, 1.0, 256))
)
# Text width of a report page, inches; a figure drawn this wide is shown at the column width,
# so 9-point text in every figure reads alike on screen and on paper.
FULL_WIDTH = 7.0
STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.edgecolor": "#444444",
    "axes.labelcolor": "#222222",
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "axes.grid": False,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=matplotlib.colormaps["tab10"].colors),
    "lines.linewidth": 1.5,
    "legend.frameon": False,
    "figure.figsize": (FULL_WIDTH, 3.0),
    "figure.dpi": 100,
}


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """`STYLE` for every figure made inside, with Optuna's `plt.style.use("ggplot")` calls made
    no-ops (they would change the process's rcParams for good)."""
    import matplotlib.style

    with matplotlib.rc_context(STYLE), mock.patch.object(matplotlib.style, "use", lambda *_: None):
        yield


def _figure(height: float, width: float = FULL_WIDTH) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def integer_axis(axis: Any, values: Sequence[float]) -> None:
    """Ticks at whole numbers only (epochs, trial numbers), also where one or two values leave
    matplotlib a view narrower than one unit (a study interrupted after one epoch)."""
    values = [v for v in values if v is not None]
    if not values:
        return
    low, high = min(values), max(values)
    if high - low < 2:
        axis.set_major_locator(FixedLocator(sorted({int(v) for v in values})))
        setter = axis.axes.set_xlim if axis is axis.axes.xaxis else axis.axes.set_ylim
        setter(low - 0.5, high + 0.5)
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------- training curves


def curve(
    history: dict[str, list[float]],
    metric: str,
    title: str | None = None,
    std: dict[str, list[float]] | None = None,
) -> Figure:
    """`metric` and `val_<metric>` per epoch (train and validation), as in the reference study;
    with `std` (per epoch, over seeds) the mean with a band of ± one standard deviation."""
    with styled():
        fig = _figure(3.2, FULL_WIDTH * 0.6)
        ax = fig.add_subplot()
        _train_val(ax, history, metric, std)
        if title:
            ax.set_title(title)
    return fig


def curves(history: dict[str, list[float]], std: dict[str, list[float]] | None = None) -> Figure:
    """Accuracy (a) and loss (b) per epoch side by side, train and validation."""
    with styled():
        fig = _figure(2.8)
        for ax, metric, panel in zip(fig.subplots(1, 2), ("accuracy", "loss"), "ab", strict=True):
            _train_val(ax, history, metric, std)
            ax.set_title(f"({panel}) {metric}", loc="left")
    return fig


def _train_val(
    ax: Any, history: dict[str, list[float]], metric: str, std: dict[str, list[float]] | None
) -> None:
    n = 0
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        values = history.get(key)
        if values:
            _line(ax, values, (std or {}).get(key), 0.2, marker="o", markersize=3, label=label)
            n = max(n, len(values))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    integer_axis(ax.xaxis, range(1, n + 1))
    ax.grid(True)
    ax.legend()


def overlay(
    curves: dict[str, list[float]],
    metric: str,
    std: dict[str, list[float]] | None = None,
    stopped: set[str] | None = None,
) -> Figure:
    """One line per trial (label -> values per epoch), e.g. every trial's val_accuracy; with
    `std` (label -> per epoch, over seeds), each mean with a band of ± one std. Trials in
    `stopped` (pruned) are dashed and end in a cross."""
    with styled():
        fig = _figure(3.2)
        ax = fig.add_subplot()
        n = 0
        for label, values in curves.items():
            if not values:
                continue
            cut = label in (stopped or set())
            kw = {"linestyle": "--" if cut else "-", "marker": ".", "linewidth": 1.2}
            kw["zorder"] = 3 if cut else 2  # a short pruned line stays visible over the others
            line = _line(ax, values, (std or {}).get(label), 0.15, label=label, **kw)
            if cut:
                ax.plot(len(values), values[-1], "x", color=line.get_color(), ms=7, zorder=3)
            n = max(n, len(values))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        integer_axis(ax.xaxis, range(1, n + 1))
        ax.grid(True)
        if 0 < len(curves) <= 20:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(curves) // 11)
    return fig


def _line(ax: Any, values: list[float], spread: list[float] | None, alpha: float, **kw: Any) -> Any:
    """Values per epoch (from 1), with a band of ± `spread` around them where given."""
    epochs = range(1, len(values) + 1)
    (line,) = ax.plot(epochs, values, **kw)
    if spread and len(spread) == len(values):
        low = [v - d for v, d in zip(values, spread, strict=True)]
        high = [v + d for v, d in zip(values, spread, strict=True)]
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=alpha)
    return line


# --------------------------------------------------------------------------- confusion matrix


def confusion(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    title: str | None = None,
) -> Figure:
    """Counts of true (rows) vs predicted (columns) classes; each count written in the colour
    that reads on its cell (white on dark cells, black on light ones)."""
    n = len(class_names)
    with styled():
        fig = _figure(4.6, 5.4)
        ax = fig.add_subplot()
        im = ax.imshow(matrix, cmap="Blues")
        ax.grid(False)
        ax.spines[:].set_visible(False)
        fig.colorbar(im, ax=ax, shrink=0.8, label="images")
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.tick_params(length=0)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if title:
            ax.set_title(title)
        for i in range(n):
            for j in range(n):
                r, g, b, _ = im.cmap(im.norm(matrix[i][j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                color = "white" if dark else "black"
                ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color=color)
    return fig


# --------------------------------------------------------------------------- the study


def study_figures(study: Any, metric: str | None = None) -> dict[str, Figure]:
    """Optuna's own figures of a study (history, importances, parallel coordinates, slice) in
    `STYLE`, axes named by the metric (the study's metric name, else `metric`), as matplotlib
    Figures keyed by file name; a figure the study cannot support yet (too few trials, one
    parameter) is left out. A multi-objective study's figures show its first objective, and
    its Pareto front is one more (`pareto_front.png`)."""
    import optuna.visualization.matplotlib as ovm

    names = getattr(study, "metric_names", None)
    several = len(study.directions) > 1
    target = (names[0] if several and names else None) or metric or (names or ["objective"])[0]
    first = {"target": lambda t: t.values[0]} if several else {}
    makers = {
        "optimization_history.png": ovm.plot_optimization_history,
        "param_importances.png": ovm.plot_param_importances,
        "parallel_coordinate.png": ovm.plot_parallel_coordinate,
        "slice.png": ovm.plot_slice,
    }
    out: dict[str, Figure] = {}
    for name, make in makers.items():
        with warnings.catch_warnings(), styled():
            warnings.simplefilter("ignore")  # "experimental" and layout notices
            try:
                ax = make(study, target_name=target, **first)
            except Exception as e:  # not enough finished trials for this figure
                logging.getLogger(__name__).info("no %s: %s", name, e)
                continue
            axes = list(ax.flat) if hasattr(ax, "flat") else [ax]
            if not axes[0].has_data() and not axes[0].collections:
                continue  # Optuna drew an empty frame: nothing to show yet
            out[name] = _restyle(name, axes, study)
    if several:
        try:
            out["pareto_front.png"] = pareto_front(study, names)
        except ValueError as e:  # Optuna draws 2 or 3 objectives
            logging.getLogger(__name__).info("no Pareto front figure: %s", e)
    return out


def pareto_front(study: Any, names: list[str] | None = None) -> Figure:
    """Optuna's Pareto-front plot of a 2- or 3-objective study in `STYLE`: every complete
    trial by its objective values, the trials on the front in red and numbered."""
    import optuna.visualization.matplotlib as ovm

    with warnings.catch_warnings(), styled():
        warnings.simplefilter("ignore")  # "experimental"
        ax = ovm.plot_pareto_front(study, target_names=names)
        fig = ax.figure
        fig.set_size_inches(FULL_WIDTH, 3.6 if ax.name == "3d" else 3.0)
        ax.set_title("")
        handles, labels = ax.get_legend_handles_labels()
        shown = {"Trial": "dominated trial", "Feasible Trial": "dominated trial"}
        shown |= {"Best Trial": "on the Pareto front", "Infeasible Trial": "breaks a constraint"}
        if handles:
            ax.legend(handles, [shown.get(t, t) for t in labels], loc="best")
        if ax.name != "3d":
            ax.grid(True)
            for axis in (ax.xaxis, ax.yaxis):  # training time is in seconds
                if axis.get_label_text() == "train_time":
                    axis.set_label_text("train_time (s)")
            for t in study.best_trials:
                ax.annotate(
                    str(t.number), (t.values[0], t.values[1]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, color="#444444",
                )  # fmt: skip
            fig.set_layout_engine("constrained")
    return fig


def _restyle(name: str, axes: list[Any], study: Any) -> Figure:
    """An Optuna figure without its title (the report's caption says what it shows), at the
    page width, with whole-number trial ticks, laid out so nothing overlaps."""
    fig = axes[0].figure
    fig.suptitle("")
    for ax in axes:
        for loc in ("left", "center"):
            ax.set_title("", loc=loc)
        for c in ax.collections:
            if c.get_cmap().name in ("Blues", "Blues_r"):  # its lightest end is white: unseen
                c.set_cmap(LIGHT_BLUES if c.get_cmap().name == "Blues" else LIGHT_BLUES.reversed())
    trials = [t.number for t in study.trials]
    if name == "optimization_history.png":
        fig.set_size_inches(FULL_WIDTH, 3.0)
        axes[0].set_xlabel("trial")
        integer_axis(axes[0].xaxis, trials)
        axes[0].grid(True)
        handles, labels = axes[0].get_legend_handles_labels()
        labels = ["best so far" if text == "Best Value" else text for text in labels]
        axes[0].legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5))
    elif name == "param_importances.png":
        n = len(axes[0].get_yticks())
        fig.set_size_inches(FULL_WIDTH, 1.0 + 0.4 * n)
        axes[0].set_xlabel("importance (fANOVA)")
        axes[0].set_ylabel("")
        legend = axes[0].get_legend()
        if legend:
            legend.remove()  # one objective: the bars' label says nothing the caption does not
    elif name == "parallel_coordinate.png":  # its twin axes defeat a layout engine
        fig.set_size_inches(FULL_WIDTH, 3.4)
        return fig
    elif name == "slice.png":
        _slice_colorbar(fig, axes)
    fig.set_layout_engine("constrained")
    return fig


def _slice_colorbar(fig: Figure, axes: list[Any]) -> None:
    """Optuna's slice colorbar is made before any layout and overlaps the last panel once the
    figure is laid out; drawn again under the constrained layout it keeps its own column."""
    fig.set_size_inches(FULL_WIDTH, 3.0)
    label = axes[0].get_ylabel()
    for ax in axes:
        ax.grid(True)
        ax.set_ylabel("")
    axes[0].set_ylabel(label)
    old = [a for a in fig.axes if a not in axes]
    scatter = next((c for c in axes[-1].collections if c.get_array() is not None), None)
    for cax in old:
        cax.remove()
    fig.set_layout_engine("constrained")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes, label="trial", shrink=0.9)
        bar.set_ticks(MaxNLocator(integer=True, min_n_ticks=1))
