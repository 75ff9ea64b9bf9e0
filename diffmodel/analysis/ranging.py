"""Ranging: how far each parameter entry can move before the active set changes.

The QP analogue of the sensitivity ranging of LP solvers (right-hand-side and
cost ranging): for each entry θₖ of a parameter, the others fixed, the
interval [low, high] over which the set of binding inequality rows stays
what it is at the solution, and at each end the row that enters (its slack
reaches zero) or leaves (its multiplier reaches zero). The numbers come
from the derivatives of the slacks and multipliers with the solution's own
factorization (see :mod:`diffmodel.analysis._ratio` for the algorithm).

:func:`ranging` returns a :class:`ParameterRange` per parameter;
:func:`~diffmodel.analysis.sensitivity` includes the same in its report
(``report.ranges[name]`` is the pair ``(low, high)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .._packing import Packer
from .._validation import ParamSpec, check_names
from ..compiled import Layout
from ..diff import check_differentiable
from ..errors import ModelError
from ..point import Point
from ._common import BoolArray, FloatArray, IntArray, check_progress, solution_parts
from ._ratio import (
    DISPLACES, DOMAIN, ENTERS, LEAVES, NO_EVENT, Ends, RowState, range_steps, row_state,
)
from .blocks import Param
from .labels import Labels, check_labels, entry_index, label_table
from .render import text

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    from ..solution import Solution

__all__ = ["RangeLimit", "ParameterRange", "ranging", "compute_ranges", "EVENTS"]

#: The events at an end of a range, by code.
EVENTS = {ENTERS: "enters", LEAVES: "leaves", DISPLACES: "displaces", DOMAIN: "domain"}


@dataclass(frozen=True)
class RangeLimit:
    """What happens at one end of a parameter entry's range.

    Attributes
    ----------
    event : {"enters", "leaves", "displaces", "domain"}
        ``"enters"``: an inequality row that does not bind becomes binding
        (its slack reaches zero). ``"leaves"``: a binding row stops binding
        (its multiplier reaches zero; at a degenerate point, a weakly active
        row whose multiplier would turn negative, or a dependent row whose
        slack opens). ``"displaces"``: a binding row that depends linearly
        on other binding rows would be violated, so one of those leaves
        (degenerate points only). ``"domain"``: the end of the values the
        parameter is declared to take (``nonneg=True``, ``bounds=...``);
        the active set has not changed there.
    constraint : str
        The constraint's name (``"w.lower"`` for a variable's bound), or the
        parameter's name for ``"domain"``.
    index : tuple of int
        The row's index in the constraint's shape (the entry's index in the
        parameter's shape for ``"domain"``).
    label : str
        ``"cap[EM equity]"``; for ``"domain"`` the bound, ``"d[A] >= 0"``.
    """

    event: str
    constraint: str
    index: tuple[int, ...]
    label: str

    def __str__(self) -> str:
        if self.event == "domain":
            return f"{self.label} (domain)"
        if self.event == "displaces":
            return f"{self.label} displaces a row it depends on"
        return f"{self.label} {self.event}"


@dataclass(frozen=True, eq=False)
class ParameterRange:
    """The ranges of the entries of one parameter.

    Attributes
    ----------
    parameter : str
    value : ndarray
        The parameter's value at the solution, shaped like the parameter.
    low, high : ndarray
        Shaped like the parameter: entry k can move within [low, high], the
        other entries fixed, with the active set unchanged; −inf / +inf when
        nothing ends the range on that side. ``low == value`` (or ``high ==
        value``) where the range is empty on that side: the active set
        changes at once (a degenerate point, or a value at the end of the
        parameter's domain).
    exact : ndarray of bool
        Shaped like the parameter: True where the solution is affine in the
        entry while the active set holds, so that the range is exact: the
        entry enters only q, b and h, or only rows of A and G that are not
        in the KKT system (which do not bind, so the solution does not move),
        or the model has no inequality. False where it enters P or a binding
        row of A or G: the range is then the first-order one, from the
        derivatives at the solution.
    at_low, at_high : tuple of (RangeLimit or None)
        One per entry, in column-major order: what ends the range there
        (None for an infinite end).
    labels : tuple of str
        The entries' display labels, in column-major order.
    """

    parameter: str
    value: FloatArray
    low: FloatArray
    high: FloatArray
    exact: BoolArray
    at_low: tuple[RangeLimit | None, ...]
    at_high: tuple[RangeLimit | None, ...]
    labels: tuple[str, ...]

    @property
    def pair(self) -> tuple[FloatArray, FloatArray]:
        """``(low, high)``."""
        return self.low, self.high

    def __str__(self) -> str:
        return text.range_text(self)

    def __repr__(self) -> str:
        return (f"ParameterRange(parameter={self.parameter!r}, shape={self.value.shape}, "
                f"bounded={int(np.isfinite(self.low).sum() + np.isfinite(self.high).sum())} "
                f"ends, exact={bool(self.exact.all())})")


def _row_names(layout: Layout) -> tuple[list[str], IntArray]:
    """The constraint of every inequality row, and the row's position in it."""
    owner: list[str] = [""] * layout.m_ineq
    local = np.zeros(layout.m_ineq, dtype=np.int64)
    for name, block in layout.constraints.items():
        if block.kind == "ineq":
            owner[block.offset: block.stop] = [name] * block.size
            local[block.offset: block.stop] = np.arange(block.size)
    return owner, local


def _domain(spec: ParamSpec, size: int, shape: tuple[int, ...]
            ) -> tuple[FloatArray, FloatArray]:
    """The bounds a parameter's declared attributes put on its entries (flattened)."""
    low, high = np.full(size, -np.inf), np.full(size, np.inf)
    if spec.attribute("nonneg") or spec.attribute("pos"):
        low[:] = 0.0
    if spec.attribute("nonpos") or spec.attribute("neg"):
        high[:] = 0.0
    bounds = spec.attribute("bounds")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        for side, out, pick in ((bounds[0], low, np.maximum), (bounds[1], high, np.minimum)):
            if side is not None:
                arr = np.broadcast_to(np.asarray(side, dtype=float), shape)
                out[:] = pick(out, arr.ravel(order="F"))
    return low, high


def _limits(ends_row: IntArray, ends_event: IntArray, layout: Layout,
            rows: tuple[list[str], IntArray], names: Mapping[str, tuple[str, ...]]
            ) -> list[RangeLimit | None]:
    """The RangeLimit of each end (None where nothing ends the range)."""
    owner, local = rows
    out: list[RangeLimit | None] = []
    for row, event in zip(ends_row.tolist(), ends_event.tolist()):
        if event == NO_EVENT or row < 0:
            out.append(None)
            continue
        c, i = owner[row], int(local[row])
        out.append(RangeLimit(EVENTS[event], c, entry_index(i, layout.constraints[c].shape),
                              names[c][i]))
    return out


def _clip(p: Param, spec: ParamSpec, theta: FloatArray, low: FloatArray, high: FloatArray,
          at_low: list[RangeLimit | None], at_high: list[RangeLimit | None],
          labels: tuple[str, ...]) -> None:
    """Cut the ranges at the parameter's declared domain (in place). An end that
    meets the domain's bound up to rounding keeps its event, the bound its value."""
    lo, hi = _domain(spec, theta.shape[0], p.shape)
    margin = 1e-12 * np.maximum(np.abs(theta), 1.0)
    for j in np.flatnonzero(lo > low):
        if lo[j] > low[j] + margin[j] or at_low[j] is None:
            at_low[j] = RangeLimit("domain", p.name, entry_index(int(j), p.shape),
                                   f"{labels[j]} >= {lo[j]:g}")
        low[j] = lo[j]
    for j in np.flatnonzero(hi < high):
        if hi[j] < high[j] - margin[j] or at_high[j] is None:
            at_high[j] = RangeLimit("domain", p.name, entry_index(int(j), p.shape),
                                    f"{labels[j]} <= {hi[j]:g}")
        high[j] = hi[j]


def exact_entries(point: Point, cols: IntArray) -> BoolArray:
    """Which θ̃ entries have an exact range: those along which the path of the
    solution is affine while the active set holds.

    That is the case when the entry moves neither P nor a row of M in the KKT
    system (so K is fixed and z(t) is affine), unless it enters a row outside
    the KKT system while moving the solution (the slack, c − M(t) x(t), would be
    quadratic in t). Every entry is exact without inequalities.
    """
    problem = point.problem
    if problem.m_ineq == 0:
        return np.ones(cols.shape[0], dtype=bool)
    M = problem.M
    in_kkt = np.zeros(problem.layout.rows, dtype=bool)
    in_kkt[point.rows] = True
    dep = sp.csr_matrix(M.dep_map.matrix)
    kkt_rows = in_kkt[M.dep_row]
    rhs = sp.csr_matrix(problem.c.map.matrix)[point.rows]
    enters_k = np.isin(cols, problem.P.theta) | np.isin(cols, dep[kkt_rows].indices)
    moves_x = enters_k | np.isin(cols, problem.q.theta) | np.isin(cols, rhs.indices)
    outside = np.isin(cols, dep[~kkt_rows].indices)
    return np.asarray(~enters_k & ~(outside & moves_x), dtype=bool)


def _shaped(v: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    return np.asarray(v.reshape(shape, order="F").copy(), dtype=np.float64)


def compute_ranges(point: Point, packer: Packer, pars: Sequence[Param],
                   names: Mapping[str, tuple[str, ...]], progress: bool | None,
                   state: RowState | None = None
                   ) -> tuple[dict[str, ParameterRange], str, int]:
    """The ranges of the parameters ``pars`` at a differentiable point.

    ``names`` holds the entry labels of the parameters and of every
    constraint. Returns the ranges by parameter, the mode of the passes and
    the number of solves.
    """
    layout = packer.layout
    st = row_state(point) if state is None else state
    cols = (np.concatenate([p.cols for p in pars]) if pars
            else np.zeros(0, dtype=np.int64))
    ends: Ends
    ends, mode, solves = range_steps(point, st, cols, progress)
    out: dict[str, ParameterRange] = {}
    rows = _row_names(layout)
    start = 0
    for p in pars:
        part = slice(start, start + p.cols.shape[0])
        start = part.stop
        theta = point.theta[p.cols]
        low, high = theta + ends.low[part], theta + ends.high[part]
        at_low = _limits(ends.low_row[part], ends.low_event[part], layout, rows, names)
        at_high = _limits(ends.high_row[part], ends.high_event[part], layout, rows, names)
        labels = names[p.name]
        _clip(p, packer.specs[p.name], theta, low, high, at_low, at_high, labels)
        exact = exact_entries(point, p.cols)
        out[p.name] = ParameterRange(
            parameter=p.name, value=_shaped(theta, p.shape), low=_shaped(low, p.shape),
            high=_shaped(high, p.shape), exact=exact.reshape(p.shape, order="F").copy(),
            at_low=tuple(at_low), at_high=tuple(at_high), labels=labels)
    return out, mode, solves


def ranging(solution: Solution, wrt: str | Sequence[str] | None = None,
            labels: Labels | None = None, progress: bool | None = None
            ) -> dict[str, ParameterRange]:
    """The ranges of parameter entries over which the active set holds.

    Parameters
    ----------
    solution : Solution
        A solution returned by :meth:`Model.solve`.
    wrt : str or list of str, optional
        Parameter names (default: all).
    labels : dict of str to list of str, optional
        Display labels of parameters' and constraints' entries, as for
        :func:`~diffmodel.analysis.sensitivity`.
    progress : bool or None, default None
        Progress bar on stderr, as for :func:`~diffmodel.analysis.sensitivity`.

    Returns
    -------
    dict of str to ParameterRange
        By parameter name, in the order asked for.

    Raises
    ------
    ModelError
        For an unknown name, bad labels or ``progress``, or if ``solution``
        is not a :class:`~diffmodel.Solution`.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Notes
    -----
    For entry θₖ (direction eₖ, every other entry fixed) the solution moves
    as z + t·dz/dθₖ while the active set holds. Rows that do not bind keep a
    slack sᵢ + t·dsᵢ ≥ 0 (s = h − G x, ds = dh − dG x − G dx); binding rows
    keep a multiplier λᵢ + t·dλᵢ ≥ 0. The first to reach zero on each side
    ends the range: that row enters, or leaves, the active set. Ends are
    ±inf when nothing stops them, and are cut at the parameter's declared
    domain (``nonneg=True``: low ≥ 0).

    Exact for entries that enter only q, b and h (K does not depend on them,
    so the solution is affine in them while the active set holds) and for
    entries of rows that do not bind (which do not move the solution);
    first order for entries of P or of binding rows of A and G, where the
    path is not affine (see :attr:`ParameterRange.exact`).

    At a degenerate point (``solution.degenerate``), the range is empty on
    the side where a weakly active row changes status (``low`` or ``high``
    equals the value), and on both sides along an entry that moves the
    slack of a binding row that depends on others.

    Cost: min(parameter entries, constraint rows) solves with the
    solution's factorization, in chunks: forward passes (one per parameter
    entry) or reverse passes (one per row, whose seed is the row's
    multiplier or its slack's −Mᵢ dx); none without inequalities. Reverse
    passes keep the derivatives of the rows in K until all of them are known
    (they set the rounding level of each column), and solve those rows again
    instead when that would take more than a few million entries.

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x - b)), {"cap": x <= 1})
    >>> r = ranging(model.solve(b=0.5))["b"]    # x = (b, b) until b reaches the cap
    >>> r.low, r.high, str(r.at_high[0])
    (array(-inf), array(1.), 'cap[0] enters')
    """
    call = "ranging()"
    point, packer = solution_parts(solution, call)
    check_progress(progress, call)
    layout = packer.layout
    params = [wrt] if isinstance(wrt, str) else list(layout.parameters if wrt is None else wrt)
    for p in params:
        if not isinstance(p, str):
            raise ModelError(f"{call}: wrt must be a name or a list of names, got {p!r}")
    check_names(params, layout.parameters, "parameter", call)
    given = check_labels(labels, [*layout.variables, *layout.constraints,
                                  *layout.parameters], call)
    names = label_table(layout, [*params, *layout.constraints], given)
    check_differentiable(point, call)
    pars = [Param(p, layout.parameters[p].shape,
                  np.asarray(packer.param_index(p, call), dtype=np.int64))
            for p in dict.fromkeys(params)]
    return compute_ranges(point, packer, pars, names, progress)[0]
