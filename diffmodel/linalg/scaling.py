"""Symmetric equilibration of the KKT matrix (Ruiz scaling, powers of two).

A KKT matrix built from data in the user's units can have entries that span
many orders of magnitude: features of 1e3, weights from 1e-6 to 1e6, money in
dollars. Its condition number then reflects the units, not the problem, and a
factorization with a fixed regularization or a normwise acceptance test is
wrong by as much as the units are unbalanced. Scaling symmetrically,

    K̂ = S K S,    S = diag(s),   K z = r  ⇔  K̂ ẑ = S r,  z = S ẑ,

removes that: Ruiz's iteration (D. Ruiz, "A scaling algorithm to equilibrate
both rows and columns norms in matrices", RAL-TR-2001-034) divides each row
and column by the square root of its largest entry until every row of K̂ has
largest entry close to 1. OSQP and Clarabel do the same before their
factorizations. The factors here are rounded to powers of two, so scaling
and unscaling are exact in floating point: the scaled system has exactly the
same solution and the same componentwise backward errors as the original.

Each sweep costs O(nnz); a few sweeps suffice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._typing import FloatArray, IntArray
from ..tolerances import RUIZ_MAX_ITER, RUIZ_TOL

__all__ = ["row_max", "ruiz", "ruiz_dense"]



def row_max(indptr: IntArray, values: FloatArray, dim: int) -> FloatArray:
    """Largest entry of each row of a CSR matrix with nonnegative ``values``."""
    out = np.zeros(dim)
    counts = np.diff(indptr)
    nonempty = counts > 0
    if values.shape[0]:
        out[nonempty] = np.maximum.reduceat(values, indptr[:-1][nonempty])
    return out


def _power_of_two(x: FloatArray) -> FloatArray:
    """The power of two nearest to each (positive) entry, in log scale."""
    mantissa, exponent = np.frexp(x)  # x = mantissa · 2**exponent, mantissa in [0.5, 1)
    exponent = exponent - (mantissa < np.sqrt(0.5))
    return np.asarray(np.ldexp(1.0, exponent), dtype=np.float64)


def ruiz(indptr: IntArray, indices: IntArray, abs_data: FloatArray) -> FloatArray:
    """Scale factors s (powers of two) that equilibrate a symmetric matrix.

    Parameters
    ----------
    indptr, indices : ndarray
        The full symmetric matrix's pattern in CSR form (both triangles).
    abs_data : ndarray
        The absolute values of its entries (not modified).

    Returns
    -------
    s : ndarray of shape (dim,)
        ``diag(s) K diag(s)`` has largest entry within about a factor of two
        of 1 in every row that is not zero. Zero rows keep s = 1.
    """
    dim = indptr.shape[0] - 1
    starts = indptr[:-1]
    if dim and bool(np.all(indptr[1:] > starts)):  # no empty row (a KKT pattern's
        def maxima(values: FloatArray) -> FloatArray:  # diagonal is always stored)
            return np.asarray(np.maximum.reduceat(values, starts))
    else:
        def maxima(values: FloatArray) -> FloatArray:
            return row_max(indptr, values, dim)
    scaled = np.empty_like(abs_data)  # |kᵢⱼ| sⱼ, one buffer for every sweep

    def scaled_max(s: FloatArray) -> FloatArray:
        # (s[indices], not np.take(..., out=): with 32-bit indices np.take is
        # several times slower than indexing)
        np.multiply(s[indices], abs_data, out=scaled)
        return maxima(scaled)

    return _sweeps(scaled_max, maxima(abs_data))


def ruiz_dense(abs_k: FloatArray) -> FloatArray:
    """:func:`ruiz` for a dense symmetric matrix given as ``|K|`` (same factors).

    The row maxima are formed in the same order, sᵢ · max_j |kᵢⱼ| sⱼ, so the
    factors equal those of the sparse version bit for bit; a dense row
    maximum is several times faster than a segmented one for the small dense
    systems that take this path.
    """
    scaled = np.empty_like(abs_k)

    def scaled_max(s: FloatArray) -> FloatArray:
        np.multiply(abs_k, s[None, :], out=scaled)
        return np.asarray(scaled.max(axis=1))

    return _sweeps(scaled_max, abs_k.max(axis=1, initial=0.0))


def _sweeps(scaled_max: Callable[[FloatArray], FloatArray], first: FloatArray) -> FloatArray:
    """Ruiz's sweeps, given max_j |kᵢⱼ| sⱼ of each row i as a function of s,
    and its value ``first`` at s = 1. The row maxima of diag(s) K diag(s) are
    sᵢ · max_j |kᵢⱼ| sⱼ, exactly: the factors are powers of two (barring
    underflow)."""
    s = np.ones(first.shape[0])
    bound = np.log2(1.0 + RUIZ_TOL)
    for sweep in range(RUIZ_MAX_ITER):
        rmax = first if sweep == 0 else scaled_max(s) * s
        live = rmax > 0
        if live.all():  # (the usual case: no zero row, no masks)
            if np.abs(np.log2(rmax)).max() <= bound:
                break
            s = _power_of_two(s / np.sqrt(rmax))
            continue
        if not live.any() or np.abs(np.log2(rmax[live])).max() <= bound:
            break
        s[live] = _power_of_two(s[live] / np.sqrt(rmax[live]))
    return s
