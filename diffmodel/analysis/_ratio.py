"""The numbers behind ranging: the inequality rows at a point, the derivatives
of their slacks and multipliers along each parameter entry, and the ratio test.

At a solution with active set 𝒜, moving one parameter entry θₖ by t (the
others fixed) moves the solution along z + t·dz/dθₖ for as long as 𝒜 holds.
Each inequality row i of G x ≤ h gives one condition:

- a row outside 𝒜 keeps a nonnegative slack, sᵢ(t) = sᵢ + t·dsᵢ ≥ 0, with
  dsᵢ = dcᵢ − dMᵢ x − Mᵢ dx (s = c − M x for the stacked rows M, c);
- a row of 𝒜 keeps a nonnegative multiplier, λᵢ(t) = λᵢ + t·dλᵢ ≥ 0.

The first condition to fail on each side ends the interval: the row enters
𝒜 (its slack reaches zero) or leaves it (its multiplier does). When θₖ
enters only q, b and h, K does not depend on it and the path is exactly
affine in t, so the interval is exact; otherwise it is the first-order
interval of the linearized path.

Degenerate rows. A weakly active row (binding, zero multiplier) sits in K
as binding: it leaves at t = 0 on the side where dλᵢ < 0, so the interval
is empty on that side. A binding row that depends linearly on other
binding rows (kept out of K) changes status at t = 0 on both sides as soon
as its slack moves (dsᵢ ≠ 0): it leaves on the side where its slack opens
and, on the other, would be violated, so it displaces one of the rows it
depends on.

The derivatives come from the point's own factorization, by forward passes
(one per parameter entry, :func:`diffmodel.diff.jacobian`) or reverse passes
(one per inequality row, :func:`diffmodel.diff.adjoint_block` with the row's
functional as the seed), whichever are fewer, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..diff import adjoint_block, jacobian
from ..point import Point
from ..tolerances import DEGENERATE_TOL, EPS
from ._common import BoolArray, FloatArray, IntArray, progress_bar
from .blocks import CHUNK_BUDGET, MAX_CHUNK

__all__ = ["RowState", "Ends", "row_state", "range_steps", "ENTERS", "LEAVES", "DISPLACES",
           "DOMAIN", "NO_EVENT"]

CALL = "ranging()"

#: Events at an end of a range (codes in :class:`Ends`).
NO_EVENT, ENTERS, LEAVES, DISPLACES, DOMAIN = 0, 1, 2, 3, 4
#: A slack derivative smaller than this times the magnitude of its terms
#: (|dc − dM x| + |M dx|) is cancellation noise: treated as zero.
_NOISE = 1e3 * EPS


@dataclass(frozen=True, eq=False)
class RowState:
    """The inequality rows G x ≤ h of a point (indices among the inequalities).

    Attributes
    ----------
    G : scipy.sparse.csr_matrix of shape (m_ineq, n)
    slack : ndarray
        h − G x (zero, up to rounding, on binding rows).
    lam : ndarray
        The multipliers λ ≥ 0 (zero off the active set).
    active, weak, dependent : ndarray of bool
        Binding rows; weakly active rows; binding rows left out of K because
        they depend linearly on others.
    in_kkt : ndarray of bool
        The rows in K (binding rows that are not dependent).
    """

    G: sp.csr_matrix
    slack: FloatArray
    lam: FloatArray
    active: BoolArray
    weak: BoolArray
    dependent: BoolArray
    in_kkt: BoolArray


def _mask(size: int, idx: IntArray) -> BoolArray:
    out = np.zeros(size, dtype=bool)
    out[idx] = True
    return out


def row_state(point: Point) -> RowState:
    """The slacks, multipliers and status of every inequality row at ``point``."""
    problem, raw = point.problem, point.raw
    m_eq, m_ineq = problem.m_eq, problem.m_ineq
    G = sp.csr_matrix(problem.M_matrix(point.data)[m_eq:])
    slack = np.asarray(point.data.c[m_eq:] - G @ point.x, dtype=np.float64)
    in_kkt = _mask(m_ineq, point.rows[point.rows >= m_eq] - m_eq)
    return RowState(G=G, slack=slack, lam=np.array(point.y[m_eq:]),
                    active=_mask(m_ineq, raw.active), weak=_mask(m_ineq, raw.weak),
                    dependent=_mask(m_ineq, raw.dependent), in_kkt=in_kkt)


@dataclass
class Ends:
    """Per parameter entry (column): the step t to each end of its range, the
    inequality row that ends it there (−1: none) and the event (codes above)."""

    low: FloatArray
    high: FloatArray
    low_row: IntArray
    high_row: IntArray
    low_event: IntArray
    high_event: IntArray

    @classmethod
    def unbounded(cls, size: int) -> Ends:
        return cls(np.full(size, -np.inf), np.full(size, np.inf), np.full(size, -1),
                   np.full(size, -1), np.zeros(size, dtype=np.int64),
                   np.zeros(size, dtype=np.int64))


@dataclass
class _Reducer:
    """The ratio test, fed blocks of derivatives (rows × columns) in any order;
    ties go to the lower row.

    Rounding. Where the active rows pin some of x (at a vertex, say), the
    derivatives of those entries are zero but computed as rounding noise,
    which would end ranges at absurd steps. In the equilibrated units of K
    (ẑ = z / s) that noise is at most about ``eta`` times the largest
    |dŷ| of a row in K (``sigma``, per column): a multiplier derivative with
    |dλ̂| ≤ eta · sigma, or a slack derivative below ``eta · sigma ·
    Σⱼ |Gᵢⱼ| sⱼ`` or cancelling to rounding against the magnitude of its
    terms, is taken as zero. ``sigma`` must be complete for a column before
    any of its rows is added.
    """

    state: RowState
    tol: float
    eta: float
    ends: Ends
    sigma: FloatArray
    g_scale: FloatArray  # per inequality row: Σⱼ |Gᵢⱼ| sⱼ
    weak_phi: dict[int, FloatArray] = field(default_factory=dict)

    def add_scale(self, c0: int, dy_hat: FloatArray) -> None:
        """Take in |dŷ| of rows in K for the columns c0:c0 + dy_hat.shape[1]."""
        if dy_hat.shape[0]:
            c1 = c0 + dy_hat.shape[1]
            np.maximum(self.sigma[c0:c1], np.abs(dy_hat).max(axis=0), out=self.sigma[c0:c1])

    def add(self, rows: IntArray, c0: int, phi: FloatArray, terms: FloatArray,
            phi_hat: FloatArray) -> None:
        """Take in φ = d(λ or s)/dθ for ``rows`` and the columns c0:c0 + φ.shape[1]:
        ``terms`` are the magnitudes of the terms of each slack derivative (rows
        outside K) and ``phi_hat`` φ in equilibrated units (rows in K)."""
        st = self.state
        order = np.argsort(rows, kind="stable")  # ties go to the lower row
        rows, phi, terms, phi_hat = rows[order], phi[order], terms[order], phi_hat[order]
        kkt, weak, dep = st.in_kkt[rows], st.weak[rows], st.dependent[rows]
        sigma = self.sigma[None, c0: c0 + phi.shape[1]]
        for i in np.flatnonzero(weak):
            self.weak_phi.setdefault(int(rows[i]), np.zeros(self.sigma.shape[0]))[
                c0: c0 + phi.shape[1]] = phi_hat[i]
        noise = np.where(kkt[:, None], np.abs(phi_hat) <= self.eta * sigma,
                         np.abs(phi) <= np.maximum(_NOISE * terms, self.eta * sigma
                                                   * self.g_scale[rows][:, None]))
        regular = ~weak & ~dep
        if regular.any():
            r = rows[regular]
            P = np.where(noise[regular], 0.0, phi[regular])
            v = np.where(st.in_kkt[r], st.lam[r], st.slack[r])[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = -v / P
            event = np.where(st.in_kkt[r], LEAVES, ENTERS)[:, None]
            self._take(r, c0, np.where(P < 0, t, np.inf), np.where(P > 0, t, -np.inf),
                       event, event)
        if dep.any():
            D = phi[dep]
            moving = ~noise[dep] & (np.abs(D) > self.tol * terms[dep])
            self._take(rows[dep], c0, np.where(moving, 0.0, np.inf),
                       np.where(moving, -0.0, -np.inf), np.where(D > 0, LEAVES, DISPLACES),
                       np.where(D < 0, LEAVES, DISPLACES))

    def _take(self, rows: IntArray, c0: int, up: FloatArray, down: FloatArray,
              up_event: IntArray, down_event: IntArray) -> None:
        """Keep, per column, the nearest end on each side (strictly nearer wins)."""
        e, cols = self.ends, np.arange(c0, c0 + up.shape[1])
        up_event = np.broadcast_to(up_event, up.shape)
        down_event = np.broadcast_to(down_event, down.shape)
        i = np.argmin(up, axis=0)
        best = up[i, cols - c0]
        better = (best < e.high[cols]) | ((best == e.high[cols]) & (best < np.inf)
                                         & (rows[i] < e.high_row[cols]))
        e.high[cols[better]] = best[better]
        e.high_row[cols[better]] = rows[i[better]]
        e.high_event[cols[better]] = up_event[i[better], cols[better] - c0]
        i = np.argmax(down, axis=0)
        best = down[i, cols - c0]
        better = (best > e.low[cols]) | ((best == e.low[cols]) & (best > -np.inf)
                                        & (rows[i] < e.low_row[cols]))
        e.low[cols[better]] = best[better]
        e.low_row[cols[better]] = rows[i[better]]
        e.low_event[cols[better]] = down_event[i[better], cols[better] - c0]

    def finish(self) -> Ends:
        """The ends, once the weakly active rows are judged: a weak row leaves at t = 0
        on the side where |dλ̂| exceeds ``tol`` times the column's ``sigma``."""
        tol = self.tol * self.sigma
        for row, phi in sorted(self.weak_phi.items()):
            rows = np.array([row])
            self._take(rows, 0, np.where(phi < -tol, 0.0, np.inf)[None, :],
                       np.where(phi > tol, -0.0, -np.inf)[None, :],
                       np.array([[LEAVES]]), np.array([[LEAVES]]))
        return self.ends


def _explicit(point: Point, rows: IntArray) -> sp.csc_matrix:
    """∂(c − M x)/∂θ̃ with x held fixed, for the inequality rows ``rows``:
    dc − dM x, as a sparse (len(rows), n_theta + 1) matrix."""
    problem = point.problem
    global_rows = problem.m_eq + rows
    E = sp.csr_matrix(problem.c.map.matrix)[global_rows]
    M = problem.M
    if M.dep.shape[0] and rows.shape[0]:
        pos = np.full(problem.layout.rows, -1)
        pos[global_rows] = np.arange(rows.shape[0])
        e = np.flatnonzero(pos[M.dep_row] >= 0)
        W = sp.csr_matrix((point.x[M.dep_col[e]], (pos[M.dep_row[e]], e)),
                          shape=(rows.shape[0], M.dep.shape[0]))
        E = E - W @ sp.csr_matrix(M.dep_map.matrix)
    return sp.csc_matrix(E)


def _kkt_scale(point: Point) -> tuple[FloatArray, FloatArray]:
    """Equilibration scales of the rows in K (by position in ``point.rows``) and of x."""
    s = point.factorization.scale
    n = point.problem.n
    return s[n:], s[:n]


def _forward(point: Point, st: RowState, cols: IntArray, red: _Reducer,
             progress: bool | None) -> int:
    """Forward passes, one per parameter entry, in chunks of columns."""
    n, m_eq = point.problem.n, point.problem.m_eq
    kkt, non = np.flatnonzero(st.in_kkt), np.flatnonzero(~st.in_kkt)
    rows_k = point.rows  # all rows in K: equalities, then active inequality rows
    out = np.concatenate([np.arange(n), n + rows_k])
    row_scale, _ = _kkt_scale(point)
    where = np.full(point.problem.layout.rows, -1)
    where[rows_k] = np.arange(rows_k.shape[0])
    kkt_pos = where[m_eq + kkt]  # positions of the active inequality rows in K
    E, G_non = _explicit(point, non), st.G[non]
    rows = np.arange(st.slack.shape[0])
    dim = n + point.problem.layout.rows
    chunk = int(np.clip(CHUNK_BUDGET // (3 * dim + out.shape[0]), 1, MAX_CHUNK))
    solves = 0
    bar = progress_bar(cols.shape[0], "ranging (forward passes)", progress)
    try:
        for c0 in range(0, cols.shape[0], chunk):
            K = cols[c0: c0 + chunk]
            J = jacobian(point, out, K, CALL)
            solves += min(K.shape[0], out.shape[0])
            dy_hat = J[n:] / row_scale[:, None]
            red.add_scale(c0, dy_hat)
            lin = -(G_non @ J[:n])
            explicit = E[:, K].toarray()
            phi = np.empty((rows.shape[0], K.shape[0]))
            terms, phi_hat = np.empty_like(phi), np.zeros_like(phi)
            phi[kkt], terms[kkt], phi_hat[kkt] = J[n + kkt_pos], 0.0, dy_hat[kkt_pos]
            phi[non], terms[non] = explicit + lin, np.abs(explicit) + np.abs(lin)
            red.add(rows, c0, phi, terms, phi_hat)
            bar.update(K.shape[0])
    finally:
        bar.close()
    return solves


#: Reverse passes keep the derivatives of the rows in K (rows × parameter
#: entries) for a second look when there are at most this many; beyond, those
#: rows are solved again once the noise scale is known.
_KEEP = 4_000_000


@dataclass
class _Seeds:
    """What reverse passes need to turn rows of M into seeds and derivatives."""

    point: Point
    st: RowState
    cols: IntArray
    where: IntArray  # position of each row of M in K, −1 outside
    non_pos: IntArray  # position of each inequality row among those outside K
    E: sp.csr_matrix
    row_scale: FloatArray

    def derivatives(self, S: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """φ, terms and φ̂ of the rows S of M over every column (one solve per row)."""
        point, st, cols = self.point, self.st, self.cols
        problem = point.problem
        n, m_eq, m = problem.n, problem.m_eq, problem.layout.rows
        in_k = self.where[S] >= 0
        GX, GY = np.zeros((n, S.shape[0])), np.zeros((m, S.shape[0]))
        GX[:, ~in_k] = -st.G[S[~in_k] - m_eq].toarray().T
        GY[S[in_k], np.flatnonzero(in_k)] = 1.0
        X = np.broadcast_to(point.x[:, None], (n, S.shape[0]))
        Y = np.broadcast_to(point.y[:, None], (m, S.shape[0]))
        D = adjoint_block(problem, point.factorization, point.rows, X, Y, GX, GY, call=CALL)
        phi = np.ascontiguousarray(D[cols].T)
        phi_hat = phi / np.where(in_k, self.row_scale[np.maximum(self.where[S], 0)],
                                 1.0)[:, None]
        terms = np.zeros_like(phi)
        if (~in_k).any():
            explicit = self.E[self.non_pos[S[~in_k] - m_eq]][:, cols].toarray()
            terms[~in_k] = np.abs(explicit) + np.abs(phi[~in_k])
            phi[~in_k] += explicit
        return phi, terms, phi_hat


def _reverse(point: Point, st: RowState, cols: IntArray, red: _Reducer,
             progress: bool | None) -> int:
    """Reverse passes, one per row of M (seed: a row's dy, or −Mᵢ dx for an inequality
    outside K), in chunks: first the rows in K, which set the noise scale of each
    column, then the others."""
    problem = point.problem
    n, m_eq, m = problem.n, problem.m_eq, problem.layout.rows
    where = np.full(m, -1)
    where[point.rows] = np.arange(point.rows.shape[0])
    non = np.flatnonzero(~st.in_kkt)
    non_pos = np.full(st.slack.shape[0], -1)
    non_pos[non] = np.arange(non.shape[0])
    seeds = _Seeds(point, st, cols, where, non_pos, sp.csr_matrix(_explicit(point, non)),
                   _kkt_scale(point)[0])
    chunk = int(np.clip(CHUNK_BUDGET // (problem.layout.n_theta + 1 + n + m
                                         + cols.shape[0]), 1, MAX_CHUNK))
    keep = point.rows.shape[0] * cols.shape[0] <= _KEEP
    chunks = [point.rows[i: i + chunk] for i in range(0, point.rows.shape[0], chunk)]
    total = point.rows.shape[0] * (1 if keep else 2) + non.shape[0]
    kept: list[tuple[IntArray, FloatArray, FloatArray, FloatArray]] = []
    bar = progress_bar(total, "ranging (reverse passes)", progress)
    try:
        for S in chunks:  # the rows in K: the noise scale of every column
            phi, terms, phi_hat = seeds.derivatives(S)
            red.add_scale(0, phi_hat)
            if keep:
                kept.append((S, phi, terms, phi_hat))
            bar.update(S.shape[0])
        for S in chunks:
            if keep:
                _, phi, terms, phi_hat = kept.pop(0)
            else:
                phi, terms, phi_hat = seeds.derivatives(S)
                bar.update(S.shape[0])
            ineq = S >= m_eq
            red.add(S[ineq] - m_eq, 0, phi[ineq], terms[ineq], phi_hat[ineq])
        for r0 in range(0, non.shape[0], chunk):
            S = m_eq + non[r0: r0 + chunk]
            phi, terms, phi_hat = seeds.derivatives(S)
            red.add(S - m_eq, 0, phi, terms, phi_hat)
            bar.update(S.shape[0])
    finally:
        bar.close()
    return int(total)


def range_steps(point: Point, st: RowState, cols: IntArray, progress: bool | None
                ) -> tuple[Ends, str, int]:
    """The steps t to both ends of the range of each θ̃ entry in ``cols``.

    Returns the ends, the mode of the passes (``"forward"``, ``"reverse"`` or
    ``"none"``) and the number of solves. Needs a differentiable point.
    """
    ends = Ends.unbounded(cols.shape[0])
    m_ineq = st.slack.shape[0]
    if m_ineq == 0 or cols.shape[0] == 0:
        return ends, "none", 0
    accuracy = point.raw.accuracy
    _, x_scale = _kkt_scale(point)
    g_scale = np.asarray(abs(st.G) @ x_scale, dtype=np.float64)
    red = _Reducer(st, max(DEGENERATE_TOL, 100.0 * accuracy), max(_NOISE, 100.0 * accuracy),
                   ends, np.zeros(cols.shape[0]), g_scale)
    if point.rows.shape[0] + int((~st.in_kkt).sum()) < cols.shape[0]:
        solves, mode = _reverse(point, st, cols, red, progress), "reverse"
    else:
        solves, mode = _forward(point, st, cols, red, progress), "forward"
    return red.finish(), mode, solves
