"""Backward errors and condition estimates: what makes a solve trustworthy.

A residual that is small relative to ‖K‖‖z‖ says little about the error of a
badly scaled system (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., ch. 7 and 12). diffmodel accepts a computed ẑ of
K̂ ẑ = r̂ on the evidence of its **componentwise backward error** in the sense
of Arioli, Demmel and Duff (SIAM J. Matrix Anal. Appl. 10, 1989):

    ω₁ = max_{i ∈ I₁} |r̂ − K̂ẑ|ᵢ / (|K̂||ẑ| + |r̂|)ᵢ,
    ω₂ = max_{i ∈ I₂} |r̂ − K̂ẑ|ᵢ / ((|K̂||ẑ|)ᵢ + ‖K̂ᵢ‖∞ ‖ẑ‖∞),

where I₂ holds the rows whose terms cancel to the level of rounding
((|K̂||ẑ| + |r̂|)ᵢ ≤ 1000·N·ε·(‖K̂ᵢ‖∞‖ẑ‖∞ + |r̂ᵢ|)) and I₁ the others. ω = ω₁ + ω₂
bounds the relative change of each entry of the data that makes ẑ exact
(for the rows in I₁), which is invariant under the diagonal scaling of
:mod:`diffmodel.linalg.scaling`: it holds in the user's units. The relative
forward error in the equilibrated norm is then at most about
2·cond∞(K̂)·ω, with cond∞(K̂) = ‖K̂‖∞‖K̂⁻¹‖∞ estimated by Hager's method as
refined by Higham (LAPACK's ``xLACN2``), from a few solves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .._typing import FloatArray, IntArray
from ..tolerances import EPS

__all__ = [
    "EXTENDED",
    "EXTENDED_EPS",
    "ExactResidual",
    "ExtendedResidual",
    "backward_error",
    "backward_errors",
    "exact_dot",
    "inverse_norm_estimate",
]



def backward_error(residual: FloatArray, abs_kz: FloatArray, rhs: FloatArray,
                   row_norm: FloatArray, z_norm: float) -> float:
    """The componentwise backward error ω₁ + ω₂ of one solve (see the module doc).

    Parameters
    ----------
    residual : ndarray
        r̂ − K̂ẑ.
    abs_kz : ndarray
        |K̂||ẑ|.
    rhs : ndarray
        r̂.
    row_norm : ndarray
        ‖K̂ᵢ‖∞ for each row.
    z_norm : float
        ‖ẑ‖∞.
    """
    abs_r = np.abs(residual)
    abs_rhs = np.abs(rhs)
    den = abs_kz + abs_rhs
    row_scale = row_norm * z_norm
    small = den <= (1000.0 * residual.shape[0] * EPS) * (row_scale + abs_rhs)
    if not small.any():
        return float(np.max(abs_r / den, initial=0.0))
    big = ~small
    with np.errstate(divide="ignore", invalid="ignore"):
        w1 = float(np.max(abs_r[big] / den[big], initial=0.0))
        den2 = abs_kz[small] + row_scale[small]
        r2 = abs_r[small]
        ratio = np.where(den2 > 0, r2 / np.where(den2 > 0, den2, 1.0),
                         np.where(r2 > 0, np.inf, 0.0))
    return w1 + float(np.max(ratio, initial=0.0))


def backward_errors(residual: FloatArray, abs_kz: FloatArray, rhs: FloatArray,
                    row_norm: FloatArray, z_norms: FloatArray) -> FloatArray:
    """:func:`backward_error` for each column of blocks of shape (N, k).

    ``z_norms`` holds ‖ẑ‖∞ of each column.
    """
    abs_r = np.abs(residual)
    abs_rhs = np.abs(rhs)
    den = abs_kz + abs_rhs
    row_scale = row_norm[:, None] * z_norms[None, :]
    bound = row_scale + abs_rhs
    bound *= 1000.0 * residual.shape[0] * EPS
    small = den <= bound
    del bound
    if not small.any():  # (then every denominator is positive)
        abs_r /= den
        return np.asarray(np.max(abs_r, axis=0, initial=0.0), dtype=np.float64)
    row_scale += abs_kz  # the denominators of the rows in I₂
    np.copyto(den, row_scale, where=small)
    del row_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        abs_r /= den  # 0/0 (a zero row against a zero column) is no error: NaN → 0 below
    ratio = abs_r
    if not np.all(den > 0):
        ratio[np.isnan(ratio)] = 0.0
    w2 = np.max(np.where(small, ratio, 0.0), axis=0, initial=0.0)
    ratio[small] = 0.0
    w1 = np.max(ratio, axis=0, initial=0.0)
    return np.asarray(w1 + w2, dtype=np.float64)


def inverse_norm_estimate(solve: Callable[[FloatArray], FloatArray],
                          dim: int) -> tuple[float, FloatArray]:
    """Estimate ‖B‖₁ for a symmetric B = K̂⁻¹ given by ``solve`` (B v).

    Hager's method with Higham's refinements (N. J. Higham, ACM TOMS 14,
    1988, Algorithm 4.1; LAPACK ``xLACN2``): usually 4 or 5 solves, and a
    lower bound that is almost always within a factor of 3 of the truth.

    Returns
    -------
    estimate : float
    v : ndarray
        The vector B w of the final estimate, normalized: for a nearly
        singular K̂ it points along the near-null space.
    """
    if dim == 0:
        return 0.0, np.zeros(0)
    x = np.full(dim, 1.0 / dim)
    y = solve(x)
    est = float(np.abs(y).sum())
    best = y
    if dim == 1:
        return est, _unit(best)
    xi = np.sign(y)
    xi[xi == 0] = 1.0
    x = solve(xi)
    j = int(np.argmax(np.abs(x)))
    for _ in range(4):
        e = np.zeros(dim)
        e[j] = 1.0
        y = solve(e)
        est_old = est
        est = float(np.abs(y).sum())
        if est > est_old:
            best = y
        new_xi = np.sign(y)
        new_xi[new_xi == 0] = 1.0
        if np.array_equal(new_xi, xi) or est <= est_old:
            est = max(est, est_old)
            break
        xi = new_xi
        x = solve(xi)
        j_last, j = j, int(np.argmax(np.abs(x)))
        if np.abs(x[j_last]) == np.abs(x[j]):
            break
    alt = (np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)
           * (1.0 + np.arange(dim) / max(dim - 1, 1)))
    y = solve(alt)
    alt_est = 2.0 * float(np.abs(y).sum()) / (3.0 * dim)
    if alt_est > est:
        est, best = alt_est, y
    return est, _unit(best)


def _unit(v: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 and np.isfinite(norm) else v


# Veltkamp's splitting constant 2**27 + 1 (Dekker, Numer. Math. 18, 1971).
_SPLITTER = 134217729.0


def _split(a: FloatArray) -> tuple[FloatArray, FloatArray]:
    """a = hi + lo exactly, each half with at most 26 significant bits."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


#: Whether np.longdouble carries at least 64 significant bits (x86-64 Linux).
EXTENDED = float(np.finfo(np.longdouble).eps) < 1e-18
#: Unit roundoff of np.longdouble where it is extended, 2⁻⁶⁴.
EXTENDED_EPS = float(np.finfo(np.longdouble).eps) / 2 if EXTENDED else 0.0
#: Cancellation (|aᵀb| over |a|ᵀ|b|) down to which an extended-precision sum
#: is still accurate to the double roundoff of the result.
_EXTENDED_CANCEL = 1e-3


def exact_dot(a: FloatArray, b: FloatArray) -> float:
    """aᵀb accurate to the roundoff of the result, however much its terms cancel.

    In 80-bit extended precision where the platform has it and the terms
    cancel by less than three digits (its error, about 1e-19 of the terms'
    magnitude, is then below the result's double roundoff); otherwise with
    exact products and one rounding of their exact sum (:func:`math.fsum`).
    """
    if EXTENDED:
        al, bl = a.astype(np.longdouble), b.astype(np.longdouble)
        v = np.dot(al, bl)
        if abs(v) >= _EXTENDED_CANCEL * np.dot(np.abs(al), np.abs(bl)):
            return float(v)
    p = a * b
    ah, al_ = _split(a)
    bh, bl_ = _split(b)
    err = ((ah * bh - p) + ah * bl_ + al_ * bh) + al_ * bl_
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(err))):
        return float(p.sum())
    return math.fsum(np.concatenate([p, err]).tolist())


class ExtendedResidual:
    """r = r̂ − K̂ẑ computed in 80-bit extended precision (where it exists).

    Each row's error is about (row nonzeros)·2⁻⁶⁴ of (|K̂||ẑ| + |r̂|)ᵢ: 2048
    times smaller than in double precision, at the cost of a sparse product
    in long double (a few times a double one). Refinement with it reaches a
    relative error of about cond(K̂)·1e-19, the correctly rounded solution for
    cond(K̂) up to about 1e3 and an error far below the double roundoff's
    cond(K̂)·1e-16 beyond; :class:`ExactResidual` takes over where that is
    not enough.
    """

    exact = False

    def __init__(self, indptr: IntArray, indices: IntArray, data: FloatArray) -> None:
        dim = indptr.shape[0] - 1
        self._K = sp.csr_matrix((data.astype(np.longdouble), indices, indptr), shape=(dim, dim))

    def __call__(self, z: FloatArray, rhs: FloatArray) -> FloatArray | None:
        """The residual, or None if it overflows (use plain arithmetic)."""
        r = np.asarray(rhs.astype(np.longdouble) - self._K @ z.astype(np.longdouble))
        out = r.astype(np.float64)
        return out if np.all(np.isfinite(out)) else None


class ExactResidual:
    """r = r̂ − K̂ẑ with every product exact and every row sum correctly rounded.

    Each product K̂ᵢⱼ ẑⱼ is split into two doubles whose sum is exact (Dekker's
    TwoProduct), and each row's terms are summed by :func:`math.fsum`, which
    rounds the exact sum once. The residual is then accurate to a relative
    1e-16 *of itself*, however much its terms cancel, which is what
    refinement needs to converge to the correctly rounded solution when
    cond(K̂) is large (J. Demmel et al., ACM TOMS 32, 2006). It costs a few
    microseconds per stored entry: it is used only for ill-conditioned systems.
    """

    exact = True

    def __init__(self, indptr: IntArray, indices: IntArray, data: FloatArray) -> None:
        dim = indptr.shape[0] - 1
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(dim), counts)
        row_ids = np.concatenate([np.arange(dim), rows, rows])
        self._order = np.argsort(row_ids, kind="stable")
        ends = np.cumsum(1 + 2 * counts)
        self._bounds = list(zip((ends - 1 - 2 * counts).tolist(), ends.tolist()))
        self._indices = indices
        self._data = data
        self._hi, self._lo = _split(data)

    def __call__(self, z: FloatArray, rhs: FloatArray) -> FloatArray | None:
        """The residual, or None if an intermediate overflows (use plain arithmetic)."""
        zj = z[self._indices]
        p = self._data * zj
        zh, zl = _split(zj)
        err = ((self._hi * zh - p) + self._hi * zl + self._lo * zh) + self._lo * zl
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(err))):
            return None
        terms = np.concatenate([rhs, -p, -err])[self._order].tolist()
        return np.array([math.fsum(terms[a:b]) for a, b in self._bounds])
