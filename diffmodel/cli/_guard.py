r"""Keep warnings and floating-point errors off the terminal, and record them.

Inside :meth:`Watch.watching`, Python warnings (from CVXPY, SciPy, the
user's script, ...) are recorded instead of printed, and NumPy
floating-point errors (overflow, invalid operation, division by zero)
call a recorder instead of printing ``RuntimeWarning``\ s. The command then
decides: an overflow makes the result unreliable (an error), other
floating-point events are part of normal numerics (ignored), and other
warnings are summarized in one note.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ._common import clip, one_line

__all__ = ["Watch"]


class Watch:
    """Warnings and NumPy floating-point errors seen while watching.

    Attributes
    ----------
    warnings : list of str
        The message of each warning recorded, in order.
    overflows : int
        The number of floating-point overflows recorded.

    Examples
    --------
    >>> watch = Watch()
    >>> with watch.watching():
    ...     _ = np.float64(1e308) * 10
    >>> watch.overflows
    1
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.overflows = 0

    def _floating_point_error(self, kind: str, flag: int) -> None:
        """The NumPy error callback: count overflows, ignore the rest."""
        if "overflow" in kind:
            self.overflows += 1

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Record, instead of printing, the warnings and floating-point errors of a block.

        Yields
        ------
        None
            Nothing: the results are in :attr:`warnings` and :attr:`overflows`
            (also when the block raises).
        """
        with warnings.catch_warnings(record=True) as caught, \
                np.errstate(over="call", invalid="call", divide="call", under="ignore",
                            call=self._floating_point_error):
            warnings.simplefilter("default")
            try:
                yield
            finally:
                self.warnings += [one_line(str(w.message)) for w in caught]

    def note(self) -> str | None:
        """A one-line summary of the warnings silenced, or None if there were none.

        Returns
        -------
        str or None
            ``"1 warning silenced: <message>"`` or
            ``"3 warnings silenced; the first: <message>"``.
        """
        count = len(self.warnings)
        if not count:
            return None
        first = clip(self.warnings[0], 200)
        if count == 1:
            return f"1 warning silenced: {first}"
        return f"{count} warnings silenced; the first: {first}"
