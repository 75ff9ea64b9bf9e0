"""Forward and reverse derivatives of the KKT solution by implicit differentiation.

At the optimum, F(z, θ) = K(θ) z + f(θ) = 0 with z = (x, ν), K and f as in
:mod:`diffmodel.kkt`. By the implicit function theorem

    dz/dθ = −K⁻¹ ∂F/∂θ,    ∂F/∂θ_k = (∂K/∂θ_k) z + ∂f/∂θ_k.

Forward mode (JVP) solves one system per direction:
dz = −K⁻¹ (dK z + df) with dk = Kmap dθ̃, df = Fmap dθ̃.

Reverse mode (VJP) solves one adjoint system ω = K⁻ᵀ g = K⁻¹ g for the loss
gradient g = ∂ℓ/∂z, then contracts: dℓ/dθ̃ = −(∂F/∂θ̃)ᵀ ω
= −(Kmapᵀ h + Fmapᵀ ω), where h_e = ∂(ωᵀ K z)/∂k_e is, for the pattern entry
e = (r, c) of the upper triangle, ω_r z_c + ω_c z_r (r ≠ c) or ω_r z_r (r = c).

Every function here works in the stacked spaces (z, θ̃); naming and shaping
happen in :mod:`diffmodel.model`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .errors import DerivativeError
from .kkt import KKTFactorization, KKTMaps

__all__ = ["tangent", "adjoint", "check_solved", "objective_gradient", "dF_dtheta",
           "jacobian_block", "JACOBIAN_CHUNK", "DERIV_TOL", "SINGULAR_TOL"]

FloatArray = NDArray[np.float64]

#: A derivative solve whose relative residual exceeds this is reported as failed.
DERIV_TOL = 1e-8
#: K is treated as singular when σ_min(K) / max|K_ij| is below this.
SINGULAR_TOL = 1e-12


def check_solved(fact: KKTFactorization, residual: float) -> None:
    """Raise DerivativeError if K is singular or a derivative solve failed."""
    if fact.sigma_min() < SINGULAR_TOL:
        raise DerivativeError(
            "the KKT matrix is singular at this solution (estimated smallest "
            f"singular value {fact.sigma_min():.1e} relative to its largest entry), so "
            "the solution is not a differentiable function of the parameters: "
            "look for redundant or linearly dependent equality constraints, or an "
            "objective that is flat along a feasible direction"
        )
    if not residual <= DERIV_TOL:
        raise DerivativeError(
            f"the derivative system could not be solved accurately (relative "
            f"residual {residual:.1e}); the KKT matrix is too ill-conditioned"
        )


def tangent(fact: KKTFactorization, z: FloatArray, dtheta: FloatArray) -> FloatArray:
    """Forward mode: dz = −K⁻¹ (dK z + df) for a direction dθ̃ (dθ̃[0] = 0).

    Raises
    ------
    DerivativeError
        If K is singular (the derivative does not exist).
    """
    maps = fact.maps
    rhs = -(maps.dK_times(maps.dep.apply(dtheta), z) + maps.F.apply(dtheta))
    dz, residual = fact.solve(rhs)
    check_solved(fact, residual)
    return dz


def adjoint(fact: KKTFactorization, z: FloatArray, g: FloatArray) -> FloatArray:
    """Reverse mode: dℓ/dθ̃ = −(∂F/∂θ̃)ᵀ K⁻ᵀ g for g = ∂ℓ/∂z.

    Entry 0 of the result (the constant of θ̃) is meaningless.

    Raises
    ------
    DerivativeError
        If K is singular (the derivative does not exist).
    """
    maps = fact.maps
    omega, residual = fact.solve(g)
    check_solved(fact, residual)
    grad = maps.F.apply_adjoint(omega)
    if maps.dep_rows.shape[0]:
        grad += maps.dep.apply_adjoint(maps.dK_adjoint(omega, z))
    return -grad


def objective_gradient(maps: KKTMaps, z: FloatArray) -> FloatArray:
    """∂f*/∂θ̃ of the canonical optimal value, by the envelope theorem.

    At the optimum the value equals the Lagrangian
    L = ½xᵀPx + qᵀx + r + νᵀ(Ax − b) = ½ zᵀK z + fᵀz + r, whose partial
    derivative in θ (z held fixed) is the derivative of the optimal value:

        ∂f*/∂θ̃ = ½ (∂k/∂θ̃)ᵀ h(z, z) + Fmapᵀ z + r,

    with h as in :func:`adjoint`. No solve is needed. Entry 0 is meaningless.
    """
    grad = maps.F.apply_adjoint(z)
    if maps.dep_rows.shape[0]:
        grad += 0.5 * maps.dep.apply_adjoint(maps.dK_adjoint(z, z))
    np.add.at(grad, maps.r_index, maps.r_value)
    return grad


def dF_dtheta(maps: KKTMaps, z: FloatArray, columns: NDArray[np.int64]) -> sp.csc_matrix:
    """The sparse matrix ∂F/∂θ̃[:, columns] = (∂K/∂θ̃) z + Fmap at the point z."""
    Kc = sp.csc_matrix(maps.K.matrix[:, columns])
    rows, cols = maps.rows, maps.cols
    coo = Kc.tocoo()
    e = coo.row
    r, c = rows[e], cols[e]
    off = r != c
    data = np.concatenate([coo.data * z[c], coo.data[off] * z[r[off]]])
    out_rows = np.concatenate([r, c[off]])
    out_cols = np.concatenate([coo.col, coo.col[off]])
    D = sp.csc_matrix((data, (out_rows, out_cols)), shape=(maps.dim, columns.shape[0]))
    return sp.csc_matrix(D + maps.F.matrix[:, columns])


#: Right-hand sides solved per block in :func:`jacobian_block` (bounds its memory).
JACOBIAN_CHUNK = 256


def jacobian_block(fact: KKTFactorization, z: FloatArray, out_rows: NDArray[np.int64],
                   columns: NDArray[np.int64]) -> FloatArray:
    """dz[out_rows]/dθ̃[columns], by forward or reverse passes, whichever is fewer.

    Costs min(len(out_rows), len(columns)) solves with the existing
    factorization, done in blocks of :data:`JACOBIAN_CHUNK` right-hand sides,
    so that working memory beyond the result is O(JACOBIAN_CHUNK · (n + m)).
    """
    dim = fact.maps.dim
    n_out, n_col = out_rows.shape[0], columns.shape[0]
    J = np.empty((n_out, n_col))
    if n_col <= n_out:
        for start in range(0, n_col, JACOBIAN_CHUNK):
            cols = columns[start: start + JACOBIAN_CHUNK]
            D = dF_dtheta(fact.maps, z, cols)
            dz, residuals = fact.solve_many(-D.toarray())
            check_solved(fact, float(residuals.max(initial=0.0)))
            J[:, start: start + cols.shape[0]] = dz[out_rows, :]
        return J
    D = dF_dtheta(fact.maps, z, columns)
    for start in range(0, n_out, JACOBIAN_CHUNK):
        rows = out_rows[start: start + JACOBIAN_CHUNK]
        E = np.zeros((dim, rows.shape[0]))
        E[rows, np.arange(rows.shape[0])] = 1.0
        omega, residuals = fact.solve_many(E)
        check_solved(fact, float(residuals.max(initial=0.0)))
        J[start: start + rows.shape[0], :] = -np.asarray((D.T @ omega).T)
    return J
