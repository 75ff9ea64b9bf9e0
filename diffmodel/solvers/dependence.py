"""Binding rows that depend on each other: which to leave out of K, and how
the left-out rows share the multipliers.

At a degenerate vertex more rows bind than K can hold: some are linear
combinations of the others. The active-set steps leave such rows out of the
KKT system (:func:`dependent_row`, :func:`nonnegative_basis`) or let a row
that cannot bind leave the set (:func:`loose_row`), and the verified point
spreads the multipliers over every binding row in the minimum-norm way
(:func:`share_multipliers`). Reverse and forward mode use the same choices
(:mod:`diffmodel.diff`). Where an interior point is all there is,
:func:`crossover` picks independent binding rows from it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray, IntArray
from ..compiled import CompiledProblem, ProblemData
from ..linalg import Factorization

__all__ = ["CROSSOVER_MAX", "crossover", "dependent_row", "loose_row", "nonnegative_basis",
           "share_multipliers"]


#: The crossover works on dense arrays of the equality and binding rows: at
#: most this many entries.
CROSSOVER_MAX = 4_000_000


def crossover(problem: CompiledProblem, data: ProblemData, G: FloatArray | sp.csr_matrix,
              binding: IntArray, x: FloatArray) -> IntArray:
    """Linearly independent rows among the ``binding`` inequality rows of a
    point x that carry nonnegative multipliers: where more rows bind than K
    can hold (a degenerate vertex), a set the active-set steps can start
    from without dependent rows (the crossover of an interior point to a
    basis).

    With the equality rows' span projected out (their multipliers are
    free), nonnegative least squares matches the stationarity residual
    −(P x + q) with the binding rows; its solution rests on linearly
    independent rows. Binding rows with no multiplier are then added,
    chosen by QR with column pivoting, until the rows fix x. All of
    ``binding`` where they are too many for dense arrays
    (:data:`CROSSOVER_MAX`) or NNLS does not finish.
    """
    from scipy.linalg import qr
    from scipy.optimize import nnls

    m_eq = problem.m_eq
    if not binding.shape[0] or problem.n * (m_eq + binding.shape[0]) > CROSSOVER_MAX:
        return binding
    rows = G[binding] if isinstance(G, np.ndarray) else G[binding].toarray()
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1), 1e-300)[:, None]
    target = -(problem.P_matrix(data) @ x + data.q)
    if m_eq:
        Q, _ = np.linalg.qr(problem.M_matrix(data)[:m_eq].toarray().T)
        rows = rows - (rows @ Q) @ Q.T  # (the equality rows' span projected out)
        target = target - Q @ (Q.T @ target)
    try:
        weights, _ = nnls(rows.T, target, maxiter=30 * max(rows.shape[0], 1))
    except RuntimeError:
        return binding
    # Fill the rank: rows with a multiplier first (weight 1), the others after.
    _, R, order = qr((rows * np.where(weights > 0, 1.0, 1e-3)[:, None]).T,
                     mode="economic", pivoting=True)
    diag = np.abs(np.diag(R))
    rank = int(np.count_nonzero(diag > 1e-10 * float(np.max(diag, initial=0.0))))
    return np.sort(binding[order[:rank]])


def loose_row(fact: Factorization, kept: IntArray, m_eq: int, c_rows: FloatArray
               ) -> IntArray:
    """An inequality row that cannot bind when the binding rows are dependent but
    their right-hand sides are not.

    A null vector w of the constraint rows (Σ wᵢ Mᵢ = 0) and the slacks
    sᵢ = cᵢ − Mᵢ x ≥ 0 of any feasible x satisfy Σ wᵢ sᵢ = wᵀc: with w
    signed so that wᵀc > 0, some row with wᵢ > 0 has sᵢ > 0. The inequality
    row of largest such weight leaves the active set.
    """
    n = fact.n
    for e in fact.null_vectors().T:
        w = e[n:]
        if float(np.max(np.abs(w), initial=0.0)) <= 1e-3 * float(np.abs(e).max()):
            continue
        if float(w @ c_rows) < 0:
            w = -w
        ineq = w[m_eq:]
        if ineq.shape[0] and float(ineq.max()) > 0:
            return kept[[int(np.argmax(ineq))]]
    return np.zeros(0, dtype=np.int64)


def dependent_row(fact: Factorization, kept: IntArray, m_eq: int,
                  lam: FloatArray | None = None) -> IntArray:
    """Active inequality rows to leave out of a singular KKT system.

    A null vector (d, w) of K with w supported on constraint rows (d ≈ 0) is
    a linear dependence among them: with multipliers λ of the rows (those of
    the singular solve, if given), every λ + t·w satisfies stationarity too.
    A ratio test picks t so that the inequality multipliers stay nonnegative
    and one of them reaches zero: that row leaves. (At a degenerate vertex,
    dropping another of the dependent rows can leave a negative multiplier,
    and the steps would then release a row that binds.) Without λ, or if no
    t keeps them nonnegative, the row carrying the largest weight leaves.
    """
    n = fact.n
    for e in fact.null_vectors().T:
        size = float(np.abs(e).max())
        w = e[n + m_eq:]
        if not (w.shape[0] and float(np.abs(w).max()) > 1e-3 * size):
            continue
        if lam is not None and float(np.abs(e[:n]).max(initial=0.0)) <= 1e-6 * size:
            chosen = _ratio_test(lam[m_eq:], w)
            if chosen is not None:
                return kept[[chosen]]
        return kept[[int(np.argmax(np.abs(w)))]]
    return np.zeros(0, dtype=np.int64)


def nonnegative_basis(problem: CompiledProblem, data: ProblemData, fact: Factorization,
                       kept: IntArray, z: FloatArray) -> IntArray | None:
    """Rows of the set to leave out so that the others carry nonnegative
    multipliers, where the binding rows depend on each other.

    K is singular through the rows alone (its null vectors have no x part,
    so x is unique) and the solve is consistent: the multipliers y of the
    singular solve give the stationarity residual Mᵀy they must match. The
    multipliers with ν free and λ ≥ 0 that match it are found by nonnegative
    least squares (Lawson and Hanson), whose solution rests on linearly
    independent rows; the rows with λ = 0 leave, all at once (at a
    degenerate vertex with several dependences, leaving one row at a time
    can end on a set with a negative multiplier). None where x is not
    unique, no nonnegative multipliers match, no row would leave, or NNLS
    does not finish.
    """
    from scipy.optimize import nnls

    n, m_eq = problem.n, problem.m_eq
    null = fact.null_vectors()
    if not null.shape[1] or float(np.abs(null[:n]).max()) > 1e-6 * float(np.abs(null).max()):
        return None
    rows = np.concatenate([np.arange(m_eq), m_eq + kept])
    M = problem.M_matrix(data)[rows].toarray()
    target = M.T @ z[n:]
    E = M[:m_eq].T
    basis = np.hstack([E, -E, M[m_eq:].T])
    try:  # (SciPy's default of 3 iterations per column can fall short on LPs)
        weights, residual = nnls(basis, target, maxiter=30 * max(basis.shape[1], 1))
    except RuntimeError:  # still short: no verdict, the null vector decides
        return None
    if not residual <= 1e-9 * (float(np.linalg.norm(target)) or 1.0):
        return None
    drop = kept[weights[2 * m_eq:] <= 0.0]
    return drop if drop.shape[0] else None


def _ratio_test(lam: FloatArray, w: FloatArray) -> int | None:
    """The row to leave along λ + t·w: at the low end of the interval of t
    where every multiplier stays nonnegative (or its high end, if it has no
    low end), the one that reaches zero. None if the interval is empty or
    the whole line."""
    big = 1e-3 * float(np.abs(w).max())
    pos, neg = np.flatnonzero(w > big), np.flatnonzero(w < -big)
    low = -lam[pos] / w[pos]  # t ≥ each of these
    high = -lam[neg] / w[neg]  # t ≤ each of these
    lo = float(low.max(initial=-np.inf))
    hi = float(high.min(initial=np.inf))
    if not lo <= hi:
        return None
    if np.isfinite(lo):
        return int(pos[np.argmax(low)])
    return int(neg[np.argmin(high)]) if np.isfinite(hi) else None


def share_multipliers(problem: CompiledProblem, data: ProblemData, y: FloatArray,
                       kept: IntArray, dependent: IntArray) -> FloatArray:
    """Split the multipliers of dependent rows with those they depend on, minimum-norm.

    The multipliers λ of the binding rows are determined only up to the null
    space of their matrix's transpose; among the choices with the same
    Gᵀλ, the one of least norm (equal shares for duplicated rows) is the one
    interior-point solvers approach.
    """
    m_eq = problem.m_eq
    M = sp.csr_matrix((data.M_data, problem.M.indices, problem.M.indptr),
                      shape=problem.M.shape)
    rows = np.concatenate([m_eq + kept, m_eq + dependent])
    G = M[rows].toarray()
    lam = y[rows]
    # Minimum-norm λ' with Gᵀλ' = Gᵀλ: λ' = pinv(Gᵀ) Gᵀ λ (the projection on range(G)).
    shared = np.linalg.lstsq(G.T, G.T @ lam, rcond=None)[0]
    if np.all(shared >= -1e-12 * max(float(np.abs(lam).max()), 1e-300)):
        y = y.copy()
        y[rows] = np.maximum(shared, 0.0)
    return y
