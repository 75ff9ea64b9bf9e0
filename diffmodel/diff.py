"""Forward and reverse derivatives of a verified optimal point (the only implementation).

At an optimal point with the rows R of M = [A; G] in the KKT system (all
equalities and the active inequalities), the optimality conditions are

    F(x, y_R; θ) = ( P x + q + M_Rᵀ y_R ,  M_R x − c_R ) = 0,

and K = ∂F/∂(x, y_R) = [[P, M_Rᵀ], [M_R, 0]] is the matrix the point's
factorization holds. By the implicit function theorem

    d(x, y_R)/dθ = −K⁻¹ ∂F/∂θ.

Forward mode (JVP) solves one system per direction dθ̃:
dz = −K⁻¹ (dP x + dq + dM_Rᵀ y_R,  dM_R x − dc_R).
Reverse mode (VJP) solves one adjoint system ω = K⁻ᵀ ḡ = K⁻¹ ḡ (K is
symmetric) for the loss gradient ḡ = ∂ℓ/∂(x, y_R), then contracts:
dℓ/dθ̃ = −(∂F/∂θ̃)ᵀ ω, where, entry by entry of the data,

    ∂(ωᵀF)/∂P_ij = ω_i x_j + ω_j x_i  (i < j),  ω_i x_i  (i = j),
    ∂(ωᵀF)/∂q = ω_x,   ∂(ωᵀF)/∂M_rj = ω_x,j y_r + ω_y,r x_j,   ∂(ωᵀF)/∂c = −ω_y,

each pulled back to θ̃ through the adjoint of its map. Only the entries of P
and M that depend on θ are touched. Every function takes vectors or blocks
of columns (batches and Jacobians); rows not in R have zero multiplier and
zero derivative.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import scipy.sparse as sp

from ._typing import FloatArray, IntArray
from .compiled import CompiledProblem, LinearMap
from .errors import DerivativeError
from .linalg import Factorization, KKTPattern
from .point import Point
from .solvers.dependence import dependent_row, loose_row
from .tolerances import BACKWARD_TOL

__all__ = ["tangent", "adjoint", "adjoint_multipliers", "adjoint_block", "block_multipliers",
           "pullback", "pullback_sum", "objective_gradient", "jacobian",
           "check_differentiable", "JACOBIAN_CHUNK"]


#: Right-hand sides per block in :func:`jacobian` (bounds its working memory).
JACOBIAN_CHUNK = 256


_P = ParamSpec("_P")
_R = TypeVar("_R", FloatArray, tuple[FloatArray, FloatArray])


_SUM = np.add.reduce

def _quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run under ``np.errstate(all="ignore")`` and refuse non-finite results.

    Overflow is not a warning the caller can act on: the result is checked
    and a DerivativeError says what happened.
    """
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(all="ignore"):
            out = fn(*args, **kwargs)
            # NaN and inf survive a sum (a finite sum that overflows is rechecked).
            parts = out if isinstance(out, tuple) else (out,)
            finite = True
            for part in parts:
                if not (math.isfinite(_SUM(part, axis=None)) or np.isfinite(part).all()):
                    finite = False
        if not finite:
            raise DerivativeError(
                f"{kwargs.get('call', fn.__name__ + '()')}: the derivative overflows double "
                "precision at this solution (entries beyond about 1e308)")
        return out
    return wrapper


def check_differentiable(point: Point, call: str) -> None:
    """Raise DerivativeError if the point's solution is not unique."""
    if not point.raw.unique:
        raise DerivativeError(
            f"{call}: the KKT matrix is singular at this solution (estimated condition "
            "number beyond 1e14 after equilibration), so the solution is not a unique, "
            "differentiable function of the parameters: look for redundant or linearly "
            "dependent constraints, or an objective that is flat along a feasible direction")


def _check_solve(omega: float | FloatArray, call: str) -> None:
    worst = omega if isinstance(omega, float) else float(np.max(omega, initial=0.0))
    if not worst <= BACKWARD_TOL:
        raise DerivativeError(
            f"{call}: the derivative system could not be solved to working accuracy "
            f"(componentwise backward error {worst:.1e} after refinement)")


def _dF_times(problem: CompiledProblem, x: FloatArray, y: FloatArray,
              dtheta: FloatArray | None, columns: IntArray | None = None
              ) -> tuple[FloatArray, FloatArray]:
    """∂F/∂θ̃ · dθ̃ as (stationarity part (n, …), all-rows part (m, …)).

    With ``columns`` instead of dθ̃: the columns of ∂F/∂θ̃ for those entries
    of θ̃ (one-hot directions, never formed), as blocks.
    """
    P, M = problem.P, problem.M

    def apply(lmap: LinearMap) -> FloatArray:
        if columns is not None:
            return lmap.columns(columns)
        assert dtheta is not None  # one of the two is given (internal contract)
        return lmap.apply(dtheta)

    f = apply(problem.f)  # (dq, −dc)
    n = problem.n
    gx, gr = f[:n], f[n:]
    if P.dep.shape[0]:
        half = apply(P.dep_map)
        half[P.dep_diag] *= 0.5
        i, j = P.dep_row, P.dep_col
        gx = gx + _scatter(i, half * _rows(x, j), gx.shape) + _scatter(j, half * _rows(x, i),
                                                                        gx.shape)
    if M.dep.shape[0]:
        dM = apply(M.dep_map)
        r, j = M.dep_row, M.dep_col
        gx = gx + _scatter(j, dM * _rows(y, r), gx.shape)
        gr = gr + _scatter(r, dM * _rows(x, j), gr.shape)
    return gx, gr


def _dF_adjoint(problem: CompiledProblem, x: FloatArray, y: FloatArray,
                wx: FloatArray, wy: FloatArray, columns: IntArray | None = None
                ) -> FloatArray:
    """(∂F/∂θ̃)ᵀ (wx, wy) for multipliers wy over all rows (zero off R).

    With ``columns``: only those entries of the result (a term whose map
    touches none of them is skipped, products and all).
    """
    P, M = problem.P, problem.M

    def pull(lmap: LinearMap, w: FloatArray) -> FloatArray:
        return lmap.adjoint_rows(w, columns) if columns is not None else lmap.apply_adjoint(w)

    def needed(lmap: LinearMap) -> bool:
        return columns is None or bool(np.isin(columns, lmap.support).any())

    grad = pull(problem.f, np.concatenate([wx, wy]))
    if P.dep.shape[0] and needed(P.dep_map):
        i, j = P.dep_row, P.dep_col
        h = _rows(wx, i) * _rows(x, j) + _rows(wx, j) * _rows(x, i)
        h[P.dep_diag] *= 0.5
        grad += pull(P.dep_map, h)
    if M.dep.shape[0] and needed(M.dep_map):
        r, j = M.dep_row, M.dep_col
        grad += pull(M.dep_map, _rows(wx, j) * _rows(y, r) + _rows(wy, r) * _rows(x, j))
    return np.asarray(grad)


def _rows(v: FloatArray, idx: IntArray) -> FloatArray:
    return v[idx]


def _scatter(idx: IntArray, values: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """out[idx[e]] += values[e] (per column for blocks)."""
    if values.ndim == 1:
        return np.bincount(idx, values, minlength=shape[0]).astype(np.float64, copy=False)
    out = np.zeros(shape)
    np.add.at(out, idx, values)
    return out


@_quiet
def tangent(point: Point, dtheta: FloatArray, call: str = "derivative()"
            ) -> tuple[FloatArray, FloatArray]:
    """Forward mode: (dx, dy) along dθ̃ (dθ̃[0] = 0); dy covers all rows of M.

    At a degenerate point (weakly active rows) this is the one-sided
    directional derivative along dθ̃ (see :func:`_one_sided`).

    Raises
    ------
    DerivativeError
        If the solution is not unique or the solve is not accurate.
    """
    check_differentiable(point, call)
    problem, rows = point.problem, point.rows
    gx, gr = _dF_times(problem, point.x, point.y, dtheta)
    if point.raw.weak.shape[0] or point.raw.dependent.shape[0]:
        return _one_sided(point, gx, gr, call)
    return _solve_rows(point, point.factorization, rows, gx, gr, call)


def _solve_rows(point: Point, fact: Factorization, rows: IntArray, gx: FloatArray,
                gr: FloatArray, call: str) -> tuple[FloatArray, FloatArray]:
    """(dx, dy) from K_R dz = −(gx, gr_R) over the rows R, dy zero off R."""
    n = point.problem.n
    dz, omega, _, _ = fact.solve(-np.concatenate([gx, gr[rows]]))
    _check_solve(omega, call)
    dy = np.zeros(gr.shape[0])
    dy[rows] = dz[n:]
    return dz[:n], dy


def _one_sided(point: Point, gx: FloatArray, gr: FloatArray, call: str
               ) -> tuple[FloatArray, FloatArray]:
    """The one-sided directional derivative at a degenerate point.

    With S the strongly active and W the weakly active inequality rows, the
    derivative of the solution along dθ solves the QP (Fiacco, *Introduction
    to Sensitivity and Stability Analysis in Nonlinear Programming*, 1983,
    ch. 3)

        minimize ½ dxᵀP dx + dxᵀ gx
        subject to  M_E∪S dx + gr_E∪S = 0,   M_W dx + gr_W ≤ 0,

    whose solution is piecewise linear in dθ. Its own active set is found by
    primal-dual active-set steps over the binding rows, one KKT solve each: a
    row of W leaves when its multiplier derivative is negative and comes back
    when its slack derivative is negative. Binding rows that depend linearly
    on others (whose multipliers can be shared in many ways) leave when the
    linearized rows are inconsistent along dθ: the row that cannot stay
    binding goes (see :func:`~diffmodel.solvers.dependence.loose_row`).
    """
    problem, m_eq = point.problem, point.problem.m_eq
    M = point_matrix(point)
    raw = point.raw
    binding = np.zeros(problem.m_ineq, dtype=bool)
    binding[raw.active] = True
    weak = np.zeros(problem.m_ineq, dtype=bool)
    weak[raw.weak] = True
    in_set = binding.copy()
    g_rows = m_eq + np.arange(problem.m_ineq)
    scale = float(np.max(np.abs(gx), initial=0.0)) + float(np.max(np.abs(gr), initial=0.0))
    tol = 1e-12 * max(scale, 1e-300)
    for _ in range(4 * raw.active.shape[0] + 4):
        kept = np.flatnonzero(in_set)
        rows = np.concatenate([np.arange(m_eq), m_eq + kept])
        fact = _factor_rows(point, rows)
        rhs = -np.concatenate([gx, gr[rows]])
        if fact.singular:
            z, omega, _, _ = fact.solve(rhs)
            drop = (dependent_row(fact, kept, m_eq) if omega <= BACKWARD_TOL
                    else loose_row(fact, kept, m_eq, rhs[problem.n:]))
            if drop.shape[0] == 0:
                break
            in_set[drop] = False
            continue
        dx, dy = _solve_rows(point, fact, rows, gx, gr, call)
        d_slack = -(M[g_rows] @ dx + gr[g_rows])  # derivative of h − G x
        leave = in_set & weak & (dy[g_rows] < -tol)
        enter = ~in_set & binding & (d_slack < -tol)
        if not leave.any() and not enter.any():
            return dx, dy
        in_set = (in_set & ~leave) | enter
    raise DerivativeError(f"{call}: the one-sided derivative at this degenerate point could "
                          "not be determined (its active set did not settle)")


def point_matrix(point: Point) -> sp.csr_matrix:
    """The constraint matrix M = [A; G] of a point's data."""
    problem = point.problem
    return sp.csr_matrix((point.data.M_data, problem.M.indices, problem.M.indptr),
                         shape=problem.M.shape)


def _factor_rows(point: Point, rows: IntArray) -> Factorization:
    """A factorization of K over other rows than the point's own (degenerate points)."""
    if np.array_equal(rows, point.rows):
        return point.factorization
    problem, data = point.problem, point.data
    pattern = KKTPattern.build(problem.n, problem.P.indptr, problem.P.indices,
                               problem.M.indptr, problem.M.indices, rows)
    return Factorization(pattern, pattern.assemble(data.P_data, data.M_data),
                         need_inertia=False, reused=problem.k_constant)


@_quiet
def adjoint(point: Point, gx: FloatArray, gy: FloatArray, call: str = "backward()"
            ) -> FloatArray:
    """Reverse mode: dℓ/dθ̃ for ∂ℓ/∂x = gx and ∂ℓ/∂y = gy (all rows of M).

    Entry 0 of the result (the constant of θ̃) is meaningless.

    Raises
    ------
    DerivativeError
        If the solution is not unique or the solve is not accurate.
    """
    # (A non-finite ω makes the result non-finite: one check, this function's.)
    wx, wy = _multipliers(point, gx, gy, call)
    return -_dF_adjoint(point.problem, point.x, point.y, wx, wy)


@_quiet
def adjoint_multipliers(point: Point, gx: FloatArray, gy: FloatArray,
                        call: str = "backward()") -> tuple[FloatArray, FloatArray]:
    """The adjoint solution ω = K⁻¹ (gx, gy_R) of a point, as (ω_x, ω_y) with
    ω_y over all rows of M (zero off R): what :func:`adjoint` pulls back.
    Raises as :func:`adjoint` does."""
    return _multipliers(point, gx, gy, call)


def _multipliers(point: Point, gx: FloatArray, gy: FloatArray, call: str
                 ) -> tuple[FloatArray, FloatArray]:
    check_differentiable(point, call)
    rows, n = point.rows, point.problem.n
    rhs = np.concatenate([gx, gy if point.all_rows else gy[rows]])
    omega, err, _, _ = point.factorization.solve(rhs)
    _check_solve(err, call)
    if point.all_rows:
        return omega[:n], omega[n:]
    wy = np.zeros(gy.shape[0])
    wy[rows] = omega[n:]
    return omega[:n], wy


@_quiet
def block_multipliers(problem: CompiledProblem, fact: Factorization, rows: IntArray,
                      GX: FloatArray, GY: FloatArray, call: str = "backward()"
                      ) -> tuple[FloatArray, FloatArray]:
    """:func:`adjoint_multipliers` for B points sharing one factorization over
    ``rows`` (columns of GX, GY): (Ω_x, Ω_y), Ω_y over all rows of M."""
    n = problem.n
    Omega, errs, _ = fact.solve_many(np.vstack([GX, GY[rows]]))
    _check_solve(errs, call)
    WY = np.zeros(GY.shape)
    WY[rows] = Omega[n:]
    return Omega[:n], WY


@_quiet
def adjoint_block(problem: CompiledProblem, fact: Factorization, rows: IntArray,
                  X: FloatArray, Y: FloatArray, GX: FloatArray, GY: FloatArray,
                  call: str = "backward()") -> FloatArray:
    """Reverse mode for B points sharing one factorization (columns of X, Y, GX, GY).

    Returns dℓ_b/dθ̃ as the columns of an (n_theta + 1, B) block.
    """
    WX, WY = block_multipliers(problem, fact, rows, GX, GY, call)
    return -_dF_adjoint(problem, X, Y, WX, WY)


@_quiet
def pullback(problem: CompiledProblem, X: FloatArray, Y: FloatArray, WX: FloatArray,
             WY: FloatArray, keep: IntArray | None = None) -> FloatArray:
    """dℓ_b/dθ̃ = −(∂F/∂θ̃)ᵀ ω_b for a block of points (columns of X, Y) and their
    adjoint solutions (columns of WX, WY over all rows of M): every entry of
    θ̃, or only the entries ``keep`` (shape (len(keep), B))."""
    return -_dF_adjoint(problem, X, Y, WX, WY, columns=keep)


@_quiet
def pullback_sum(problem: CompiledProblem, X: FloatArray, Y: FloatArray, WX: FloatArray,
                 WY: FloatArray) -> FloatArray:
    """The sum over the block of :func:`pullback`'s columns, formed without them:
    Σ_b ω_b,i x_b,j is one product of the blocks, so the gradient of data that
    a batch shares costs one term per datum, not one per datum and point."""
    return -_dF_adjoint_sum(problem, X, Y, WX, WY)


def _dF_adjoint_sum(problem: CompiledProblem, X: FloatArray, Y: FloatArray,
                    WX: FloatArray, WY: FloatArray) -> FloatArray:
    """Σ_b (∂F/∂θ̃)ᵀ (ω_b) over the columns of the blocks, as :func:`_dF_adjoint`
    would sum them, but with the products summed before the pull-back."""
    P, M = problem.P, problem.M
    grad = problem.f.apply_adjoint(np.concatenate([WX.sum(axis=1), WY.sum(axis=1)]))
    if P.dep.shape[0]:
        i, j = P.dep_row, P.dep_col
        h = _pair_sums(WX, X, i, j) + _pair_sums(WX, X, j, i)
        h[P.dep_diag] *= 0.5
        grad += P.dep_map.apply_adjoint(h)
    if M.dep.shape[0]:
        r, j = M.dep_row, M.dep_col
        grad += M.dep_map.apply_adjoint(_pair_sums(WX, Y, j, r) + _pair_sums(WY, X, r, j))
    return np.asarray(grad)


def _pair_sums(U: FloatArray, V: FloatArray, i: IntArray, j: IntArray) -> FloatArray:
    """Σ_b U[i_e, b] V[j_e, b] for each pair e: from the product U Vᵀ where the
    pairs cover a good part of it, else pair by pair."""
    if 4 * i.shape[0] >= U.shape[0] * V.shape[0]:
        return np.asarray((U @ V.T)[i, j])
    return np.asarray(np.einsum("eb,eb->e", U[i], V[j]))


@_quiet
def objective_gradient(point: Point) -> FloatArray:
    """∂f*/∂θ̃ of the compiled optimal value, by the envelope theorem (no solve).

    At the optimum f* equals the Lagrangian L = ½xᵀPx + qᵀx + r + yᵀ(Mx − c),
    whose partial derivative in θ with (x, y) held fixed is ∂f*/∂θ:
    ∂L/∂P_ij = x_i x_j (i < j) or ½x_i², ∂L/∂q = x, ∂L/∂M_rj = y_r x_j,
    ∂L/∂c = −y, plus the constant's map. Entry 0 is meaningless.
    """
    problem, x, y = point.problem, point.x, point.y
    grad = 0.5 * _dF_adjoint(problem, x, y, x, y)
    # The q and c terms enter L linearly, not quadratically: undo the ½.
    grad += 0.5 * problem.f.apply_adjoint(np.concatenate([x, y]))
    np.add.at(grad, problem.r_index, problem.r_value)
    return grad


@_quiet
def jacobian(point: Point, out: IntArray, columns: IntArray,
             call: str = "jacobian()") -> FloatArray:
    """d(x, y)[out]/dθ̃[columns], by forward or reverse passes, whichever are fewer.

    ``out`` indexes the stacked (x, y over all rows of M). Costs
    min(len(out), len(columns)) solves, in blocks of :data:`JACOBIAN_CHUNK`.
    """
    check_differentiable(point, call)
    problem, rows, fact = point.problem, point.rows, point.factorization
    n, m = problem.n, problem.layout.rows
    J = np.zeros((out.shape[0], columns.shape[0]))
    # Position of each row of M in the KKT system (−1: not in it, derivative 0).
    where = np.full(m + 1, -1)  # (one spare entry so that primal rows index safely)
    where[rows] = n + np.arange(rows.shape[0])
    kkt_out = np.where(out < n, out, where[np.where(out < n, m, out - n)])
    live = np.flatnonzero(kkt_out >= 0)
    if columns.shape[0] <= live.shape[0]:
        for start in range(0, columns.shape[0], JACOBIAN_CHUNK):
            cols = columns[start: start + JACOBIAN_CHUNK]
            gx, gr = _dF_times(problem, _tile(point.x, cols), _tile(point.y, cols), None, cols)
            dz, errs, _ = fact.solve_many(-np.vstack([gx, gr[rows]]))
            _check_solve(errs, call)
            J[live, start: start + cols.shape[0]] = dz[kkt_out[live]]
        return J
    dim = n + rows.shape[0]
    for start in range(0, live.shape[0], JACOBIAN_CHUNK):
        chunk = live[start: start + JACOBIAN_CHUNK]
        E = np.zeros((dim, chunk.shape[0]))
        E[kkt_out[chunk], np.arange(chunk.shape[0])] = 1.0
        Omega, errs, _ = fact.solve_many(E)
        _check_solve(errs, call)
        WY = np.zeros((m, chunk.shape[0]))
        WY[rows] = Omega[n:]
        grad = -_dF_adjoint(problem, _tile(point.x, chunk), _tile(point.y, chunk),
                            Omega[:n], WY, columns)
        J[chunk, :] = grad.T
    return J


def _tile(v: FloatArray, like: IntArray) -> FloatArray:
    return np.broadcast_to(v[:, None], (v.shape[0], like.shape[0]))
