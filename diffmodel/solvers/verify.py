"""Accepting a solution, or explaining why there is none.

A point is accepted as optimal only on evidence that holds in the user's
units: the componentwise backward error of its KKT system (see
:mod:`diffmodel.linalg.accuracy`) and the estimated forward error that
follows from the condition of the equilibrated KKT matrix. Every decision is
taken on the equilibrated system, so none depends on the units of the data:

- *nonconvex*: the inertia of K̂ has more negative eigenvalues than there
  are constraint rows (P has negative curvature on the feasible directions);
- *singular*: cond(K̂) beyond :data:`~diffmodel.tolerances.SINGULAR_COND`.
  If the system is still consistent (the refined residual vanishes) the
  point is optimal but not unique. Otherwise a null vector (d, w) of K
  certifies **infeasibility** (Mᵀw = 0 on the rows, cᵀw ≠ 0) or
  **unboundedness** (P d = 0, M d = 0, qᵀd ≠ 0), each verified entry by
  entry on the original data;
- *inaccurate*: otherwise, when the forward error estimate exceeds
  :data:`~diffmodel.tolerances.ACCURACY_TOL`.
"""

from __future__ import annotations

import numpy as np

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, Layout, ProblemData
from ..errors import SolverError
from ..linalg import Factorization
from ..tolerances import ACCURACY_TOL, BACKWARD_TOL, CERTIFICATE_TOL
from .base import (
    STATUS_INACCURATE,
    STATUS_INFEASIBLE,
    STATUS_NONCONVEX,
    STATUS_UNBOUNDED,
)

__all__ = ["check_convex", "accept", "describe_rows", "describe_direction", "unbounded_error"]


#: A certificate's right-hand-side (or objective) product must be at least
#: this fraction of the magnitude of its terms: not a cancellation.
_SIGNIFICANT = 1e-6


def check_convex(fact: Factorization) -> None:
    """Raise ``nonconvex`` if the inertia of K̂ shows negative curvature."""
    if fact.inertia is not None and fact.inertia[1] > fact.rows:
        pos, neg = fact.inertia
        raise SolverError(
            f"the objective is not convex on the feasible set for these parameter values: "
            f"the KKT matrix has {neg} negative eigenvalues where a convex QP has "
            f"{fact.rows} (P has a direction of negative curvature in the null space of "
            "the constraints)", STATUS_NONCONVEX)


def accept(problem: CompiledProblem, data: ProblemData, fact: Factorization, rows: IntArray,
           omega: float, accuracy: float) -> tuple[float, bool]:
    """Accept a refined KKT solve with backward error ``omega`` and estimated
    forward error ``accuracy``, or raise.

    Returns
    -------
    accuracy : float
        Estimated relative forward error (for a non-unique point: ``omega``).
    unique : bool
        False when K is singular but the system is consistent.

    Raises
    ------
    SolverError
        ``infeasible``, ``unbounded`` or ``inaccurate`` (see the module doc).
    """
    if not fact.singular:
        if omega <= BACKWARD_TOL and accuracy <= ACCURACY_TOL:
            return accuracy, True
        raise SolverError(
            f"no accurate solution: the estimated relative error of the solution is "
            f"{accuracy:.1e} (componentwise backward error {omega:.1e}, condition number "
            f"of the equilibrated KKT matrix {fact.cond:.1e}); the problem is too "
            "ill-conditioned for double precision: look for nearly dependent constraints "
            "or a nearly flat objective", STATUS_INACCURATE)
    if omega <= BACKWARD_TOL:
        return omega, False
    raise _certificate(problem, data, fact, rows)


def _ratio(residual: FloatArray, magnitude: FloatArray) -> float:
    """max |residual| / magnitude entry by entry, ignoring entries with no terms."""
    live = magnitude > 0
    if not live.any():
        return 0.0
    return float(np.max(np.abs(residual[live]) / magnitude[live], initial=0.0))


def _certificate(problem: CompiledProblem, data: ProblemData, fact: Factorization,
                 rows: IntArray) -> SolverError:
    """Infeasibility or unboundedness from a null vector, checked on the data."""
    n = problem.n
    M = problem.M_matrix(data)[rows]
    M_abs = abs(M)
    P = problem.P_matrix(data)
    c = data.c[rows]
    for e in fact.null_vectors().T:
        d, w = e[:n], e[n:]
        if np.any(w):
            aw = np.abs(w)
            if (_ratio(M.T @ w, M_abs.T @ aw) <= CERTIFICATE_TOL ** 0.5
                    and abs(float(c @ w)) > _SIGNIFICANT * float(np.abs(c) @ aw)):
                return SolverError(
                    "the constraints are inconsistent (infeasible): a combination of "
                    f"{describe_rows(problem, rows, w)} cancels on the left-hand side but "
                    "not on the right-hand side", STATUS_INFEASIBLE)
        if np.any(d):
            ad = np.abs(d)
            flat = (_ratio(P @ d, abs(P) @ ad) <= CERTIFICATE_TOL ** 0.5
                    and _ratio(M @ d, M_abs @ ad) <= CERTIFICATE_TOL ** 0.5)
            if flat and abs(float(data.q @ d)) > _SIGNIFICANT * float(np.abs(data.q) @ ad):
                return unbounded_error(problem, d)
    return SolverError(
        "the KKT system is singular and inconsistent, and no certificate of "
        "infeasibility or unboundedness could be verified on the data: the problem is "
        "too ill-conditioned to decide", STATUS_INACCURATE)


def describe_rows(problem: CompiledProblem, rows: IntArray, w: FloatArray,
                  limit: int = 4) -> str:
    """Name the constraints (and entries) that carry the weight of a row vector."""
    layout = problem.layout
    weights = np.abs(w)
    top = float(weights.max(initial=0.0))
    if top == 0:
        return "the constraints"
    parts: list[str] = []
    for k in np.flatnonzero(weights >= 1e-3 * top)[np.argsort(-weights[weights >= 1e-3 * top])]:
        row = int(rows[k])
        parts.append(_row_name(layout, row))
        if len(parts) == limit:
            break
    names = list(dict.fromkeys(parts))
    return ("constraint rows " if len(names) > 1 else "constraint row ") + ", ".join(names)


def describe_direction(problem: CompiledProblem, d: FloatArray, limit: int = 4) -> str:
    """Name the variable entries along which a direction of unboundedness moves."""
    layout = problem.layout
    weights = np.abs(d)
    top = float(weights.max(initial=0.0))
    parts: list[str] = []
    for j in np.flatnonzero(weights >= 1e-3 * top)[np.argsort(-weights[weights >= 1e-3 * top])]:
        for name, block in layout.variables.items():
            if block.offset <= j < block.stop:
                if block.size == 1:
                    parts.append(name)
                else:
                    index = np.unravel_index(int(j) - block.offset, block.shape, order="F")
                    parts.append(f"{name}[{', '.join(str(int(i)) for i in index)}]")
                break
        if len(parts) == limit:
            break
    return ", ".join(parts) if parts else "auxiliary variables"


def unbounded_error(problem: CompiledProblem, d: FloatArray) -> SolverError:
    """The error of a verified direction of unboundedness d (the model's sense is
    restored by the model: "below" becomes "above" for a Maximize)."""
    return SolverError(
        f"the problem is unbounded below: moving {describe_direction(problem, d)} along a "
        "feasible direction keeps the quadratic term flat and the linear term decreases "
        "without bound; add a bound or a cost on these variables", STATUS_UNBOUNDED)


def _row_name(layout: Layout, row: int) -> str:
    for name, block in layout.constraints.items():
        start, stop = layout.constraint_rows(name)
        if start <= row < stop:
            if block.size == 1:
                return f"'{name}'"
            index = np.unravel_index(row - start, block.shape, order="F")
            return f"'{name}'[{', '.join(str(int(i)) for i in index)}]"
    return "(an internal row)"
