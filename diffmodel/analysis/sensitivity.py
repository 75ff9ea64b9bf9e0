"""The sensitivity engine: a :class:`SensitivityReport` at one solution.

From the solution's verified point and its own factorization of K (see
:mod:`diffmodel.diff`): the objective sensitivity ∂f*/∂θ and its
elasticities (envelope theorem, no solve); the shadow price, slack and
status of every constraint row, with the active set and its degenerate
rows; blocks of the solution Jacobian dz/dθ, z = (x, ν), computed in chunks
of forward or reverse passes (whichever side is smaller) with running norms
and largest entries, stored densely only within ``max_entries``
(:mod:`.blocks`); rankings of the parameter entries; and the range of each
parameter entry over which the active set holds (:mod:`.ranging`).
:func:`sensitivity` runs these steps in order.
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
from ..diff import check_differentiable, objective_gradient
from ..errors import ModelError
from ..point import Point
from ._common import BoolArray, FloatArray, check_progress, elasticity, solution_parts
from ._ratio import RowState, row_state
from .blocks import (
    CHUNK_BUDGET, MAX_CHUNK, Output, Param, rankings, stream_blocks, summarize_blocks,
)
from .labels import Labels, check_labels, constraint_sides, label_table
from .ranging import ParameterRange, compute_ranges
from .results import ObjectiveSensitivity, SensitivityReport, ShadowPrice, Sweep
from .significance import (
    Resolution, group_threshold, objective_thresholds, resolution, significant,
)
from .whatif import sweep as run_sweep

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    from ..solution import Solution

__all__ = ["sensitivity", "CHUNK_BUDGET", "MAX_CHUNK"]

CALL = "sensitivity()"


@dataclass(frozen=True)
class _Request:
    """The validated arguments of :func:`sensitivity`."""

    k: int
    outputs: list[str] | None
    params: list[str]
    labels: dict[str, object]
    sweeps: dict[str, ArrayLike]
    ranges: bool


def sensitivity(
    solution: Solution,
    of: str | Sequence[str] | None = None,
    wrt: str | Sequence[str] | None = None,
    labels: Labels | None = None,
    top: int = 10,
    max_entries: int = 2_000_000,
    progress: bool | None = None,
    sweep: Mapping[str, ArrayLike] | None = None,
    ranges: bool = True,
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
    ranges : bool, default True
        Include the range of every entry of the reported parameters over
        which the active set holds (:func:`~diffmodel.analysis.ranging`).

    Returns
    -------
    SensitivityReport

    Raises
    ------
    ModelError
        For an unknown name (the known names are listed), bad labels or a
        bad ``top`` / ``max_entries`` / ``progress`` / ``ranges``, or if ``solution`` is
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
    where the row is not binding). Slacks of inequalities are rhs − lhs ≥ 0.

    Active set. ``report.active`` and ``report.degenerate`` are
    ``solution.active`` and ``solution.degenerate``. At a degenerate point
    the blocks treat weakly active rows as binding (as reverse mode does;
    :meth:`Solution.derivative` is one-sided there), and a note says so.

    Ranges. ``report.ranges[name]`` is ``(low, high)``, shaped like the
    parameter: how far each entry can move, the others fixed, before the
    active set changes; ``report.ranges_detail[name]`` says which row enters
    or leaves at each end. Exact for entries that enter only q, b and h,
    first order for entries of P, A and G; see
    :func:`~diffmodel.analysis.ranging`.

    Cost. ∂f*/∂θ needs no solve (envelope theorem). The blocks take
    min(output entries, parameter entries) solves with the solution's own
    factorization, in chunks of at most 256 passes, forward (one per
    parameter entry) or reverse (one per output entry); the ranges
    min(parameter entries, constraint rows) more, none without inequalities.

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
    request = _request(packer, of, wrt, labels, top, max_entries, progress, sweep, ranges)
    check_differentiable(point, CALL)
    layout, k = packer.layout, request.k
    notes: list[str] = []
    outputs = request.outputs
    if outputs is None:
        outputs = _default_outputs(layout, request.params, max_entries, notes)
    names = label_table(layout, [*outputs, *request.params, *layout.constraints,
                                 *request.labels], request.labels)
    outs, pars = _slots(packer, outputs, request.params)
    rows, cols = sum(o.rows.shape[0] for o in outs), sum(p.cols.shape[0] for p in pars)
    store = rows * cols <= max_entries
    if not store:
        notes.append(_capped_note(rows, cols, max_entries, k))
    res = resolution(point, solution.accuracy)
    acc, mode, solves = stream_blocks(point, outs, pars, k, store, progress, res)
    state = row_state(point)
    ranged: dict[str, ParameterRange] = {}
    range_solves = 0
    if request.ranges:
        ranged, _, range_solves = compute_ranges(point, packer, pars, names, progress, state)
    notes.extend(_degenerate_notes(solution, names))
    if not layout.parameters:
        notes.append("the model has no parameters: there is nothing to differentiate")
    sweeps = _sweeps(solution, request.sweeps, progress, notes)
    grad, floors = _gradient(point, pars, res)
    z = np.concatenate([point.x, point.y])
    output_values = {o.name: z[o.rows].copy() for o in outs}
    return SensitivityReport(
        value=float(solution.value), sense="maximize" if layout.sign < 0 else "minimize",
        objective=_objective(point.theta, grad, pars, float(solution.value), floors),
        shadow_prices=_shadow_prices(solution, packer, state, res),
        blocks=summarize_blocks(acc, outs, pars, point.theta, output_values, names),
        top=rankings(grad, acc, outs, pars, k, names), notes=notes,
        outputs=tuple(outputs), parameters=tuple(request.params), sweeps=sweeps, k=k,
        mode=mode, solves=solves, seconds=time.perf_counter() - t_start, labels=names,
        output_values=output_values, active=_masks(solution.active),
        degenerate=_masks(solution.degenerate), ranges_detail=ranged,
        range_solves=range_solves, accuracy=res.accuracy, resolution=res.relative)


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
             sweep: Mapping[str, ArrayLike] | None, ranges: object) -> _Request:
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
    if not isinstance(ranges, bool):
        raise ModelError(f"{CALL}: ranges must be True or False, got {ranges!r}")
    return _Request(k, outputs, params, given, sweeps, ranges)


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
           ) -> tuple[list[Output], list[Param]]:
    """Where the reported outputs and parameters live in (x, y) and θ̃."""
    outs = []
    for name in outputs:
        rows, shape = packer.output_index(name, CALL)
        kind = "primal" if name in packer.layout.variables else "dual"
        outs.append(Output(name, kind, shape, np.asarray(rows, dtype=np.int64)))
    pars = [Param(p, packer.layout.parameters[p].shape,
                   np.asarray(packer.param_index(p, CALL), dtype=np.int64)) for p in params]
    return outs, pars


def _capped_note(rows: int, cols: int, max_entries: int, k: int) -> str:
    return (f"capped: the Jacobian of the reported outputs has {rows:,} × {cols:,} = "
            f"{rows * cols:,} entries, more than max_entries={max_entries:,}; each block "
            f"keeps its norm, column norms and its {k} largest entries, and no heatmap. "
            f"Narrow the report with of=/wrt=, raise max_entries, or raise top= for more "
            f"entries")


# ---------------------------------------------------------------- objective, duals


def _gradient(point: Point, pars: list[Param], res: Resolution
              ) -> tuple[FloatArray, dict[str, float]]:
    """∂f*/∂θ̃ in the model's sense (envelope theorem, no solve), with the entries of
    each reported parameter within its threshold set to 0; and the thresholds."""
    grad = point.problem.layout.sign * objective_gradient(point)
    floors = objective_thresholds(point, res, {p.name: p.cols for p in pars}, CHUNK_BUDGET)
    for p in pars:
        grad[p.cols] = significant(grad[p.cols], floors[p.name])
    return grad, floors


def _objective(theta: FloatArray, grad: FloatArray, pars: list[Param],
               f_star: float, floors: Mapping[str, float]
               ) -> dict[str, ObjectiveSensitivity]:
    """∂f*/∂θ and elasticities per reported parameter."""
    out = {}
    for p in pars:
        g, t = grad[p.cols], theta[p.cols]
        e = elasticity(g, t, np.full_like(g, f_star), abs(f_star))
        out[p.name] = ObjectiveSensitivity(
            parameter=p.name, value=t.reshape(p.shape, order="F").copy(),
            gradient=g.reshape(p.shape, order="F").copy(),
            elasticity=e.reshape(p.shape, order="F"), threshold=floors[p.name])
    return out


def _shadow_prices(solution: Solution, packer: Packer, state: RowState, res: Resolution
                   ) -> dict[str, ShadowPrice]:
    """Dual, price ∂f*/∂ε and (for an inequality) slack of every named constraint;
    duals within their threshold are 0."""
    layout = packer.layout
    sign = layout.sign
    sense = "maximized" if sign < 0 else "minimized"
    codes = _row_codes(state)
    out = {}
    for c, block in layout.constraints.items():
        lhs, rhs, relation = constraint_sides(block.text or c, block.kind)
        floor = group_threshold(res.error(packer.output_index(c, CALL)[0]))
        nu = significant(np.asarray(solution.dual[c], dtype=np.float64), floor)
        meaning = (
            f"change of the optimal ({sense}) objective per unit increase of the "
            f"right-hand side: ∂f*/∂ε for {c} relaxed to {lhs} {relation} {rhs} + ε; "
            f"equals {'+' if sign < 0 else '−'}ν (CVXPY's dual, Lagrangian "
            f"f + νᵀ(lhs − rhs))")
        price = np.array(-sign * nu)
        price += 0.0  # −0.0 (from a zero dual) reads 0.0
        slack = None
        status = ("equality",) * block.size
        if block.kind == "ineq":  # binding rows hold with equality: slack 0
            slack = block.take(np.where(state.active, 0.0, state.slack)).copy() + 0.0
            status = tuple(_STATUS[int(s)] for s in codes[block.offset:block.stop])
        out[c] = ShadowPrice(constraint=c, lhs=lhs, rhs=rhs, dual=nu, price=price,
                             meaning=meaning, relation=relation, slack=slack, status=status,
                             threshold=floor)
    return out


_STATUS = ("not binding", "binding", "weakly active", "dependent")


def _row_codes(state: RowState) -> np.ndarray:
    """Per inequality row: 0 not binding, 1 binding, 2 weakly active, 3 dependent."""
    codes = state.active.astype(np.int64)
    codes[state.weak] = 2
    codes[state.dependent] = 3
    return codes


def _masks(masks: Mapping[str, BoolArray]) -> dict[str, BoolArray]:
    """Writable copies of a solution's masks by constraint name."""
    return {c: np.array(m, dtype=bool) for c, m in masks.items()}


def _degenerate_notes(solution: Solution, names: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A note naming the degenerate rows, if any."""
    rows = [label for c, mask in solution.degenerate.items()
            for label, flag in zip(names[c], np.ravel(mask, order="F")) if flag]
    if not rows:
        return []
    shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    return [f"degenerate point: {shown} bind weakly (zero multiplier) or depend linearly on "
            f"other binding rows; the solution is only directionally differentiable there. "
            f"The blocks treat these rows as binding (as reverse mode does; "
            f"model.derivative is one-sided), and the ranges are empty on the side where "
            f"they change status"]


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
