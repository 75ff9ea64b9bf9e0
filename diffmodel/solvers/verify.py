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
  may certify **infeasibility** (Mᵀw = 0, w ≥ 0 on inequality rows,
  cᵀw < 0: :func:`infeasibility`) or **unboundedness** (P d = 0, A d = 0,
  G d ≤ 0, qᵀd < 0: :func:`unboundedness`), each verified entry by entry on
  the original data, as OSQP's certificates are;
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

__all__ = ["Magnitudes", "accept", "certificate", "check_convex", "describe_direction",
           "describe_rows", "infeasibility", "unbounded_error", "unboundedness"]



def check_convex(fact: Factorization) -> None:
    """Raise ``nonconvex`` if the inertia of K̂ shows negative curvature."""
    if fact.inertia is not None and fact.inertia[1] > fact.rows:
        neg = fact.inertia[1]
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
    raise certificate(problem, data, fact, rows)


def certificate(problem: CompiledProblem, data: ProblemData, fact: Factorization,
                 rows: IntArray) -> SolverError:
    """The error of a singular, inconsistent KKT system over ``rows``: infeasible or
    unbounded when a null vector of K gives a certificate that holds on the data,
    otherwise inaccurate."""
    n = problem.n
    mags = Magnitudes(problem, data)  # (once for every null vector: K may have hundreds)
    for e in fact.null_vectors().T:
        d, w_rows = e[:n], e[n:]
        w = np.zeros(problem.layout.rows)
        w[rows] = w_rows
        error = infeasibility(problem, data, -w if float(data.c @ w) > 0 else w, mags)
        if error is None:  # P d = 0 (w is then rounding noise), or P d + Aᵀw = 0
            error = unboundedness(problem, data, -d if float(data.q @ d) > 0 else d,
                                  mags=mags)
        if error is None:
            slope = float(data.q @ d) - float(data.c[:problem.m_eq] @ w[:problem.m_eq])
            error = (unboundedness(problem, data, -d, -w, mags) if slope > 0
                     else unboundedness(problem, data, d, w, mags))
        if error is not None:
            return error
    return SolverError(
        "the KKT system is singular and inconsistent, and no certificate of "
        "infeasibility or unboundedness could be verified on the data: the problem is "
        "too ill-conditioned to decide", STATUS_INACCURATE)


class Magnitudes:
    """P, M and what the certificate checks read from them at some data: |P|,
    |M|, the largest entry of each column (of P and M, plus |q|) and of each
    row of M (plus |c|). Formed once where many candidate certificates are
    checked on the same data."""

    def __init__(self, problem: CompiledProblem, data: ProblemData) -> None:
        self.P, self.M = problem.P_matrix(data), problem.M_matrix(data)
        self.P_abs, self.M_abs = abs(self.P), abs(self.M)
        self.row_size = (np.asarray(self.M_abs.max(axis=1).toarray()).ravel()
                         + np.abs(data.c))
        self.column_size = (np.asarray(self.P_abs.max(axis=0).toarray()).ravel()
                            + np.asarray(self.M_abs.max(axis=0).toarray()).ravel()
                            + np.abs(data.q))


def infeasibility(problem: CompiledProblem, data: ProblemData, w: FloatArray,
                  mags: Magnitudes | None = None) -> SolverError | None:
    """The error for a verified certificate of infeasibility, or None.

    ``w`` weighs every constraint row (the layout's order). It certifies that
    no x satisfies the constraints when Mᵀw = 0, w ≥ 0 on the inequality rows
    and cᵀw < 0: for a feasible x, 0 = wᵀMx ≤ cᵀw would follow. Each entry of
    Mᵀw must cancel relative to the magnitudes of its terms, and cᵀw must not.
    Entries of w whose rows carry a negligible share of the combination
    (rounding noise of a null vector) are set to zero first.
    """
    mags = mags or Magnitudes(problem, data)
    M, M_abs, c = mags.M, mags.M_abs, data.c
    w = _clean(w, mags.row_size)
    m_eq = problem.m_eq
    aw = np.abs(w)
    if (not np.any(w) or np.any(w[m_eq:] < 0)
            or not _cancels(np.asarray(M.T @ w), np.asarray(M_abs.T @ aw))
            or not float(c @ w) < -CERTIFICATE_TOL * float(np.abs(c) @ aw)):
        return None
    rows = np.flatnonzero(w)
    kind = "a nonnegative combination" if np.any(w[m_eq:]) else "a combination"
    return SolverError(
        f"the constraints are inconsistent (infeasible): {kind} of "
        f"{describe_rows(problem, rows, w[rows])} cancels on the left-hand side but not on "
        "the right-hand side", STATUS_INFEASIBLE)


def unboundedness(problem: CompiledProblem, data: ProblemData, d: FloatArray,
                  w: FloatArray | None = None, mags: Magnitudes | None = None
                  ) -> SolverError | None:
    """The error for a verified direction of unboundedness, or None.

    ``d`` is a direction of the variables, ``w`` (optional) weighs the
    equality rows (the layout's order; other entries are ignored). Together
    they certify that the objective decreases without bound along d from any
    feasible point x₀ when

        P d + Aᵀw = 0,   A d = 0,   G d ≤ 0 (every inequality row),   qᵀd − bᵀw < 0:

    then dᵀPd = −wᵀAd = 0, and the objective along x₀ + t·d is affine in t
    with slope (P x₀ + q)ᵀd = qᵀd − wᵀA x₀ = qᵀd − bᵀw. For a positive
    semidefinite P, w = 0 (P d = 0) is the usual certificate; a w ≠ 0 covers
    an indefinite P that is flat on the feasible directions. Each condition
    is checked entry by entry against the magnitudes of its terms, after the
    entries that carry a negligible share are set to zero.
    """
    mags = mags or Magnitudes(problem, data)
    P, M, P_abs, M_abs = mags.P, mags.M, mags.P_abs, mags.M_abs
    q, c, m_eq = data.q, data.c, problem.m_eq
    d = _clean(d, mags.column_size)
    w_eq = np.zeros(problem.layout.rows)
    if w is not None and m_eq:
        w_eq[:m_eq] = _clean(w[:m_eq], mags.row_size[:m_eq])
    ad, aw = np.abs(d), np.abs(w_eq)
    Md, M_mag = np.asarray(M @ d), np.asarray(M_abs @ ad)
    slope = float(q @ d) - float(c @ w_eq)
    if (not np.any(d)
            or not _cancels(np.asarray(P @ d + M.T @ w_eq), np.asarray(P_abs @ ad + M_abs.T @ aw))
            or not _cancels(Md[:m_eq], M_mag[:m_eq])
            or not _cancels(np.maximum(Md[m_eq:], 0.0), M_mag[m_eq:])
            or not slope < -CERTIFICATE_TOL * float(np.abs(q) @ ad + np.abs(c) @ aw)):
        return None
    return unbounded_error(problem, d)


def _clean(v: FloatArray, size: FloatArray) -> FloatArray:
    """``v`` with the entries whose share |vᵢ|·sizeᵢ is below 1e-9 of the largest set
    to zero (``size`` holds the magnitude of each entry's row or column, so the
    test does not depend on the units of the rows or variables)."""
    share = np.abs(v) * size
    top = float(np.max(share, initial=0.0))
    return np.where(share > 1e-9 * top, v, 0.0)


def _cancels(residual: FloatArray, magnitude: FloatArray) -> bool:
    """Whether each entry of a residual is negligible against the magnitude of its
    terms (entries whose terms are all negligible, against the largest)."""
    floor = 1e-9 * float(np.max(magnitude, initial=0.0))
    return bool(np.all(np.abs(residual) <= CERTIFICATE_TOL * (magnitude + floor)))


def describe_rows(problem: CompiledProblem, rows: IntArray, w: FloatArray,
                  limit: int = 4) -> str:
    """Name the constraints (and entries) that carry the weight of a row vector."""
    layout = problem.layout
    weights = np.abs(w)
    top = float(weights.max(initial=0.0))
    if top == 0:
        return "the constraints"
    heavy = np.flatnonzero(weights >= 1e-3 * top)
    names = list(dict.fromkeys(_row_name(layout, int(rows[k]))
                               for k in heavy[np.argsort(-weights[heavy], kind="stable")]))
    text = ("constraint rows " if len(names) > 1 else "constraint row ") + ", ".join(
        names[:limit])
    if len(names) > limit:
        text += f" and {len(names) - limit} more"
    return text


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
