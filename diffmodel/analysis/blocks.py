"""Jacobian blocks of a report: dz/dθ streamed in chunks, summarized, ranked.

The blocks ∂output/∂parameter of the solution Jacobian, z = (x, ν), are
computed in chunks of forward or reverse passes with the solution's own
factorization (:func:`diffmodel.diff.jacobian`), whichever side is smaller,
into accumulators that keep running norms, column norms and the largest
entries, and the dense block only when asked. Used by
:func:`~diffmodel.analysis.sensitivity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..diff import JACOBIAN_CHUNK, jacobian
from ..point import Point
from ._common import BoolArray, FloatArray, IntArray, elasticity, progress_bar, top_indices
from .labels import entry_index
from .results import BlockSensitivity, BlockValues, Entry, Influence, Ranking
from .significance import Resolution, block_thresholds, significant

__all__ = ["CHUNK_BUDGET", "MAX_CHUNK", "Output", "Param", "Accumulators", "chunk_size",
           "stream_blocks", "summarize_blocks", "rankings"]

#: Entries of one working array (passes of a chunk times the longer side plus
#: the KKT dimension). :func:`diffmodel.diff.jacobian` holds about ten such
#: arrays at once, so a chunk of passes takes at most about 20 MB (4 MB each).
CHUNK_BUDGET = 500_000
#: At most this many passes per chunk.
MAX_CHUNK = JACOBIAN_CHUNK

CALL = "sensitivity()"


@dataclass(frozen=True)
class Output:
    """A reported output: its entries in the stacked vector (x, y of all rows)."""

    name: str
    kind: str  # "primal" or "dual"
    shape: tuple[int, ...]
    rows: IntArray


@dataclass(frozen=True)
class Param:
    """A reported parameter: its entries in θ̃."""

    name: str
    shape: tuple[int, ...]
    cols: IntArray


# ---------------------------------------------------------------- Jacobian blocks


class BlockAccumulator:
    """Running norm, column norms, largest entries (and optionally the dense
    block) of one ∂output/∂parameter block, fed piece by piece.

    ``inverse_weights`` holds 1/sᵢ for the output's entries (the solver's
    equilibration, 0 outside the KKT system): the accumulator keeps each
    column's largest entry in those units too, the scale of its threshold
    (:mod:`.significance`). :meth:`settle` then sets the entries at or below
    the threshold to zero.
    """

    def __init__(self, rows: int, cols: int, k: int, store: bool,
                 inverse_weights: FloatArray | None = None) -> None:
        self.k = k
        self.sumsq = 0.0
        self.colsq = np.zeros(cols)
        self.colmax = np.zeros(cols)
        self.colhat = np.zeros(cols)
        self.inverse = (np.ones(rows) if inverse_weights is None
                        else np.asarray(inverse_weights, dtype=np.float64))
        self.threshold = 0.0
        self.vals: FloatArray = np.zeros(0)
        self.ii: IntArray = np.zeros(0, dtype=np.int64)
        self.jj: IntArray = np.zeros(0, dtype=np.int64)
        self.matrix: FloatArray | None = np.zeros((rows, cols)) if store else None

    def add(self, piece: FloatArray, i0: int, j0: int) -> None:
        """Take in ``piece`` = block[i0:i0 + rows, j0:j0 + cols]."""
        rows, cols = slice(i0, i0 + piece.shape[0]), slice(j0, j0 + piece.shape[1])
        sq = piece * piece
        self.sumsq += float(sq.sum())
        self.colsq[cols] += sq.sum(axis=0)
        if piece.shape[0]:
            mag = np.abs(piece)
            np.maximum(self.colmax[cols], mag.max(axis=0), out=self.colmax[cols])
            hat = (mag * self.inverse[rows, None]).max(axis=0)
            np.maximum(self.colhat[cols], hat, out=self.colhat[cols])
        if self.matrix is not None:
            self.matrix[rows, cols] = piece
        flat = piece.ravel()
        if flat.shape[0] > self.k:
            idx = np.argpartition(np.abs(flat), flat.shape[0] - self.k)[-self.k:]
        else:
            idx = np.arange(flat.shape[0])
        i, j = np.divmod(idx, piece.shape[1])
        vals = np.concatenate([self.vals, flat[idx]])
        ii = np.concatenate([self.ii, i + i0])
        jj = np.concatenate([self.jj, j + j0])
        if vals.shape[0] > self.k:
            keep = np.argpartition(np.abs(vals), vals.shape[0] - self.k)[-self.k:]
            vals, ii, jj = vals[keep], ii[keep], jj[keep]
        self.vals, self.ii, self.jj = vals, ii, jj

    def settle(self, threshold: float) -> None:
        """Count every entry at or below ``threshold`` in magnitude as zero: in the
        dense block, the column norms, the norm and the largest entries. A
        capped block drops the columns whose every entry is at or below it."""
        self.threshold = threshold
        if self.matrix is not None:
            self.matrix = significant(self.matrix, threshold)
            self.colsq = (self.matrix * self.matrix).sum(axis=0)
        else:
            self.colsq = np.where(self.colmax <= threshold, 0.0, self.colsq)
        self.sumsq = float(self.colsq.sum())
        keep = np.abs(self.vals) > threshold
        self.vals, self.ii, self.jj = self.vals[keep], self.ii[keep], self.jj[keep]

    def largest(self) -> tuple[FloatArray, IntArray, IntArray]:
        """Kept entries (values, rows, columns): largest magnitude first, ties by position."""
        order = np.lexsort((self.jj, self.ii, -np.abs(self.vals)))
        return self.vals[order], self.ii[order], self.jj[order]


Accumulators = dict[tuple[str, str], BlockAccumulator]


def live_rows(point: Point, out: IntArray) -> BoolArray:
    """Which entries of the stacked (x, y) have a nonzero derivative in general:
    the variables and the rows of M in the KKT system (inactive rows have none)."""
    n, m = point.problem.n, point.problem.layout.rows
    in_kkt = np.zeros(m + 1, dtype=bool)  # (a spare entry so that primal rows index safely)
    in_kkt[point.rows] = True
    return np.asarray((out < n) | in_kkt[np.where(out < n, m, out - n)], dtype=bool)


def chunk_size(other: int, point: Point) -> int:
    """Passes per chunk: a chunk's arrays stay within :data:`CHUNK_BUDGET` entries."""
    dim = point.problem.n + point.problem.layout.rows
    return int(np.clip(CHUNK_BUDGET // (other + dim), 1, MAX_CHUNK))


def stream_blocks(point: Point, outs: list[Output], pars: list[Param], k: int,
                  store: bool, progress: bool | None, res: Resolution
                  ) -> tuple[Accumulators, str, int]:
    """Every block, chunk by chunk of passes, into accumulators, then settled:
    entries at or below their block's threshold (:mod:`.significance`) count as zero.

    Returns the accumulators by (output, parameter), the mode of the passes
    (``"forward"``, ``"reverse"`` or ``"none"``) and the number of solves.
    """
    acc = {(o.name, p.name): BlockAccumulator(o.rows.shape[0], p.cols.shape[0], k, store,
                                              res.inverse_weights(o.rows))
           for o in outs for p in pars}
    R, C = sum(o.rows.shape[0] for o in outs), sum(p.cols.shape[0] for p in pars)
    if not (R and C):
        return acc, "none", 0
    all_rows = np.concatenate([o.rows for o in outs])
    all_cols = np.concatenate([p.cols for p in pars])
    live = live_rows(point, all_rows)
    reverse = int(live.sum()) < C
    mode = "reverse" if reverse else "forward"
    passes, other = (R, C) if reverse else (C, R)
    chunk = chunk_size(other, point)
    solves = 0
    bar = progress_bar(passes, f"sensitivity ({mode} passes)", progress)
    try:
        for s0 in range(0, passes, chunk):
            s1 = min(s0 + chunk, passes)
            rows, cols = (slice(s0, s1), slice(0, C)) if reverse else (slice(0, R),
                                                                        slice(s0, s1))
            J = jacobian(point, all_rows[rows], all_cols[cols], CALL)
            solves += min(int(live[rows].sum()), cols.stop - cols.start)
            _scatter(acc, J, rows.start, cols.start, outs, pars)
            del J
            bar.update(s1 - s0)
    finally:
        bar.close()
    _settle(acc, outs, pars, res)
    return acc, mode, solves


def _settle(acc: Accumulators, outs: list[Output], pars: list[Param], res: Resolution
            ) -> None:
    """Give every block its threshold and zero the entries within it."""
    scales = {}
    for p in pars:
        scale = np.zeros(p.cols.shape[0])
        for o in outs:
            np.maximum(scale, acc[o.name, p.name].colhat, out=scale)
        scales[p.name] = scale
    thresholds = block_thresholds(res, {o.name: o.rows for o in outs}, scales, list(acc))
    for key, a in acc.items():
        a.settle(thresholds[key])


def _scatter(acc: Accumulators, J: FloatArray, r0: int, c0: int, outs: list[Output],
             pars: list[Param]) -> None:
    """Hand each block's part of the chunk J = Jacobian[r0:, c0:] to its accumulator."""
    r1, c1 = r0 + J.shape[0], c0 + J.shape[1]
    row_start = 0
    for o in outs:
        a, b = max(r0, row_start), min(r1, row_start + o.rows.shape[0])
        col_start = 0
        for p in pars:
            c, d = max(c0, col_start), min(c1, col_start + p.cols.shape[0])
            if a < b and c < d:
                acc[o.name, p.name].add(J[a - r0: b - r0, c - c0: d - c0],
                                        a - row_start, c - col_start)
            col_start += p.cols.shape[0]
        row_start += o.rows.shape[0]


def summarize_blocks(acc: Accumulators, outs: list[Output], pars: list[Param],
                     theta: FloatArray, output_values: Mapping[str, FloatArray],
                     names: Mapping[str, tuple[str, ...]]
                     ) -> dict[tuple[str, str], BlockSensitivity]:
    """The summaries of the accumulated blocks, with their largest entries."""
    blocks = {}
    for o in outs:
        y = output_values[o.name]
        yscale = float(np.abs(y).max(initial=0.0))
        for p in pars:
            a = acc[o.name, p.name]
            vals, ii, jj = a.largest()
            t = theta[p.cols]
            el = elasticity(vals, t[jj], y[ii], yscale)
            largest = tuple(
                Entry(o.name, entry_index(int(i), o.shape), names[o.name][i], p.name,
                      entry_index(int(j), p.shape), names[p.name][j], float(v), float(e))
                for v, i, j, e in zip(vals, ii, jj, el))
            values = (BlockValues(y, t, names[o.name], names[p.name])
                      if a.matrix is not None else None)
            blocks[o.name, p.name] = BlockSensitivity(
                output=o.name, parameter=p.name, kind=o.kind, output_shape=o.shape,
                parameter_shape=p.shape, norm=float(np.sqrt(a.sumsq)),
                max_abs=float(abs(vals[0])) if vals.shape[0] else 0.0,
                largest=largest, jacobian=a.matrix, threshold=a.threshold, _values=values)
    return blocks


# ---------------------------------------------------------------- rankings


def _influences(scores: FloatArray, pars: list[Param], names: Mapping[str, tuple[str, ...]],
                k: int) -> tuple[Influence, ...]:
    """The ``k`` parameter entries with the largest scores (one score per entry of
    the reported parameters, in order)."""
    offsets = np.cumsum([0] + [p.cols.shape[0] for p in pars])
    out = []
    for idx in top_indices(scores, k):
        if not scores[idx] > 0.0:  # zero (or within its threshold): never ranked
            break
        pi = int(np.searchsorted(offsets, idx, side="right") - 1)
        p, j = pars[pi], int(idx - offsets[pi])
        out.append(Influence(p.name, entry_index(j, p.shape), names[p.name][j],
                             float(scores[idx])))
    return tuple(out)


def rankings(grad: FloatArray, acc: Accumulators, outs: list[Output], pars: list[Param],
             k: int, names: Mapping[str, tuple[str, ...]]) -> Ranking:
    """Rankings by |∂f*/∂θⱼ| and by Jacobian column norms (overall, per output).

    ``grad`` and the settled accumulators hold zeros for the numbers within
    their thresholds; entries of score zero are not ranked.
    """
    if not pars:
        return Ranking((), (), {o.name: () for o in outs})
    colsq = {o.name: np.concatenate([acc[o.name, p.name].colsq for p in pars]) for o in outs}
    objective = np.abs(np.concatenate([grad[p.cols] for p in pars]))
    total = np.zeros(objective.shape[0])
    for sq in colsq.values():
        total += sq
    return Ranking(
        objective=_influences(objective, pars, names, k),
        overall=_influences(np.sqrt(total), pars, names, k) if outs else (),
        per_output={o: _influences(np.sqrt(sq), pars, names, k) for o, sq in colsq.items()})

