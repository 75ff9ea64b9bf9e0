"""The report as one self-contained HTML page: inline CSS, plots as PNG data URIs.

Nothing is loaded from the network: no script, no stylesheet link, no
external image. Plots need matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import require
from .content import NOTES, Section, Table, sections
from .plots import draw, png

if TYPE_CHECKING:  # pragma: no cover
    from ..results import SensitivityReport

__all__ = ["report_html", "html_table", "section_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-style: italic; color: #555;
          padding-bottom: .3em; white-space: normal; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
         font-family: "DejaVu Sans Mono", monospace; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
ul.notes li { color: #7a4b00; }
"""


def html_table(table: Table) -> str:
    """A table as HTML, its caption in ``<caption>``; numeric cells ``class="num"``."""
    e = html.escape
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{e(table.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in table.headers)
               + "</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{e(c)}</td>' if right else f"<td>{e(c)}</td>"
            for c, right in zip(row, table.aligned())) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def section_html(sec: Section, figures: Iterable[tuple[str, str, bytes]]) -> str:
    """A section as HTML: its paragraphs (a list for the notes), tables, and
    figures given as (key, title, PNG bytes), embedded as data URIs."""
    e = html.escape
    body = [f"<section><h{sec.level}>{e(sec.title)}</h{sec.level}>"]
    if sec.title == NOTES:
        body.append('<ul class="notes">' + "".join(f"<li>{e(p)}</li>"
                                                   for p in sec.paragraphs) + "</ul>")
    else:
        body.extend(f"<p>{e(p)}</p>" for p in sec.paragraphs)
    body.extend(html_table(t) for t in sec.tables)
    for key, title, image in figures:
        data = base64.b64encode(image).decode("ascii")
        body.append(f'<figure data-plot="{e(key)}"><img alt="{e(title)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(title)}</figcaption></figure>")
    body.append("</section>")
    return "\n".join(body)


def _section(sec: Section, report: SensitivityReport) -> str:
    return section_html(sec, ((plot.key, plot.title, png(draw(plot, report)))
                              for plot in sec.plots))


def report_html(report: SensitivityReport) -> str:
    """The report as one HTML page.

    Parameters
    ----------
    report : SensitivityReport

    Returns
    -------
    str
        The page: every section's tables, and its plots embedded as PNG.

    Raises
    ------
    ImportError
        If matplotlib is missing (``pip install "diffmodel[report]"``).
    """
    require("matplotlib", "writing a sensitivity report as HTML")
    body = "\n".join(_section(sec, report) for sec in sections(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>diffmodel sensitivity report</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
