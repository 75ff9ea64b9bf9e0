"""The backend protocol and the closed vocabulary of solver statuses."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from ..kkt import KKTFactorization

__all__ = ["Backend", "RawSolution", "STATUS_OPTIMAL", "STATUS_INFEASIBLE",
           "STATUS_UNBOUNDED", "STATUS_NONCONVEX", "STATUS_ERROR"]

STATUS_OPTIMAL = "optimal"
STATUS_INFEASIBLE = "infeasible"
STATUS_UNBOUNDED = "unbounded"
STATUS_NONCONVEX = "nonconvex"
STATUS_ERROR = "solver_error"


class RawSolution(NamedTuple):
    """What a backend returns: the stacked primal-dual point z = (x, ν) and diagnostics.

    ``factored`` is True when ``fact`` holds a factorization of K at this
    solution's data, ready for derivatives. (A NamedTuple: this is on the
    hot path of every solve.)
    """

    z: NDArray[np.float64]
    iterations: int
    residual: float
    factored: bool


class Backend(Protocol):
    """Solves ``K z = -f`` for the numeric data of one parameter value.

    Parameters of :meth:`solve`
    ---------------------------
    kdata : ndarray
        Data of the upper-triangular KKT pattern (see :class:`~diffmodel.kkt.KKTMaps`).
    f : ndarray
        ``(q, -b)``.
    fact : KKTFactorization
        The model's factorization object; a backend may (re)factor it.
    k_changed : bool
        False when K is known to equal the last factored K.

    Raises
    ------
    SolverError
        With status ``infeasible``, ``unbounded``, ``nonconvex`` or
        ``solver_error``.
    """

    name: str

    def solve(self, kdata: NDArray[np.float64], f: NDArray[np.float64],
              fact: KKTFactorization, k_changed: bool) -> RawSolution: ...
