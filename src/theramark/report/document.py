"""The report document: sections made of text, tables and figures, written as one HTML file.

A stage contributes to the report by building :class:`Section` objects from its result tables (in
``theramark.report.sections.<stage>``); :class:`Report` orders them and writes a single
self-contained ``report.html`` with every figure embedded as a base64 PNG, so the file can be mailed
or archived alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from theramark import __version__
from theramark._io import write_text


@dataclass
class Text:
    """A paragraph. ``body`` is plain text unless ``raw_html`` is set (then it is inserted as is)."""

    body: str
    raw_html: bool = False

    def to_html(self) -> str:
        if self.raw_html:
            return self.body
        paragraphs = [p.strip() for p in self.body.split("\n\n") if p.strip()]
        return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


@dataclass
class Table:
    """A DataFrame shown as an HTML table (floats rounded to ``digits``).

    The first ``visible_rows`` rows are shown; the rest fold under a "show all" toggle (at most
    ``max_rows`` in the page). ``source`` (a path relative to the report) links the TSV the table
    came from, where every row is.
    """

    data: pd.DataFrame
    caption: str = ""
    digits: int = 3
    max_rows: int = 200
    index: bool = False
    source: str = ""
    visible_rows: int = 12

    def _number(self, value: float) -> str:
        if value != value:  # NaN
            return "–"
        return (f"{value:.{self.digits}g}" if abs(value) < 1e-3 and value != 0
                else f"{value:.{self.digits}f}")

    def _html(self, frame: pd.DataFrame) -> str:
        return frame.to_html(index=self.index, float_format=self._number, na_rep="–", border=0,
                             classes="data", escape=True)

    def to_html(self) -> str:
        frame = self.data
        if len(frame) == 1 and frame.shape[1] > 8 and not self.index:
            # one wide row reads better, and fits the page, as a column of name/value pairs
            values = [self._number(v) if isinstance(v, float) else v for v in frame.iloc[0]]
            frame = pd.DataFrame({"": frame.columns.astype(str), "value": values})
        link = (f" <a class='tsv' href='{html.escape(self.source)}'>full table (TSV)</a>"
                if self.source else "")
        cap = (f"<figcaption>{html.escape(self.caption)}{link}</figcaption>"
               if self.caption or link else "")
        shown = frame.head(self.max_rows)
        if len(shown) <= self.visible_rows + 3:
            body = f"<div class='scroll'>{self._html(shown)}</div>"
        else:
            body = (f"<div class='scroll'>{self._html(shown.head(self.visible_rows))}</div>"
                    f"<details><summary>show {len(shown) - self.visible_rows} more rows"
                    + (f" of {len(frame)}" if len(frame) > len(shown) else "")
                    + f"</summary><div class='scroll'>{self._html(shown.iloc[self.visible_rows:])}"
                    "</div></details>")
        if len(frame) > len(shown):
            where = " (every row is in the TSV)" if self.source else ""
            body += f"<p class='note'>Showing {len(shown)} of {len(frame)} rows{where}.</p>"
        return f"<figure class='table'>{cap}{body}</figure>"


@dataclass
class Figure:
    """A matplotlib figure, embedded as PNG. The figure is closed once rendered."""

    figure: object
    caption: str = ""
    dpi: int = 110
    _png: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Render at once and close the figure: a report holds dozens of figures and open
        # matplotlib figures keep their full canvases in memory.
        self.png()

    def png(self) -> bytes:
        if self._png is None:
            import matplotlib.pyplot as plt

            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight")
            plt.close(self.figure)
            self._png = buffer.getvalue()
        return self._png

    def to_html(self) -> str:
        data = base64.b64encode(self.png()).decode("ascii")
        cap = f"<figcaption>{html.escape(self.caption)}</figcaption>" if self.caption else ""
        alt = html.escape(self.caption)
        return f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'/>{cap}</figure>"


Block = Text | Table | Figure


@dataclass
class Section:
    """One report section.

    Parameters
    ----------
    id : str
        Anchor name (letters, digits, hyphens), unique in the report.
    title : str
        Heading shown to the reader.
    blocks : list of Text, Table or Figure
        Content in reading order.
    order : int
        Position in the report; lower comes first (summary 0, QC 10, scales 20, imaging 30,
        group statistics 40, prediction 50, psychosocial 60, methods 90).
    """

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    order: int = 50

    def add(self, block: Block) -> Section:
        self.blocks.append(block)
        return self

    def to_html(self) -> str:
        inner = "".join(block.to_html() for block in self.blocks)
        return f"<section id='{html.escape(self.id)}'><h2>{html.escape(self.title)}</h2>{inner}</section>"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;background:#fafbfc}
header{background:#23395d;color:#fff;padding:1.2em 2em}header h1{margin:0;font-size:1.6em}
header p{margin:.3em 0 0;opacity:.85}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde;padding:.4em 2em;z-index:2;
line-height:1.7}
nav a{margin-right:1.2em;color:#23395d;text-decoration:none;font-size:.92em;white-space:nowrap;
display:inline-block}
main{max-width:1100px;margin:auto;padding:1em 2em 4em;box-sizing:border-box}
section{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:1em 1.5em;margin:1.2em 0;
min-width:0;overflow-wrap:break-word}
section#summary{border-left:6px solid #23395d}section#summary li{margin:.3em 0}
ul.detail{font-size:.88em;color:#333;margin:.2em 0}ul.detail li{margin:.1em 0}
details summary{cursor:pointer;color:#23395d;font-size:.85em;margin:.3em 0}
a.tsv{font-size:.85em;margin-left:.6em}
h2{color:#23395d;border-bottom:2px solid #e3e6ea;padding-bottom:.3em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.9em;color:#555;margin:.3em 0}
table.data{border-collapse:collapse;font-size:.85em}
table.data th,table.data td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.data th{background:#f2f4f7}
.scroll{overflow-x:auto;max-width:100%}.note{font-size:.85em;color:#777}
table.data td{max-width:32em}table.data th{overflow-wrap:normal}
table.data td+td{white-space:nowrap}table.data td:first-child{overflow-wrap:anywhere}
footer{color:#777;font-size:.8em;text-align:center;padding:2em}
"""


class Report:
    """Collects sections and writes one self-contained HTML file.

    Parameters
    ----------
    title : str
        Title at the top of the page.
    subtitle : str, optional
        One line under the title (the dataset, for instance).
    """

    def __init__(self, title: str = "theramark report", subtitle: str = "", generated: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.generated = generated
        self.sections: list[Section] = []

    def add(self, *sections: Section) -> Report:
        """Add sections; a section whose ``id`` is already present replaces the old one."""
        for section in sections:
            self.sections = [s for s in self.sections if s.id != section.id]
            self.sections.append(section)
        return self

    def to_html(self) -> str:
        ordered = sorted(self.sections, key=lambda s: s.order)
        nav = "".join(f"<a href='#{html.escape(s.id)}'>{html.escape(s.title)}</a>" for s in ordered)
        stamp = self.generated or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{''.join(s.to_html() for s in ordered)}</main>"
            f"<footer>Generated by theramark {__version__} on {stamp}.</footer></body></html>"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report atomically and return its path."""
        return write_text(path, self.to_html())
