"""The report as Markdown: headings, paragraphs and pipe tables (no plots)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .content import NOTES, Section, Table, sections

if TYPE_CHECKING:  # pragma: no cover
    from ..results import SensitivityReport

__all__ = ["report_markdown", "md_cell", "md_table", "sections_markdown"]


def md_cell(text: str) -> str:
    """Escape Markdown's emphasis and table characters (f* would start italics).

    >>> md_cell("|∂f*/∂θ|")
    '\\\\|∂f\\\\*/∂θ\\\\|'
    """
    for ch in ("\\", "*", "_", "|"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def md_table(table: Table) -> str:
    """A pipe table, its caption above in italics; numeric columns right-aligned."""
    out = []
    if table.caption:
        out.append(f"*{md_cell(table.caption)}*\n")
    out.append("| " + " | ".join(md_cell(h) for h in table.headers) + " |")
    out.append("|" + "|".join("---:" if right else "---" for right in table.aligned()) + "|")
    out.extend("| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(out)


def report_markdown(report: SensitivityReport) -> str:
    """The report as Markdown.

    Parameters
    ----------
    report : SensitivityReport

    Returns
    -------
    str
        ``#`` headings by level, paragraphs (notes as a list) and pipe tables.
    """
    return sections_markdown(sections(report))


def sections_markdown(secs: Iterable[Section]) -> str:
    """Sections as Markdown: ``#`` headings by level, paragraphs (the notes as
    a list) and pipe tables. Every report's Markdown rendering."""
    parts = []
    for sec in secs:
        parts.append(f"{'#' * sec.level} {md_cell(sec.title)}")
        bullets = sec.title == NOTES
        parts.extend(f"- {md_cell(p)}" if bullets else md_cell(p) for p in sec.paragraphs)
        parts.extend(md_table(t) for t in sec.tables)
    return "\n\n".join(parts) + "\n"
