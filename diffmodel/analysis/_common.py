"""What the analysis modules share: access to a solution's internals, the
numeric helpers of elasticities and rankings, and the progress bar.

This is the one place where :mod:`diffmodel.analysis` reaches into a
:class:`~diffmodel.solution.Solution` (its point, packer and engine).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import numpy as np
from tqdm import tqdm

from .._packing import Packer
from .._typing import BoolArray, FloatArray, IntArray
from ..engine import Engine
from ..errors import ModelError
from ..point import Point

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    from ..solution import Solution

__all__ = [
    "FloatArray", "IntArray", "BoolArray", "ZERO_TOL", "PROGRESS_DELAY", "solution_parts",
    "solution_engine", "elasticity", "top_indices", "check_progress", "progress_bar",
]

#: An output (or f*) whose magnitude is at most this times max(1, the largest
#: magnitude of its block) is treated as zero: its elasticities are undefined (NaN).
ZERO_TOL = 1e-12
#: Seconds of work after which an automatic progress bar (``progress=None``) appears.
PROGRESS_DELAY = 1.0


def solution_parts(solution: object, call: str) -> tuple[Point, Packer]:
    """The verified point and the packer of a solution.

    Parameters
    ----------
    solution : Solution
        A solution returned by :meth:`Model.solve`.
    call : str
        The public call, for error messages (``"sensitivity()"``).

    Returns
    -------
    (Point, Packer)

    Raises
    ------
    ModelError
        If ``solution`` is not a :class:`~diffmodel.Solution` (a model is
        named as such, with what to pass instead).
    TypeError
        If the solution was not produced by :meth:`Model.solve`.
    """
    parts = getattr(solution, "_parts", None)
    if not callable(parts) or not hasattr(solution, "_resolver"):
        kind = type(solution).__name__
        hint = (f": pass model.solution, or call model.{call[:-2]}(...)"
                if kind == "Model" else "")
        raise ModelError(f"{call}: expected a diffmodel Solution (from model.solve()), "
                         f"got {kind}{hint}")
    point, packer = parts()
    return point, packer


def solution_engine(solution: Solution) -> Engine:
    """The engine that solved ``solution``: re-solves go through it, touching no
    CVXPY object and no model state."""
    return solution._resolver()


def elasticity(derivative: FloatArray, theta: FloatArray, output: FloatArray,
               scale: float) -> FloatArray:
    """derivative · θ / output, entrywise (broadcast).

    Parameters
    ----------
    derivative, theta, output : ndarray
        Broadcastable arrays: ∂output/∂θ, the parameter entries and the outputs.
    scale : float
        The largest magnitude of the output's block: an output entry with
        magnitude at most ``ZERO_TOL · max(1, scale)`` counts as zero.

    Returns
    -------
    ndarray
        The elasticities; NaN where the output is zero, 0 where θ is 0.
    """
    zero = np.abs(output) <= ZERO_TOL * max(1.0, scale)
    safe = np.where(zero, 1.0, output)
    return np.asarray(np.where(zero, np.nan, derivative * theta / safe), dtype=np.float64)


def top_indices(scores: FloatArray, k: int) -> IntArray:
    """Indices of the ``k`` largest scores, largest first; ties go to the lower index.

    Parameters
    ----------
    scores : ndarray of shape (size,)
    k : int

    Returns
    -------
    ndarray of int
        At most ``k`` indices into ``scores``.
    """
    size = scores.shape[0]
    if size > k:
        kth = np.partition(scores, size - k)[size - k]
        above = np.flatnonzero(scores > kth)
        idx = np.concatenate([above, np.flatnonzero(scores == kth)[: k - above.shape[0]]])
    else:
        idx = np.arange(size)
    return np.asarray(idx[np.lexsort((idx, -scores[idx]))], dtype=np.int64)


def check_progress(progress: object, call: str) -> bool | None:
    """Validate a ``progress=`` option (None, True or False).

    Raises
    ------
    ModelError
        For anything else.
    """
    if progress is not None and not isinstance(progress, bool):
        raise ModelError(f"{call}: progress must be None, True or False, got {progress!r}")
    return progress


class NullBar:
    """A progress bar that shows nothing (tqdm's ``update`` and ``close``)."""

    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass


_NULL_BAR = NullBar()


def progress_bar(total: int, desc: str, progress: bool | None) -> tqdm[NoReturn] | NullBar:
    """A tqdm progress bar on stderr.

    Parameters
    ----------
    total : int
        Units of work (passes or solves).
    desc : str
        What is being done, shown before the bar.
    progress : bool or None
        None: shown only when the work takes more than :data:`PROGRESS_DELAY`
        seconds and stderr is a terminal; True: always; False: never.

    Returns
    -------
    tqdm or NullBar
        Call ``update(n)`` as work is done and ``close()`` at the end. A bar
        that can never show (``progress=False``, no work, or None with stderr
        not a terminal) is a :class:`NullBar`: a tqdm object costs tens of
        microseconds to make, more than a small solve.
    """
    if progress is False or total <= 0 or (progress is None and not _is_terminal()):
        return _NULL_BAR
    return tqdm(total=total, desc=desc, file=sys.stderr,
                disable=None if progress is None else False,
                delay=PROGRESS_DELAY if progress is None else 0.0, leave=True)


def _is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
