"""How a report looks: its tables as text with one number format per column and a dash
(never `nan`) for a missing value, figures and tables numbered with captions, and the
self-contained HTML page set like a paper's appendix (every figure inlined at the share of the
text width its size on paper gives, so figure text reads the same size everywhere)."""

from __future__ import annotations

import base64
import html
import math
import re
import struct
from pathlib import Path
from typing import Any

import pandas as pd

from cifar_exp import plots

DASH = "\u2013"  # an en dash: a value a trial does not have (it failed before, or never ran)

DPI = 200  # pixels per inch of the saved figures: sharp on screen and in print


# --------------------------------------------------------------------------- tables as text


def shown_table(df: pd.DataFrame, metric: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """The trial table as text, for a reader: the search metric first, one number format per
    column (4 decimals for metrics, as many as the column's smallest value needs for a
    hyperparameter), `mean ± half-width` where several seeds, units in the headers, and a
    dash, never `nan`, where a trial has no value. Returns headers, rows and which columns
    hold numbers (right-aligned)."""
    metrics = [
        metric,
        *(k for k in ("val_accuracy", "val_loss", "accuracy", "loss") if k != metric),
    ]
    several = "seeds" in df.columns
    rest = [c for c in df.columns if c not in {"trial", "state", "status", "duration_s", "seeds"}]
    rest = [c for c in rest if c not in [*metrics, "train_time"] and not c.endswith(" ±")]
    columns: list[tuple[str, list[str], bool]] = [
        ("trial", [str(v) for v in df["trial"]], True),
        ("status", list(df["status"]), False),
    ]
    for k in metrics:
        cells = [_fixed(v, 4) for v in df[k]]
        if several:
            cells = [
                c if _missing(h) else f"{c} ± {h:.4f}"
                for c, h in zip(cells, df[f"{k} ±"], strict=True)
            ]
        columns.append((f"{k} (mean ± 95 % CI)" if several else k, cells, True))
    if "train_time" in df.columns:  # an objective: training seconds, all seeds
        columns.append(("train_time (s)", [_fixed(v, 1) for v in df["train_time"]], True))
    if several:
        columns.append(("seeds", [_fixed(v, 0) for v in df["seeds"]], True))
    for k in rest:
        columns.append((k, _column(list(df[k])), True))
    seconds = [v for v in df["duration_s"] if not _missing(v)]
    scale, unit = (60, "min") if seconds and max(seconds) >= 600 else (1, "s")
    cells = [_fixed(v / scale if not _missing(v) else v, 1) for v in df["duration_s"]]
    columns.append((f"duration ({unit})", cells, True))
    numeric = [n and all(_is_number(c) for c in cells) for (_, cells, n) in columns]
    rows = [list(r) for r in zip(*(cells for _, cells, _ in columns), strict=True)]
    return [h for h, _, _ in columns], rows, numeric


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_number(text: str) -> bool:
    return text == DASH or bool(re.fullmatch(r"[-+]?[\d.,e+-]+( ± [\d.e+-]+)?", text))


def _fixed(v: Any, digits: int) -> str:
    return DASH if _missing(v) else f"{float(v):,.{digits}f}"


def _column(values: list[Any]) -> list[str]:
    """A hyperparameter column in one format: whole numbers as such, numbers spanning two
    decades or more in scientific notation, others with the decimals three significant
    digits of the smallest need; anything else as written."""
    numbers = [v for v in values if isinstance(v, int | float) and not _missing(v)]
    if not numbers or len(numbers) < sum(not _missing(v) for v in values):
        return [DASH if _missing(v) else str(v) for v in values]
    if all(float(v).is_integer() for v in numbers):
        return [DASH if _missing(v) else f"{int(v)}" for v in values]
    sizes = [abs(v) for v in numbers if v] or [1.0]
    if max(sizes) / min(sizes) >= 100 or min(sizes) < 1e-3:  # log-scaled: 1.23e-04
        return [DASH if _missing(v) else f"{v:.2e}" for v in values]
    digits = max(0, 2 - math.floor(math.log10(min(sizes))))
    return [_fixed(v, digits) for v in values]


def space_table(space: dict[str, dict[str, Any]]) -> str:
    """The distributions the trials were drawn from, one row per hyperparameter."""
    rows = []
    for key, spec in space.items():
        if spec.get("type") == "categorical":
            kind, values = "categorical", ", ".join(map(str, spec.get("choices", [])))
        else:
            scale = "log-uniform" if spec.get("log") else "uniform"
            kind = f"{spec.get('type', 'float')}, {scale}"
            values = f"{spec.get('low')} to {spec.get('high')}"
            values += f", step {spec['step']}" if spec.get("step") else ""
        rows.append([f"`{key}`", kind, values])
    return md_table(["parameter", "distribution", "values"], rows, [False] * 3)


def md_table(headers: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    """A GitHub-flavoured Markdown table, numeric columns right-aligned."""

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join("---:" if n else ":---" for n in numeric) + " |")
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Numbered:
    """Figures and tables numbered in the order the report shows them, each with a caption
    (Markdown: the image or table, then its caption in italics; HTML turns them into
    `<figure>`/`<figcaption>` and `<caption>`)."""

    def __init__(self, figures: dict[str, Path]) -> None:
        self.figures, self.n_figures, self.n_tables = figures, 0, 0

    def figure(self, name: str, caption: str) -> list[str]:
        if name not in self.figures:
            return []
        self.n_figures += 1
        n = self.n_figures
        return [f"![Figure {n}](figures/{name})", f"*Figure {n}: {caption}*", ""]

    def table(self, text: str, caption: str) -> list[str]:
        self.n_tables += 1
        return [f"*Table {self.n_tables}: {caption}*", "", text, ""]


def render_html(markdown_text: str, figures: dict[str, Path], title: str) -> str:
    """One self-contained HTML page set like a paper's appendix: the Markdown rendered, every
    figure inlined with its caption, each drawn at the share of the text width its size on
    paper gives (so figure text is the same size in every figure), tables with captions."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html"])

    def figure(match: re.Match) -> str:
        number, name, caption = match.group(1), match.group(2), match.group(3)
        data = figures[name].read_bytes() if name in figures else b""
        width = 100.0
        if data[:8] == b"\x89PNG\r\n\x1a\n":  # IHDR: width in pixels at bytes 16-20
            width = min(100.0, 100 * struct.unpack(">I", data[16:20])[0] / (plots.FULL_WIDTH * DPI))
        src = "data:image/png;base64," + base64.b64encode(data).decode()
        return (
            f'<figure id="figure-{number}"><img alt="Figure {number}" src="{src}" '
            f'style="width: {width:.0f}%"><figcaption><b>Figure {number}:</b> {caption}'
            "</figcaption></figure>"
        )

    body = re.sub(
        r'<p><img alt="Figure (\d+)" src="figures/([^"]+)" />\s*<em>Figure \d+: (.*?)</em></p>',
        figure,
        body,
        flags=re.S,
    )
    body = re.sub(
        r"<p><em>Table (\d+): (.*?)</em></p>\s*<table>",
        r'<table id="table-\1">\n<caption><b>Table \1:</b> \2</caption>',
        body,
        flags=re.S,
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
{body}
</body></html>
"""


CSS = """
body { font-family: "Latin Modern Roman", "Times New Roman", "Liberation Serif", "DejaVu Serif",
       serif; font-size: 17px; line-height: 1.5; color: #111; background: #fff;
       max-width: 50rem; margin: 2.5rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.2rem;
     border-bottom: 1px solid #bbb; }
p, li { text-align: left; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.82em; }
pre { background: #f7f7f7; border: 1px solid #e4e4e4; padding: 0.6rem 0.8rem;
      font-size: 0.85rem; white-space: pre-wrap; overflow-wrap: anywhere; }
pre code { font-size: 0.75rem; }
figure { margin: 1.6rem 0; text-align: center; break-inside: avoid; }
figure img { display: block; margin: 0 auto 0.4rem; height: auto; }
figcaption, caption { font-size: 0.9rem; text-align: left; line-height: 1.4; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums;
        border-top: 1.5px solid #111; border-bottom: 1.5px solid #111; break-inside: avoid;
        /* centred on the column, and free to grow past it on a wide screen */
        width: max-content; max-width: calc(100vw - 3rem); position: relative; left: 50%;
        transform: translateX(-50%); margin: 1.2rem 0; }
caption { caption-side: top; padding-bottom: 0.5rem; }
thead th { border-bottom: 1px solid #111; font-weight: 600; }
th, td { padding: 0.22rem 0.7rem; vertical-align: top; white-space: nowrap; }
td code { font-size: 0.9em; }
details { margin: 1rem 0; }
summary { cursor: pointer; }
@page { size: A4; margin: 18mm 16mm; }
@media print {
  body { font-size: 10.5pt; max-width: none; margin: 0; padding: 0; }
  h2 { break-after: avoid; }
  table { font-size: 8pt; width: auto; max-width: 100%; left: 0; transform: none;
          margin: 1.2rem auto; }
  th, td { white-space: normal; }
  pre { font-size: 7.5pt; }
}
"""
