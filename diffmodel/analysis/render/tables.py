"""The building blocks of a report's content: sections, tables, plots, cells.

:class:`Section` holds a title, paragraphs, :class:`Table` objects (headers,
rows of formatted cells, a caption) and :class:`Plot` objects (what to draw,
not a drawing); the helpers format numbers and thresholds and order the rows
of ranked tables, where numbers that count as zero are never ranked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from .._common import FloatArray, IntArray, top_indices

if TYPE_CHECKING:  # pragma: no cover
    from ..results import BlockSensitivity
    from ..whatif import Sweep

__all__ = ["NOTES", "Table", "Plot", "Section", "num", "tol", "largest_first",
           "nonzero_first", "ranked_caption", "floor_text", "slug"]

#: Title of the notes section (rendered as a list of bullets).
NOTES = "Notes"


@dataclass
class Table:
    """A table: headers, rows of formatted cells, caption, numeric columns."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: Sequence[bool] = ()

    def aligned(self) -> list[bool]:
        """Whether each column is numeric (right-aligned)."""
        return list(self.numeric) + [False] * (len(self.headers) - len(self.numeric))


@dataclass
class Plot:
    """A plot to draw: ``key`` names its file (``<key>.png``) and HTML figure."""

    key: str
    title: str
    kind: Literal["tornado", "heatmap", "ranges", "sweep"]
    block: BlockSensitivity | None = None
    sweep: Sweep | None = None


@dataclass
class Section:
    """A titled part of the report; ``level`` 1 is the title, 3 a block's part."""

    title: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


def num(value: float | None) -> str:
    """A number in six significant digits; "n/a" for None or NaN, "0" for ±0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "0" if value == 0 else f"{value:.6g}"


def tol(value: float) -> str:
    """A threshold, in two significant digits."""
    return "0" if value == 0 else f"{value:.2g}"


def largest_first(values: FloatArray, k: int) -> IntArray:
    """Indices of the ``k`` entries of largest magnitude, largest first."""
    return top_indices(np.abs(values), k)


def nonzero_first(values: FloatArray, k: int, rest: FloatArray | None = None
                  ) -> tuple[list[int], int]:
    """The rows of a table ranked by magnitude: the nonzero entries, largest
    first (at most ``k``), then, while there is room, the entries that are 0
    (never ranked: in the order of ``rest``, or by position). Returns the
    indices and the number of nonzero entries."""
    mags = np.abs(values)
    nonzero = np.flatnonzero(mags > 0)
    ranked = nonzero[largest_first(mags[nonzero], k)].tolist()
    zeros = np.flatnonzero(~(mags > 0))
    if rest is not None:
        zeros = zeros[np.argsort(rest[zeros], kind="stable")]
    return ranked + zeros[: k - len(ranked)].tolist(), int(nonzero.shape[0])


def _singular(what: str) -> str:
    return what[:-3] + "y" if what.endswith("ies") else what[:-1]


def ranked_caption(total: int, nonzero: int, shown: int, what: str, by: str,
                   then: str = "") -> str:
    """What a table ranked by :func:`nonzero_first` shows, in words (``what`` plural)."""
    zeros = total - nonzero
    are = "is" if zeros == 1 else "are"
    if nonzero == 0:
        return f"the {_singular(what)} is 0" if total == 1 else f"all {total} {what} are 0"
    if nonzero == total:
        return (f"all {total} {what}" if shown == total else
                f"the {shown} largest of {total} {what} by {by}")
    if shown < nonzero:
        return f"the {shown} largest of {total} {what} by {by} ({zeros} {are} 0)"
    head = f"the {nonzero} nonzero of {total} {what}, by {by}"
    rest = shown - nonzero
    if not rest:
        return f"{head} ({zeros} {are} 0)"
    head += f", then {rest} that {'is' if rest == 1 else 'are'} 0"
    return head + (f" ({then})" if then else "")


def slug(name: str) -> str:
    """``name`` made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def floor_text(symbol: str, threshold: float) -> str:
    """The threshold of a group, in words: "|ν| ≤ 2.8e-08 counts as 0"."""
    if threshold == 0:
        return "exact (threshold 0)"
    return f"{symbol} ≤ {tol(threshold)} counts as 0"
