"""Plain-text renderings for a terminal: ``str(report)`` and ``str(sweep)``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .content import NOTES, Section, Table, range_table, sections, sweep_table

if TYPE_CHECKING:  # pragma: no cover
    from ..ranging import ParameterRange
    from ..results import SensitivityReport
    from ..whatif import Sweep

__all__ = ["report_text", "sweep_text", "range_text", "text_table", "sections_text"]

_UNDERLINE = {1: "=", 2: "-", 3: "·"}


def text_table(table: Table) -> str:
    """A table in aligned columns (numbers right-aligned), its caption above.

    Parameters
    ----------
    table : Table

    Returns
    -------
    str
    """
    cols = list(zip(table.headers, *table.rows)) if table.rows else [(h,) for h in table.headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    numeric = table.aligned()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if right else c.ljust(w)
                         for c, w, right in zip(cells, widths, numeric)).rstrip()

    out = [table.caption] if table.caption else []
    out.append(line(table.headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in table.rows)
    return "\n".join(out)


def report_text(report: SensitivityReport) -> str:
    """The report as plain text for a terminal.

    Parameters
    ----------
    report : SensitivityReport

    Returns
    -------
    str
        Underlined titles, paragraphs and aligned tables.
    """
    return sections_text(sections(report))


def sections_text(secs: Iterable[Section]) -> str:
    """Sections as plain text: underlined titles, paragraphs (the notes as a
    list) and aligned tables. Every report's text rendering."""
    parts = []
    for sec in secs:
        parts.append(f"{sec.title}\n{_UNDERLINE[sec.level] * len(sec.title)}")
        bullets = sec.title == NOTES
        parts.extend(f"- {p}" if bullets else p for p in sec.paragraphs)
        parts.extend(text_table(t) for t in sec.tables)
    return "\n\n".join(parts) + "\n"


def sweep_text(sw: Sweep) -> str:
    """A sweep as a table of its steps, then its failed steps.

    Parameters
    ----------
    sw : Sweep

    Returns
    -------
    str
    """
    text = text_table(sweep_table(sw))
    if sw.failures:
        text += "\n" + "\n".join(f"step {i} failed: {msg}" for i, msg in sw.failures)
    return text


def range_text(rng: ParameterRange) -> str:
    """The ranges of one parameter's entries as a table (every entry).

    Parameters
    ----------
    rng : ParameterRange

    Returns
    -------
    str
    """
    return text_table(range_table(rng))
