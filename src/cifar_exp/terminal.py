"""Output that fits the terminal, 80 columns and up, without cutting a number short.

A progress line is a label, a bar, counts and a clock, then pieces of lower priority (the
best value, a trial's params, its metrics): the bar shrinks first, then a piece takes its
shorter form, then it wraps onto an indented line below. A table keeps its most important
columns and names the ones it had to leave out. Rich only; no project imports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

BAR_MIN, BAR_MAX = 10, 30  # characters of a progress bar
INDENT = 4  # continuation lines of a wrapped progress line


@dataclass(frozen=True)
class Piece:
    """A part of a line that may move to the next line; `short` is tried before moving."""

    text: Text
    short: Text | None = None

    @classmethod
    def of(cls, text: str | Text, short: str | Text | None = None, style: str = "") -> Piece:
        def as_text(t: str | Text) -> Text:
            return t if isinstance(t, Text) else Text(t, style=style)

        return cls(as_text(text), as_text(short) if short is not None else None)

    def forms(self) -> list[Text]:
        return [self.text] if self.short is None else [self.text, self.short]


def _join(parts: Sequence[Text], sep: str = "  ") -> Text:
    return Text(sep).join(p for p in parts if p.cell_len)


def bar_width(width: int) -> int:
    """The width of every bar on a screen `width` columns wide, so that bars line up."""
    return max(BAR_MIN, min(BAR_MAX, width // 4))


def fit_line(
    head: Sequence[Text],
    tail: Sequence[Piece],
    width: int,
    bar: Callable[[int], Text] | None = None,
    bar_cells: int = BAR_MIN,
) -> list[Text]:
    """One logical line at `width` columns: `head` (label, counts, clock; always whole, with
    the bar `bar(bar_cells)` after the label while it fits), then `tail` in order, as many as
    fit on the first line; the rest flows onto indented lines. Where the tail does not fit
    whole, every piece takes its short form. Text is folded, never ellipsised, when a single
    part is wider than the terminal."""
    label, rest = (head[0], list(head[1:])) if head else (Text(), [])
    fixed = label.cell_len + sum(2 + p.cell_len for p in rest)
    if bar is not None and fixed + 2 + bar_cells > width:
        bar_cells = width - fixed - 2 if width - fixed - 2 >= BAR_MIN else 0
    used = fixed + (bar_cells + 2 if bar is not None and bar_cells else 0)
    for short in (False, True):
        forms = [(p.short if short and p.short else p.text) for p in tail]
        placed, room = 0, width - used
        for form in forms:
            if 2 + form.cell_len > room:
                break
            placed, room = placed + 1, room - 2 - form.cell_len
        if placed == len(forms):
            break
    line = [label]
    if bar is not None and bar_cells:
        line.append(bar(bar_cells))
    line += rest + forms[:placed]
    return _fold(_join(line), width) + _flow(forms[placed:], width)


def _flow(parts: Sequence[Text], width: int) -> list[Text]:
    """Parts on indented lines, as many whole parts per line as fit."""
    room = max(width - INDENT, 10)
    lines: list[list[Text]] = []
    for part in parts:
        current = lines[-1] if lines else None
        used = sum(t.cell_len + 2 for t in current) if current else 0
        if current and used + part.cell_len <= room:
            current.append(part)
        else:
            lines.append([part])
    return [Text(" " * INDENT) + f for line in lines for f in _fold(_join(line), room)]


def _fold(text: Text, width: int) -> list[Text]:
    if text.cell_len <= width:
        return [text]
    return list(text.wrap(Console(width=max(width, 1)), width, overflow="fold"))


# --------------------------------------------------------------------------- tables


@dataclass
class Column:
    """A table column: its header, its cells (already formatted), and its rank (0 first:
    kept longest when the terminal is narrow)."""

    header: str
    cells: list[str]
    rank: int = 0
    justify: str = "right"


def fit_table(console: Console, title: str, columns: list[Column], width: int = 0) -> Table:
    """A table of the columns that fit in `width` (default: the console's), chosen by rank
    and shown in their given order; a caption names those left out. A header may wrap at
    its underscores; a cell is never cut."""
    width = width or console.width
    order = sorted(range(len(columns)), key=lambda i: columns[i].rank)
    chosen: list[int] = []
    for i in order:  # by priority: a column never shows while a more important one does not
        trial = sorted([*chosen, i])
        if chosen and _measure(console, title, [columns[j] for j in trial]) > width:
            break
        chosen = trial
    left_out = [columns[i].header for i in range(len(columns)) if i not in chosen]
    table = _build(title, [columns[i] for i in chosen])
    if left_out:
        table.caption = f"not shown at {width} columns: {', '.join(left_out)}"
        table.caption_justify = "left"
    return table


def _header(name: str) -> str:
    # a long metric name wraps at its underscore: `val_` over `accuracy`
    return name.replace("_", "_\n", 1) if len(name) > 8 and "_" in name else name


def _build(title: str, columns: list[Column]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in columns:
        table.add_column(_header(c.header), justify=c.justify, no_wrap=True)  # type: ignore[arg-type]
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*row)
    return table


def _measure(console: Console, title: str, columns: list[Column]) -> int:
    table = _build(title, columns)
    return Measurement.get(console, console.options.update(width=10_000), table).maximum
