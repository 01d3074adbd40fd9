"""Report documents: sections of tables and figures rendered as Markdown, self-contained HTML (figures
embedded as base64 data URIs, so the file opens from disk) and one CSV per table."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

VERDICT_CLASSES = {"reproduced": "ok", "not reproduced": "bad", "inconclusive at this scale": "unsure"}


@dataclass
class Table:
    """A report table: its numbers (written as CSV) and, optionally, a formatted view."""

    name: str  # CSV file stem
    caption: str
    data: pl.DataFrame  # numbers, written as CSV
    display: pl.DataFrame | None = None  # formatted for reading (default: data)

    @property
    def shown(self) -> pl.DataFrame:
        return self.display if self.display is not None else self.data


@dataclass
class Figure:
    """A report figure: a PNG and its caption."""

    caption: str
    png: Path


@dataclass
class Section:
    """A report section: title, claim, text, tables and figures."""

    key: str
    title: str
    claim: str = ""
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


# -----------------------------------------------------------------------------
# number formatting


def fmt(x: float | None, digits: int = 3, sign: bool = False) -> str:
    """A number to `digits` significant digits ('n/a' for none or NaN), signed when `sign`."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def fmt_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3, sign: bool = False) -> str:
    """'0.512 [0.490, 0.531]'; no interval when it is missing or degenerate (a point, or unbounded on both
    sides, as a t-interval of one pair is)."""
    point = fmt(mean, digits, sign)
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or lo == hi \
            or (math.isinf(lo) and math.isinf(hi)):
        return point
    return f"{point} [{fmt(lo, digits, sign)}, {fmt(hi, digits, sign)}]"


# -----------------------------------------------------------------------------
# Markdown


def _cell(value: object) -> str:
    if isinstance(value, float):
        return fmt(value, 4)
    return "" if value is None else str(value)


def markdown_table(df: pl.DataFrame) -> str:
    """The frame as a Markdown table."""
    if df.is_empty():
        return "_(no rows)_"
    rows = [[_cell(v).replace("|", "\\|").replace("\n", " ") for v in r] for r in df.iter_rows()]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render_markdown(title: str, preamble: list[str], sections: list[Section], out_dir: Path) -> str:
    """The report as Markdown: title, preamble, then each section's claim, text, tables and figures (figures
    linked relative to `out_dir`)."""
    parts = [f"# {title}", *preamble]
    for s in sections:
        parts.append(f"## {s.title}")
        if s.claim:
            parts.append(f"> **Claim.** {s.claim}")
        parts += s.text
        for t in s.tables:
            parts += [f"**{t.caption}** (`tables/{t.name}.csv`)", markdown_table(t.shown)]
        for f in s.figures:
            rel = f.png.relative_to(out_dir).as_posix()
            parts.append(f"![{f.caption}]({rel})  \n*{f.caption}* ([SVG]({Path(rel).with_suffix('.svg').as_posix()}))")
    return "\n\n".join(parts) + "\n"


# -----------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
blockquote { background: #f4f6fa; border-left: 4px solid #6a8caf; margin: 1em 0; padding: .5em 1em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
figure { margin: 1em 0 1.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #444; }
.ok { background: #d8f3dc; } .bad { background: #fbd5d5; } .unsure { background: #fff3c4; }
.muted { color: #666; font-size: 13px; }
"""


def _html_cell(value: object) -> str:
    text = _cell(value)
    cls = VERDICT_CLASSES.get(text, "unsure" if text.startswith("inconclusive") else None)
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def html_table(df: pl.DataFrame, caption: str) -> str:
    """The frame as an HTML table under `caption`."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(_html_cell(v) for v in r) + "</tr>" for r in df.iter_rows())
    if df.is_empty():
        body = f'<tr><td colspan="{max(1, len(df.columns))}" class="muted">(no rows)</td></tr>'
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _inline(text: str) -> str:
    """Report text as HTML: `code` spans kept, everything else escaped."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(title: str, preamble: list[str], sections: list[Section]) -> str:
    """The report's body as HTML, figures inlined as data URIs."""
    parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{_inline(p)}</p>" for p in preamble)]
    for s in sections:
        parts.append(f'<h2 id="{html.escape(s.key)}">{_inline(s.title)}</h2>')
        if s.claim:
            parts.append(f"<blockquote><b>Claim.</b> {html.escape(s.claim)}</blockquote>")
        parts += [f"<p>{_inline(p)}</p>" for p in s.text]
        parts += [html_table(t.shown, t.caption) for t in s.tables]
        parts += [f'<figure><img alt="{html.escape(f.caption)}" src="{_data_uri(f.png)}">'
                  f"<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in s.figures]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_tables(sections: list[Section], table_dir: Path) -> list[Path]:
    """Write every section's tables as CSV under `table_dir`; the paths written."""
    table_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sections:
        for t in s.tables:
            path = table_dir / f"{t.name}.csv"
            t.data.write_csv(path)
            paths.append(path)
    return paths
