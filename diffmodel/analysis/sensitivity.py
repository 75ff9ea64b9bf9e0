"""The sensitivity engine: a :class:`SensitivityReport` at one solution.

From the solution's verified point and its own factorization of K (see
:mod:`diffmodel.diff`): the objective sensitivity ∂f*/∂θ and its
elasticities (envelope theorem, no solve); the shadow price of every
constraint; blocks of the solution Jacobian dz/dθ, z = (x, ν), computed in
chunks of forward or reverse passes (whichever side is smaller) with running
norms and largest entries, stored densely only within ``max_entries``; and
rankings of the parameter entries. :func:`sensitivity` runs these steps in
order; each is a function below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._packing import Packer
from .._validation import check_names
from ..compiled import Layout
from ..diff import JACOBIAN_CHUNK, check_differentiable, jacobian, objective_gradient
from ..errors import ModelError
from ..point import Point
from ._common import (
    BoolArray, FloatArray, IntArray, check_progress, elasticity, progress_bar, solution_parts,
    top_indices,
)
from .labels import Labels, check_labels, constraint_sides, entry_index, label_table
from .results import (
    BlockSensitivity, BlockValues, Entry, Influence, ObjectiveSensitivity, Ranking,
    SensitivityReport, ShadowPrice, Sweep,
)
from .whatif import sweep as run_sweep

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    from ..solution import Solution

__all__ = ["sensitivity", "CHUNK_BUDGET", "MAX_CHUNK"]

#: Entries of one working array (passes of a chunk times the longer side plus
#: the KKT dimension). :func:`diffmodel.diff.jacobian` holds about ten such
#: arrays at once, so a chunk of passes takes at most about 20 MB (4 MB each).
CHUNK_BUDGET = 500_000
#: At most this many passes per chunk.
MAX_CHUNK = JACOBIAN_CHUNK

CALL = "sensitivity()"


@dataclass(frozen=True)
class _Output:
    """A reported output: its entries in the stacked vector (x, y of all rows)."""

    name: str
    kind: str  # "primal" or "dual"
    shape: tuple[int, ...]
    rows: IntArray


@dataclass(frozen=True)
class _Param:
    """A reported parameter: its entries in θ̃."""

    name: str
    shape: tuple[int, ...]
    cols: IntArray


@dataclass(frozen=True)
class _Request:
    """The validated arguments of :func:`sensitivity`."""

    k: int
    outputs: list[str] | None
    params: list[str]
    labels: dict[str, object]
    sweeps: dict[str, ArrayLike]


def sensitivity(
    solution: Solution,
    of: str | Sequence[str] | None = None,
    wrt: str | Sequence[str] | None = None,
    labels: Labels | None = None,
    top: int = 10,
    max_entries: int = 2_000_000,
    progress: bool | None = None,
    sweep: Mapping[str, ArrayLike] | None = None,
) -> SensitivityReport:
    """A sensitivity report at a solution.

    Parameters
    ----------
    solution : Solution
        A solution returned by :meth:`Model.solve`.
    of : str or list of str, optional
        Outputs: variable names, and constraint names for their duals ν.
        Default: every variable and constraint if the Jacobian of all of
        them fits in ``max_entries``, otherwise every variable.
    wrt : str or list of str, optional
        Parameter names (default: all). The objective sensitivities are
        reported for these parameters too.
    labels : dict of str to list of str, optional
        Display labels by variable, constraint or parameter name: one label
        per entry in column-major order (``{"b": ["north", "south"]}``
        makes rows read ``x[0] w.r.t. b[south]``), or for a matrix a pair
        (row labels, column labels). Unlabelled entries read ``b[1]``,
        ``A[0, 2]``.
    top : int, default 10
        Largest entries kept per block, and length of the rankings.
    max_entries : int, default 2_000_000
        Largest number of Jacobian entries (outputs × parameters) stored
        densely. Above it, each block keeps only its norm, its largest
        entries and its column norms (a note says so), and no array of
        outputs × parameters entries is ever allocated.
    progress : bool or None, default None
        Progress bar on stderr: None shows it when the work takes more than
        about a second and stderr is a terminal; True always; False never.
    sweep : dict of str to array_like, optional
        Sweeps to include, by parameter name: values as for
        :func:`~diffmodel.analysis.sweep` (for a scalar parameter its
        values; for another parameter multipliers of its value at the
        solution, or a path of values of shape (k, *shape)).

    Returns
    -------
    SensitivityReport

    Raises
    ------
    ModelError
        For an unknown name (the known names are listed), bad labels or a
        bad ``top`` / ``max_entries`` / ``progress``, or if ``solution`` is
        not a :class:`~diffmodel.Solution`.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Notes
    -----
    Conventions. Blocks are dz/dθ for z = (x, ν), as :meth:`Solution.jacobian`:
    rows follow the output and columns the parameter, each flattened in
    column-major order. Shadow prices: for a constraint stored by CVXPY as
    ``lhs == rhs`` with dual ν (Lagrangian f + νᵀ(lhs − rhs)), relaxing it
    to ``lhs == rhs + ε`` changes the optimal value at the rate
    ∂f*/∂ε = −ν (``Minimize``) or +ν (``Maximize``); for ``A @ x == b`` with
    a parameter b this is ∂f*/∂b = −ν. An inequality is stored as
    ``lhs <= rhs`` (``a >= b`` as ``b <= a``) with dual ν ≥ 0 and the same
    Lagrangian, so its price for ``lhs <= rhs + ε`` is −ν or +ν alike (zero
    where the row is not binding).

    Cost. ∂f*/∂θ needs no solve (envelope theorem). The blocks take
    min(output entries, parameter entries) solves with the solution's own
    factorization, in chunks of at most 256 passes, forward (one per
    parameter entry) or reverse (one per output entry).

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> report = sensitivity(model.solve(b=2.0))
    >>> report.objective["b"].gradient          # f* = b²/2
    array(2.)
    >>> report.shadow_prices["total"].price     # relax sum(x) == b + ε
    array(2.)
    >>> print(report.blocks["x", "b"].largest[0])
    x[0] w.r.t. b: 0.5
    """
    t_start = time.perf_counter()
    point, packer = solution_parts(solution, CALL)
    request = _request(packer, of, wrt, labels, top, max_entries, progress, sweep)
    check_differentiable(point, CALL)
    layout, k = packer.layout, request.k
    notes: list[str] = []
    outputs = request.outputs
    if outputs is None:
        outputs = _default_outputs(layout, request.params, max_entries, notes)
    names = label_table(layout, [*outputs, *request.params, *layout.constraints,
                                 *request.labels], request.labels)
    grad = layout.sign * objective_gradient(point)
    outs, pars = _slots(packer, outputs, request.params)
    rows, cols = sum(o.rows.shape[0] for o in outs), sum(p.cols.shape[0] for p in pars)
    store = rows * cols <= max_entries
    if not store:
        notes.append(_capped_note(rows, cols, max_entries, k))
    acc, mode, solves = _stream_blocks(point, outs, pars, k, store, progress)
    z = np.concatenate([point.x, point.y])
    output_values = {o.name: z[o.rows].copy() for o in outs}
    if not layout.parameters:
        notes.append("the model has no parameters: there is nothing to differentiate")
    sweeps = _sweeps(solution, request.sweeps, progress, notes)
    return SensitivityReport(
        value=float(solution.value), sense="maximize" if layout.sign < 0 else "minimize",
        objective=_objective(point.theta, grad, pars, float(solution.value)),
        shadow_prices=_shadow_prices(solution, layout),
        blocks=_blocks(acc, outs, pars, point.theta, output_values, names),
        top=_rankings(grad, acc, outs, pars, k, names), notes=notes,
        outputs=tuple(outputs), parameters=tuple(request.params), sweeps=sweeps, k=k,
        mode=mode, solves=solves, seconds=time.perf_counter() - t_start, labels=names,
        output_values=output_values)


# ---------------------------------------------------------------- arguments


def _names(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    """A name or a list of names, deduplicated in order (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise ModelError(f"{CALL}: {what} must be a name or a list of names, got {name!r}")
    return list(dict.fromkeys(names))


def _positive_int(value: object, what: str, minimum: int) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < minimum):
        kind = "a positive" if minimum > 0 else "a non-negative"
        raise ModelError(f"{CALL}: {what} must be {kind} integer, got {value!r}")
    return int(value)


def _request(packer: Packer, of: str | Sequence[str] | None,
             wrt: str | Sequence[str] | None, labels: Labels | None, top: object,
             max_entries: object, progress: object,
             sweep: Mapping[str, ArrayLike] | None) -> _Request:
    """Validate every argument of :func:`sensitivity` before any work."""
    k = _positive_int(top, "top", 1)
    _positive_int(max_entries, "max_entries", 0)
    check_progress(progress, CALL)
    layout = packer.layout
    outputs = _names(of, "of")
    for name in outputs or ():
        packer.output_index(name, CALL)
    params = _names(wrt, "wrt")
    if params is None:
        params = list(layout.parameters)
    check_names(params, layout.parameters, "parameter", CALL)
    given = check_labels(labels, [*layout.variables, *layout.constraints,
                                  *layout.parameters], CALL)
    if sweep is not None and not isinstance(sweep, Mapping):
        raise ModelError(f"{CALL}: sweep must be a dict of parameter name to values")
    sweeps = dict(sweep or {})
    check_names(sweeps, layout.parameters, "parameter", "sensitivity(sweep=...)")
    return _Request(k, outputs, params, given, sweeps)


def _default_outputs(layout: Layout, params: list[str], max_entries: int,
                     notes: list[str]) -> list[str]:
    """Every variable and constraint when their Jacobian fits, else the variables."""
    cols = sum(layout.parameters[p].size for p in params)
    everything = [*layout.variables, *layout.constraints]
    rows = (sum(b.size for b in layout.variables.values())
            + sum(b.size for b in layout.constraints.values()))
    if rows * cols <= max_entries or not layout.variables:
        return everything
    if layout.constraints:
        notes.append(
            f"of= not given: the Jacobian of every variable and dual has {rows:,} × "
            f"{cols:,} entries, more than max_entries={max_entries:,}, so only the "
            f"variables are reported; pass of=[...] to include constraints' duals")
    return list(layout.variables)


def _slots(packer: Packer, outputs: list[str], params: list[str]
           ) -> tuple[list[_Output], list[_Param]]:
    """Where the reported outputs and parameters live in (x, y) and θ̃."""
    outs = []
    for name in outputs:
        rows, shape = packer.output_index(name, CALL)
        kind = "primal" if name in packer.layout.variables else "dual"
        outs.append(_Output(name, kind, shape, np.asarray(rows, dtype=np.int64)))
    pars = [_Param(p, packer.layout.parameters[p].shape,
                   np.asarray(packer.param_index(p, CALL), dtype=np.int64)) for p in params]
    return outs, pars


def _capped_note(rows: int, cols: int, max_entries: int, k: int) -> str:
    return (f"capped: the Jacobian of the reported outputs has {rows:,} × {cols:,} = "
            f"{rows * cols:,} entries, more than max_entries={max_entries:,}; each block "
            f"keeps its norm, column norms and its {k} largest entries, and no heatmap. "
            f"Narrow the report with of=/wrt=, raise max_entries, or raise top= for more "
            f"entries")


# ---------------------------------------------------------------- objective, duals


def _objective(theta: FloatArray, grad: FloatArray, pars: list[_Param],
               f_star: float) -> dict[str, ObjectiveSensitivity]:
    """∂f*/∂θ (envelope theorem, no solve) and elasticities per reported parameter."""
    out = {}
    for p in pars:
        g, t = grad[p.cols], theta[p.cols]
        e = elasticity(g, t, np.full_like(g, f_star), abs(f_star))
        out[p.name] = ObjectiveSensitivity(
            parameter=p.name, value=t.reshape(p.shape, order="F").copy(),
            gradient=g.reshape(p.shape, order="F").copy(),
            elasticity=e.reshape(p.shape, order="F"))
    return out


def _shadow_prices(solution: Solution, layout: Layout) -> dict[str, ShadowPrice]:
    """Dual and price ∂f*/∂ε of every named constraint."""
    sign = layout.sign
    sense = "maximized" if sign < 0 else "minimized"
    out = {}
    for c, block in layout.constraints.items():
        lhs, rhs, relation = constraint_sides(block.text or c, block.kind)
        nu = np.array(solution.dual[c], dtype=np.float64)
        meaning = (
            f"change of the optimal ({sense}) objective per unit increase of the "
            f"right-hand side: ∂f*/∂ε for {c} relaxed to {lhs} {relation} {rhs} + ε; "
            f"equals {'+' if sign < 0 else '−'}ν (CVXPY's dual, Lagrangian "
            f"f + νᵀ(lhs − rhs))")
        price = np.array(-sign * nu)
        price += 0.0  # −0.0 (from a zero dual) reads 0.0
        out[c] = ShadowPrice(constraint=c, lhs=lhs, rhs=rhs, dual=nu, price=price,
                             meaning=meaning, relation=relation)
    return out


# ---------------------------------------------------------------- Jacobian blocks


class _BlockAccumulator:
    """Running norm, column norms, largest entries (and optionally the dense
    block) of one ∂output/∂parameter block, fed piece by piece."""

    def __init__(self, rows: int, cols: int, k: int, store: bool) -> None:
        self.k = k
        self.sumsq = 0.0
        self.colsq = np.zeros(cols)
        self.vals: FloatArray = np.zeros(0)
        self.ii: IntArray = np.zeros(0, dtype=np.int64)
        self.jj: IntArray = np.zeros(0, dtype=np.int64)
        self.matrix: FloatArray | None = np.zeros((rows, cols)) if store else None

    def add(self, piece: FloatArray, i0: int, j0: int) -> None:
        """Take in ``piece`` = block[i0:i0 + rows, j0:j0 + cols]."""
        sq = piece * piece
        self.sumsq += float(sq.sum())
        self.colsq[j0: j0 + piece.shape[1]] += sq.sum(axis=0)
        if self.matrix is not None:
            self.matrix[i0: i0 + piece.shape[0], j0: j0 + piece.shape[1]] = piece
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

    def largest(self) -> tuple[FloatArray, IntArray, IntArray]:
        """Kept entries (values, rows, columns): largest magnitude first, ties by position."""
        order = np.lexsort((self.jj, self.ii, -np.abs(self.vals)))
        return self.vals[order], self.ii[order], self.jj[order]


_Accumulators = dict[tuple[str, str], _BlockAccumulator]


def _live_rows(point: Point, out: IntArray) -> BoolArray:
    """Which entries of the stacked (x, y) have a nonzero derivative in general:
    the variables and the rows of M in the KKT system (inactive rows have none)."""
    n, m = point.problem.n, point.problem.layout.rows
    in_kkt = np.zeros(m + 1, dtype=bool)  # (a spare entry so that primal rows index safely)
    in_kkt[point.rows] = True
    return np.asarray((out < n) | in_kkt[np.where(out < n, m, out - n)], dtype=bool)


def _chunk_size(other: int, point: Point) -> int:
    """Passes per chunk: a chunk's arrays stay within :data:`CHUNK_BUDGET` entries."""
    dim = point.problem.n + point.problem.layout.rows
    return int(np.clip(CHUNK_BUDGET // (other + dim), 1, MAX_CHUNK))


def _stream_blocks(point: Point, outs: list[_Output], pars: list[_Param], k: int,
                   store: bool, progress: bool | None) -> tuple[_Accumulators, str, int]:
    """Every block, chunk by chunk of passes, into accumulators.

    Returns the accumulators by (output, parameter), the mode of the passes
    (``"forward"``, ``"reverse"`` or ``"none"``) and the number of solves.
    """
    acc = {(o.name, p.name): _BlockAccumulator(o.rows.shape[0], p.cols.shape[0], k, store)
           for o in outs for p in pars}
    R, C = sum(o.rows.shape[0] for o in outs), sum(p.cols.shape[0] for p in pars)
    if not (R and C):
        return acc, "none", 0
    all_rows = np.concatenate([o.rows for o in outs])
    all_cols = np.concatenate([p.cols for p in pars])
    live = _live_rows(point, all_rows)
    reverse = int(live.sum()) < C
    mode = "reverse" if reverse else "forward"
    passes, other = (R, C) if reverse else (C, R)
    chunk = _chunk_size(other, point)
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
    return acc, mode, solves


def _scatter(acc: _Accumulators, J: FloatArray, r0: int, c0: int, outs: list[_Output],
             pars: list[_Param]) -> None:
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


def _blocks(acc: _Accumulators, outs: list[_Output], pars: list[_Param], theta: FloatArray,
            output_values: Mapping[str, FloatArray],
            names: Mapping[str, tuple[str, ...]]) -> dict[tuple[str, str], BlockSensitivity]:
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
                largest=largest, jacobian=a.matrix, _values=values)
    return blocks


# ---------------------------------------------------------------- rankings


def _influences(scores: FloatArray, pars: list[_Param], names: Mapping[str, tuple[str, ...]],
                k: int) -> tuple[Influence, ...]:
    """The ``k`` parameter entries with the largest scores (one score per entry of
    the reported parameters, in order)."""
    offsets = np.cumsum([0] + [p.cols.shape[0] for p in pars])
    out = []
    for idx in top_indices(scores, k):
        pi = int(np.searchsorted(offsets, idx, side="right") - 1)
        p, j = pars[pi], int(idx - offsets[pi])
        out.append(Influence(p.name, entry_index(j, p.shape), names[p.name][j],
                             float(scores[idx])))
    return tuple(out)


def _rankings(grad: FloatArray, acc: _Accumulators, outs: list[_Output], pars: list[_Param],
              k: int, names: Mapping[str, tuple[str, ...]]) -> Ranking:
    """Rankings by |∂f*/∂θⱼ| and by Jacobian column norms (overall, per output)."""
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


# ---------------------------------------------------------------- sweeps


def _sweeps(solution: Solution, requested: Mapping[str, ArrayLike], progress: bool | None,
            notes: list[str]) -> dict[str, Sweep]:
    """The sweeps asked for with ``sweep=``; failed steps become notes."""
    sweeps = {}
    for p, values in requested.items():
        sw = run_sweep(solution, p, values, progress=progress)
        sweeps[p] = sw
        for i, msg in sw.failures:
            notes.append(f"sweep of {p!r}: the re-solve at step {i} failed: {msg}")
    return sweeps
