"""Sensitivity reports, first-order predictions and sweeps at the current solution.

Everything here is computed from the last successful :meth:`Model.solve` and
its factorization of K (see :mod:`diffmodel.diff`):

- the objective sensitivity ∂f*/∂θ, from the Lagrangian at the optimum
  (envelope theorem, no solve), and its elasticities ∂f*/∂θ · θ / f*;
- shadow prices: for a constraint ``lhs == rhs`` (in the order CVXPY stores
  it, ``constraint.args``) with dual ν, ∂f*/∂ε = −ν for the constraint
  relaxed to ``lhs == rhs + ε`` (+ν for ``Maximize``, whose f* is the
  maximized value);
- blocks of the solution Jacobian dz/dθ, z = (x, ν), computed in chunks of
  forward passes (one per parameter entry) or reverse passes (one per output
  entry), whichever side is smaller, keeping running norms and the largest
  entries, so that the dense Jacobian is formed only when it fits in
  ``max_entries``;
- first-order predictions z + (dz/dθ) δ and f* + ∇f*·δ, and sweeps that
  compare them with re-solves along a path.

Renderings (text, Markdown, HTML with plots, pandas, JSON) live in
:mod:`diffmodel._render`; plots and DataFrames need the ``report`` extra
(``pip install "diffmodel[report]"``).
"""

from __future__ import annotations

import re

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import check_array, check_names, check_parameter_value
from .diff import jacobian_block, objective_gradient, tangent
from .errors import ModelError, SolverError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .model import Model

__all__ = [
    "sensitivity",
    "predict",
    "sweep",
    "SensitivityReport",
    "ObjectiveSensitivity",
    "ShadowPrice",
    "BlockSensitivity",
    "Entry",
    "Influence",
    "Ranking",
    "Prediction",
    "Sweep",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: An output (or f*) whose magnitude is at most this times max(1, the largest
#: magnitude of its block) is treated as zero: its elasticities are undefined (NaN).
ZERO_TOL = 1e-12
#: Entries of one working array (rows or columns of a chunk times the longer
#: side): bounds the memory of a chunk of passes to a few times 8 MB.
CHUNK_BUDGET = 1_000_000
#: At most this many passes per chunk.
MAX_CHUNK = 256
#: Seconds of work after which an automatic progress bar appears.
PROGRESS_DELAY = 1.0

Labels = Mapping[str, Union[Sequence[str], tuple[Sequence[str], Sequence[str]]]]


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Entry:
    """One entry of a solution Jacobian: ∂output[i]/∂parameter[j].

    Attributes
    ----------
    output : str
        Variable name, or constraint name for its dual ν.
    output_index : tuple of int
        Index of the entry in the output's shape (``()`` for a scalar).
    output_label : str
        ``"x[north]"`` with labels, ``"x[3]"`` / ``"X[1, 2]"`` / ``"x"`` without.
    parameter, parameter_index, parameter_label
        The same for the parameter entry.
    derivative : float
        ∂output[i]/∂parameter[j].
    elasticity : float
        derivative · parameter[j] / output[i]: 0 where the parameter entry
        is 0, NaN where the output entry is 0 (see :data:`ZERO_TOL`).
    """

    output: str
    output_index: tuple[int, ...]
    output_label: str
    parameter: str
    parameter_index: tuple[int, ...]
    parameter_label: str
    derivative: float
    elasticity: float

    def __str__(self) -> str:
        return f"{self.output_label} w.r.t. {self.parameter_label}: {self.derivative:.6g}"


@dataclass(frozen=True, eq=False)
class ObjectiveSensitivity:
    """∂f*/∂θ for one parameter, with elasticities.

    Attributes
    ----------
    parameter : str
        The parameter's name.
    value : ndarray
        The parameter's value at the solution, shaped like the parameter.
    gradient : ndarray
        ∂f*/∂θ (f* the optimal value in the sense of the model: the
        maximized value for ``Maximize``), shaped like the parameter.
    elasticity : ndarray
        gradient · value / f*, shaped like the parameter; 0 where the
        parameter entry is 0 and NaN everywhere if f* is 0.
    """

    parameter: str
    value: FloatArray
    gradient: FloatArray
    elasticity: FloatArray


@dataclass(frozen=True, eq=False)
class ShadowPrice:
    """The dual of a named constraint and the price it implies.

    Attributes
    ----------
    constraint : str
        The constraint's name.
    lhs, rhs : str
        The two sides as CVXPY stores them (``constraint.args``), which may
        be swapped with respect to the written order (see docs/math.md).
    dual : ndarray
        ν, with CVXPY's sign (Lagrangian f + νᵀ(lhs − rhs)), shaped like the
        constraint.
    price : ndarray
        ∂f*/∂ε for the constraint relaxed to ``lhs == rhs + ε`` (entrywise):
        the change of the optimal objective per unit increase of the
        right-hand side. Equals −ν for ``Minimize`` and +ν for ``Maximize``.
    meaning : str
        The statement above, with this constraint's sides.
    """

    constraint: str
    lhs: str
    rhs: str
    dual: FloatArray
    price: FloatArray
    meaning: str


@dataclass(frozen=True, eq=False)
class BlockSensitivity:
    """The block ∂output/∂parameter of the solution Jacobian, summarized.

    Attributes
    ----------
    output : str
        Variable name, or constraint name for its dual ν.
    parameter : str
        Parameter name.
    kind : {"primal", "dual"}
        Whether ``output`` is a variable or a constraint's dual.
    output_shape, parameter_shape : tuple of int
        Shapes of the two objects.
    norm : float
        Frobenius norm of the block.
    max_abs : float
        Largest magnitude of an entry.
    largest : tuple of Entry
        The largest entries by magnitude (at most ``top``), largest first.
    jacobian : ndarray or None
        The dense block, shape (output size, parameter size), rows and
        columns in column-major order as in :meth:`Model.jacobian`; None
        when the report was capped by ``max_entries``.
    """

    output: str
    parameter: str
    kind: str
    output_shape: tuple[int, ...]
    parameter_shape: tuple[int, ...]
    norm: float
    max_abs: float
    largest: tuple[Entry, ...]
    jacobian: FloatArray | None
    _rows: Sequence[Entry] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(output size, parameter size)."""
        return (int(np.prod(self.output_shape, dtype=np.int64)),
                int(np.prod(self.parameter_shape, dtype=np.int64)))

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry (row-major over output then parameter entries) when the
        block is stored, otherwise only :attr:`largest`."""
        if self.jacobian is None or self._rows is None:
            return self.largest
        return tuple(self._rows)


@dataclass(frozen=True)
class Influence:
    """How much one parameter entry moves the outputs.

    Attributes
    ----------
    parameter : str
    index : tuple of int
        Index in the parameter's shape.
    label : str
        ``"b[south]"``, ``"A[0, 2]"``, ...
    score : float
        |∂f*/∂θⱼ| in the objective ranking; the 2-norm of the Jacobian
        column ∂(outputs)/∂θⱼ in the solution rankings.
    """

    parameter: str
    index: tuple[int, ...]
    label: str
    score: float


@dataclass(frozen=True, eq=False)
class Ranking:
    """The most influential parameter entries, largest score first.

    Attributes
    ----------
    objective : tuple of Influence
        By |∂f*/∂θⱼ|.
    overall : tuple of Influence
        By the norm of the column ∂z_out/∂θⱼ over all reported outputs
        (primal and dual entries together).
    per_output : dict of str to tuple of Influence
        By the norm of ∂output/∂θⱼ, for each reported output.
    """

    objective: tuple[Influence, ...]
    overall: tuple[Influence, ...]
    per_output: Mapping[str, tuple[Influence, ...]]


@dataclass(frozen=True, eq=False)
class Prediction:
    """First-order prediction of the solution for a parameter change δ.

    Attributes
    ----------
    delta : dict of str to ndarray
        The change δ by parameter name (copies; parameters not given: 0).
    value : float
        f* + ∇f*·δ (in the sense of the model).
    primal : dict of str to ndarray
        x + (dx/dθ) δ, by variable name.
    dual : dict of str to ndarray
        ν + (dν/dθ) δ, by constraint name (CVXPY's sign convention).
    base_value : float
        f* at the current solution.
    """

    delta: Mapping[str, FloatArray]
    value: float
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    base_value: float

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {np.shape(v)}" for k, v in {**self.primal, **self.dual}.items())
        return (f"Prediction(value={self.value:.6g}, base_value={self.base_value:.6g}, "
                f"delta=[{', '.join(self.delta)}], solution={{{shapes}}})")


@dataclass(frozen=True, eq=False)
class Sweep:
    """First-order predictions against re-solves along a path of one parameter.

    Attributes
    ----------
    parameter : str
        The parameter moved; every other parameter keeps its value.
    steps : ndarray of shape (k,)
        The path's coordinate: multipliers t (θ = t·θ₀), scalar values, or
        step numbers 0, 1, ... for a path of arbitrary values.
    step_kind : {"multiplier", "value", "index"}
    thetas : ndarray of shape (k, *parameter.shape)
        The parameter's value at each step.
    value, predicted_value : ndarray of shape (k,)
        Re-solved optimal value and f* + ∇f*·(θₖ − θ₀); ``value`` is NaN
        at a step whose solve failed.
    value_error : ndarray of shape (k,)
        |predicted_value − value|.
    primal, predicted_primal : dict of str to ndarray
        By variable name, shape (k, *variable.shape).
    dual, predicted_dual : dict of str to ndarray
        By constraint name, shape (k, *constraint.shape).
    error : ndarray of shape (k,)
        Largest absolute error of the predicted primal and dual entries.
    failures : tuple of (int, str)
        Steps whose re-solve failed, with the error message.
    """

    parameter: str
    steps: FloatArray
    step_kind: str
    thetas: FloatArray
    value: FloatArray
    predicted_value: FloatArray
    value_error: FloatArray
    primal: Mapping[str, FloatArray]
    predicted_primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    predicted_dual: Mapping[str, FloatArray]
    error: FloatArray
    failures: tuple[tuple[int, str], ...] = ()

    def __str__(self) -> str:
        from ._render import sweep_text

        return sweep_text(self)

    def __repr__(self) -> str:
        return (f"Sweep(parameter={self.parameter!r}, steps={self.steps.shape[0]}, "
                f"step_kind={self.step_kind!r}, max value_error="
                f"{np.nanmax(self.value_error, initial=0.0):.3g}, max error="
                f"{np.nanmax(self.error, initial=0.0):.3g})")


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    """Sensitivities of a solved model: objective, shadow prices, Jacobian blocks.

    Built by :func:`sensitivity` (or :meth:`Model.sensitivity`).

    Attributes
    ----------
    value : float
        Optimal value f* (the maximized value for ``Maximize``).
    sense : {"minimize", "maximize"}
    objective : dict of str to ObjectiveSensitivity
        ∂f*/∂θ and elasticities, per reported parameter.
    shadow_prices : dict of str to ShadowPrice
        Per constraint of the model.
    blocks : dict of (str, str) to BlockSensitivity
        Per (output, parameter) pair, in the order of ``outputs`` then
        ``parameters``.
    top : Ranking
        The most influential parameter entries.
    notes : list of str
        Caps hit, defaults applied, failed sweep steps.
    outputs : tuple of str
        Reported outputs (variables, and constraints for their duals).
    parameters : tuple of str
        Reported parameters.
    sweeps : dict of str to Sweep
        Sweeps requested with ``sweep=``.
    k : int
        The ``top`` argument: entries kept per block and per ranking.
    mode : {"forward", "reverse", "none"}
        Passes used for the Jacobian blocks.
    solves : int
        Solves with the stored factorization spent on the blocks.
    seconds : float
        Time to build the report (sweeps included).
    labels : dict of str to tuple of str
        The display label of every entry of every reported object, in
        column-major order (``"x[north]"``, ``"A[0, 1]"``, ``"b"``).
    output_values : dict of str to ndarray
        Each reported output's value at the solution, flattened column-major.
    """

    value: float
    sense: str
    objective: Mapping[str, ObjectiveSensitivity]
    shadow_prices: Mapping[str, ShadowPrice]
    blocks: Mapping[tuple[str, str], BlockSensitivity]
    top: Ranking
    notes: list[str]
    outputs: tuple[str, ...]
    parameters: tuple[str, ...]
    sweeps: Mapping[str, Sweep]
    k: int
    mode: str
    solves: int
    seconds: float
    labels: Mapping[str, tuple[str, ...]] = field(repr=False)
    output_values: Mapping[str, FloatArray] = field(repr=False)

    def __str__(self) -> str:
        from ._render import report_text

        return report_text(self)

    def __repr__(self) -> str:
        return (f"SensitivityReport(value={self.value:.6g}, outputs={list(self.outputs)}, "
                f"parameters={list(self.parameters)}, blocks={len(self.blocks)}, "
                f"mode={self.mode!r}, solves={self.solves}, notes={len(self.notes)})")

    def to_markdown(self) -> str:
        """The report as Markdown (headings and pipe tables, no plots)."""
        from ._render import report_markdown

        return report_markdown(self)

    def to_html(self, path: str | Path) -> Path:
        """Write the report as one self-contained HTML file.

        Tables and plots (a heatmap per stored ∂output/∂parameter block, a
        tornado chart of ∂f*/∂θ, one figure per sweep) are embedded: plots
        as base64 PNG, styles inline. Nothing is loaded from the network.

        Parameters
        ----------
        path : str or Path
            The file to write (parent folders must exist).

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        ImportError
            If matplotlib is missing (``pip install "diffmodel[report]"``).
        """
        from ._render import report_html

        out = Path(path)
        out.write_text(report_html(self), encoding="utf-8")
        return out

    def save_plots(self, folder: str | Path) -> list[Path]:
        """Save every plot of :meth:`to_html` as a PNG file in ``folder``.

        Returns
        -------
        list of Path
            The files written (``tornado.png``, ``heatmap-<output>-<parameter>.png``,
            ``sweep-<parameter>.png``). The folder is created if needed.

        Raises
        ------
        ImportError
            If matplotlib is missing (``pip install "diffmodel[report]"``).
        """
        from ._render import save_plots

        return save_plots(self, Path(folder))

    def to_dataframe(self) -> "pandas.DataFrame":
        """The report in long format, one row per derivative.

        Columns ``kind`` ("objective", "primal", "dual"), ``output``,
        ``output_index``, ``output_label``, ``parameter``,
        ``parameter_index``, ``parameter_label``, ``derivative``,
        ``elasticity``. Objective rows have output ``"f*"`` and index ``()``;
        stored blocks contribute every entry, capped blocks their largest.

        Raises
        ------
        ImportError
            If pandas is missing (``pip install "diffmodel[report]"``).
        """
        from ._render import report_dataframe

        return report_dataframe(self)

    def to_json(self) -> str:
        """The report as a JSON document (NaN written as null)."""
        from ._render import report_json

        return report_json(self)


# ---------------------------------------------------------------- helpers


class _Progress:
    """A progress bar on stderr, shown when forced or after PROGRESS_DELAY
    seconds of work if stderr is a terminal."""

    def __init__(self, total: int, what: str, enabled: bool | None) -> None:
        self.total = max(int(total), 1)
        self.what = what
        self.force = enabled is True
        self.off = enabled is False or total <= 0
        self.t0 = time.perf_counter()
        self.shown = False
        self.last = -1.0

    def update(self, done: int) -> None:
        if self.off:
            return
        now = time.perf_counter()
        if not self.shown:
            if not self.force:
                if now - self.t0 < PROGRESS_DELAY:
                    return
                isatty = getattr(sys.stderr, "isatty", None)
                if not (callable(isatty) and isatty()):
                    self.off = True
                    return
            self.shown = True
        elif now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        elapsed = now - self.t0
        eta = elapsed * (1.0 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(round(30 * frac))
        sys.stderr.write(f"\r{self.what}: {frac:4.0%} |{bar:<30}| {done}/{self.total} "
                         f"[{elapsed:.1f}s elapsed, {eta:.1f}s left]")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            self.update(self.total)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _check_model(model: object, call: str) -> "Model":
    from .model import Model

    if not isinstance(model, Model):
        raise ModelError(f"{call}: expected a diffmodel Model, got {type(model).__name__}")
    return model


def _names(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise ModelError(f"sensitivity(): {what} must be a name or a list of names, "
                             f"got {name!r}")
    return list(dict.fromkeys(names))


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Column-major index of entry ``flat`` in ``shape``."""
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(flat, shape, order="F"))


def _default_labels(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    size = int(np.prod(shape, dtype=np.int64))
    if not shape:
        return (name,)
    if len(shape) == 1:
        return tuple(f"{name}[{i}]" for i in range(size))
    return tuple(f"{name}[{', '.join(map(str, _index(k, shape)))}]" for k in range(size))


def _labels_for(name: str, shape: tuple[int, ...], given: object) -> tuple[str, ...]:
    """Display labels of the entries of ``name`` in column-major order.

    ``given`` is None, a sequence of one label per entry (column-major), or
    for a matrix a pair (row labels, column labels).
    """
    if given is None:
        return _default_labels(name, shape)
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise ModelError(f"labels[{name!r}]: expected a list of {size} labels, got "
                         f"{type(given).__name__}")
    items = list(given)
    if (len(shape) == 2 and len(items) == 2 and all(
            isinstance(part, Sequence) and not isinstance(part, str) for part in items)):
        rows, cols = [list(map(str, part)) for part in items]  # type: ignore[call-overload]
        if (len(rows), len(cols)) != shape:
            raise ModelError(f"labels[{name!r}]: expected {shape[0]} row labels and "
                             f"{shape[1]} column labels, got {len(rows)} and {len(cols)}")
        return tuple(f"{name}[{rows[i]}, {cols[j]}]"
                     for i, j in (_index(k, shape) for k in range(size)))
    if len(items) != size:
        hint = (" (one per entry in column-major order, or a pair (row labels, column labels))"
                if len(shape) == 2 else "")
        raise ModelError(f"labels[{name!r}]: expected {size} labels{hint}, got {len(items)}")
    if not shape:
        return (f"{name}[{items[0]}]",)
    return tuple(f"{name}[{item}]" for item in items)


def _elasticity(derivative: FloatArray, theta: FloatArray, y: FloatArray,
                scale: float) -> FloatArray:
    """derivative · θ / y (broadcast), NaN where |y| ≤ ZERO_TOL · max(1, scale)."""
    zero = np.abs(y) <= ZERO_TOL * max(1.0, scale)
    safe = np.where(zero, 1.0, y)
    out = derivative * theta / safe
    return np.where(zero, np.nan, out)


class _BlockAccumulator:
    """Running norm, column norms, largest entries (and optionally the dense
    block) of one ∂output/∂parameter block, fed piece by piece."""

    def __init__(self, rows: int, cols: int, k: int, store: bool) -> None:
        self.k = k
        self.sumsq = 0.0
        self.colsq = np.zeros(cols)
        self.vals = np.zeros(0)
        self.ii = np.zeros(0, dtype=np.int64)
        self.jj = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((rows, cols)) if store else None

    def add(self, piece: FloatArray, i0: int, j0: int) -> None:
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
        # Largest magnitude first; ties by position, for a stable order.
        order = np.lexsort((self.jj, self.ii, -np.abs(self.vals)))
        return self.vals[order], self.ii[order], self.jj[order]


def _top(scores: FloatArray, k: int) -> IntArray:
    """Indices of the k largest scores, largest first; ties go to the lower index."""
    size = scores.shape[0]
    if size > k:
        kth = np.partition(scores, size - k)[size - k]
        above = np.flatnonzero(scores > kth)
        idx = np.concatenate([above, np.flatnonzero(scores == kth)[: k - above.shape[0]]])
    else:
        idx = np.arange(size)
    return idx[np.lexsort((idx, -scores[idx]))]


# ---------------------------------------------------------------- sensitivity


def sensitivity(
    model: "Model",
    of: str | Sequence[str] | None = None,
    wrt: str | Sequence[str] | None = None,
    labels: Labels | None = None,
    top: int = 10,
    max_entries: int = 2_000_000,
    progress: bool | None = None,
    sweep: Mapping[str, ArrayLike] | None = None,
) -> SensitivityReport:
    """A sensitivity report at the current solution of ``model``.

    Parameters
    ----------
    model : Model
        A solved model.
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
        Sweeps to include, by parameter name: values as for :func:`sweep`
        (for a scalar parameter its values; for another parameter
        multipliers of its current value, or a path of values of shape
        (k, *shape)).

    Returns
    -------
    SensitivityReport

    Raises
    ------
    NotSolvedError
        If the model has no successful solve.
    ModelError
        For an unknown name (the known names are listed), bad labels or a
        bad ``top`` / ``max_entries``.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Notes
    -----
    Conventions. Blocks are dz/dθ for z = (x, ν), as :meth:`Model.jacobian`:
    rows follow the output and columns the parameter, each flattened in
    column-major order. Shadow prices: for a constraint stored by CVXPY as
    ``lhs == rhs`` with dual ν (Lagrangian f + νᵀ(lhs − rhs)), relaxing it
    to ``lhs == rhs + ε`` changes the optimal value at the rate
    ∂f*/∂ε = −ν (``Minimize``) or +ν (``Maximize``); for ``A @ x == b`` with
    a parameter b this is ∂f*/∂b = −ν.

    Cost. ∂f*/∂θ needs no solve (envelope theorem). The blocks take
    min(output entries, parameter entries) solves with the factorization
    of the last solve, in chunks of at most 256 passes, forward (one per
    parameter entry) or reverse (one per output entry).

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> _ = model.solve(b=2.0)
    >>> report = model.sensitivity()
    >>> report.objective["b"].gradient          # f* = b²/2
    array(2.)
    >>> report.shadow_prices["total"].price     # relax sum(x) == b + ε
    array(2.)
    >>> print(report.blocks["x", "b"].largest[0])
    x[0] w.r.t. b: 0.5
    """
    t_start = time.perf_counter()
    model = _check_model(model, "sensitivity()")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ModelError(f"sensitivity(): top must be a positive integer, got {top!r}")
    if (isinstance(max_entries, bool) or not isinstance(max_entries, (int, np.integer))
            or max_entries < 0):
        raise ModelError(f"sensitivity(): max_entries must be a non-negative integer, "
                         f"got {max_entries!r}")
    if progress is not None and not isinstance(progress, bool):
        raise ModelError(f"sensitivity(): progress must be None, True or False, got {progress!r}")
    k = int(top)
    qp, maps = model._qp, model._maps
    outputs = _names(of, "of")
    if outputs is not None:
        for name in outputs:
            model._output_rows(name, "sensitivity()")
    params = _names(wrt, "wrt")
    if params is None:
        params = list(qp.parameters)
    check_names(params, qp.parameters, "parameter", "sensitivity()")
    known = {**qp.variables, **qp.constraints, **qp.parameters}
    given_labels: dict[str, object] = {}
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise ModelError("sensitivity(): labels must be a dict of name to list of labels")
        for name, lab in labels.items():
            if name not in known:
                choices = ", ".join(repr(n) for n in known) or "none"
                raise ModelError(f"sensitivity(): labels given for unknown name {name!r} "
                                 f"(the model's variables, constraints and parameters: "
                                 f"{choices})")
            given_labels[name] = lab
    sweeps_in = dict(sweep or {})
    check_names(sweeps_in, qp.parameters, "parameter", "sensitivity(sweep=...)")

    state = model._ready("sensitivity()")
    z, theta = state.z, state.theta
    solution = state.solution
    f_star = float(solution.value)
    n = maps.n
    notes: list[str] = []

    # Default outputs: everything when small, otherwise the variables.
    n_cols = sum(qp.parameters[p].size for p in params)
    if outputs is None:
        everything = [*qp.variables, *qp.constraints]
        rows_all = sum(known[o].size for o in everything)
        if rows_all * n_cols <= max_entries or not qp.variables:
            outputs = everything
        else:
            outputs = list(qp.variables)
            if qp.constraints:
                notes.append(
                    f"of= not given: the Jacobian of every variable and dual has "
                    f"{rows_all:,} × {n_cols:,} entries, more than max_entries="
                    f"{max_entries:,}, so only the variables are reported; pass "
                    f"of=[...] to include constraints' duals")

    report_labels: dict[str, tuple[str, ...]] = {}
    for name in dict.fromkeys([*outputs, *params, *qp.constraints, *given_labels]):
        report_labels[name] = _labels_for(name, known[name].shape, given_labels.get(name))

    # ∂f*/∂θ by the envelope theorem (no solve).
    grad = qp.sign * objective_gradient(maps, z)
    objective: dict[str, ObjectiveSensitivity] = {}
    for p in params:
        b = qp.parameters[p]
        g = grad[1 + b.offset: 1 + b.stop]
        t = theta[1 + b.offset: 1 + b.stop]
        e = _elasticity(g, t, np.full_like(g, f_star), abs(f_star))
        objective[p] = ObjectiveSensitivity(
            parameter=p, value=t.reshape(b.shape, order="F").copy(),
            gradient=g.reshape(b.shape, order="F").copy(),
            elasticity=e.reshape(b.shape, order="F"))

    # Shadow prices of every constraint.
    shadow: dict[str, ShadowPrice] = {}
    for c, con in model._constraints.items():
        args = con.args
        lhs = _expression_text(args[0])
        rhs = _expression_text(args[1]) if len(args) > 1 else "0"
        nu = np.array(solution.dual[c], dtype=np.float64)
        sense = "maximized" if qp.sign < 0 else "minimized"
        meaning = (
            f"change of the optimal ({sense}) objective per unit increase of the "
            f"right-hand side: ∂f*/∂ε for {c} relaxed to {_short(lhs)} == "
            f"{_short(rhs)} + ε; equals {'+' if qp.sign < 0 else '−'}ν "
            f"(CVXPY's dual, Lagrangian f + νᵀ(lhs − rhs))")
        shadow[c] = ShadowPrice(constraint=c, lhs=lhs, rhs=rhs, dual=nu,
                                price=np.array(-qp.sign * nu), meaning=meaning)

    # Jacobian blocks, streamed.
    out_blocks = []
    for o in outputs:
        blk, shift = model._output_rows(o, "sensitivity()")
        out_blocks.append((o, "primal" if shift == 0 else "dual", blk,
                           np.arange(shift + blk.offset, shift + blk.stop, dtype=np.int64)))
    par_blocks = [(p, qp.parameters[p],
                   np.arange(1 + qp.parameters[p].offset, 1 + qp.parameters[p].stop,
                             dtype=np.int64)) for p in params]
    R = sum(ob[3].shape[0] for ob in out_blocks)
    C = n_cols
    store = R * C <= max_entries
    if not store:
        notes.append(
            f"capped: the Jacobian of the reported outputs has {R:,} × {C:,} = {R * C:,} "
            f"entries, more than max_entries={max_entries:,}; each block keeps its norm, "
            f"column norms and its {k} largest entries, and no heatmap. Narrow the report "
            f"with of=/wrt=, raise max_entries, or raise top= for more entries")
    acc: dict[tuple[str, str], _BlockAccumulator] = {
        (ob[0], pb[0]): _BlockAccumulator(ob[3].shape[0], pb[2].shape[0], k, store)
        for ob in out_blocks for pb in par_blocks
    }
    solves = 0
    mode = "none"
    if R and C:
        all_rows = np.concatenate([ob[3] for ob in out_blocks])
        all_cols = np.concatenate([pb[2] for pb in par_blocks])
        row_start = np.cumsum([0] + [ob[3].shape[0] for ob in out_blocks])
        col_start = np.cumsum([0] + [pb[2].shape[0] for pb in par_blocks])
        reverse = R < C
        mode = "reverse" if reverse else "forward"
        passes, other = (R, C) if reverse else (C, R)
        chunk = int(np.clip(CHUNK_BUDGET // (other + maps.dim), 1, MAX_CHUNK))
        bar = _Progress(passes, f"sensitivity ({mode} passes)", progress)
        try:
            for s0 in range(0, passes, chunk):
                s1 = min(s0 + chunk, passes)
                if reverse:
                    r0, r1, c0, c1 = s0, s1, 0, C
                else:
                    r0, r1, c0, c1 = 0, R, s0, s1
                J = jacobian_block(model._fact, z, all_rows[r0:r1], all_cols[c0:c1])
                solves += min(r1 - r0, c1 - c0)
                for oi, ob in enumerate(out_blocks):
                    a, b_ = max(r0, int(row_start[oi])), min(r1, int(row_start[oi + 1]))
                    if a >= b_:
                        continue
                    for pi, pb in enumerate(par_blocks):
                        c, d = max(c0, int(col_start[pi])), min(c1, int(col_start[pi + 1]))
                        if c >= d:
                            continue
                        acc[ob[0], pb[0]].add(J[a - r0: b_ - r0, c - c0: d - c0],
                                              a - int(row_start[oi]), c - int(col_start[pi]))
                del J
                bar.update(s1)
        finally:
            bar.close()

    output_values: dict[str, FloatArray] = {ob[0]: z[ob[3]].copy() for ob in out_blocks}
    blocks: dict[tuple[str, str], BlockSensitivity] = {}
    for o, kind, oblk, _ in out_blocks:
        y = output_values[o]
        yscale = float(np.abs(y).max(initial=0.0))
        for p, pblk, pcols in par_blocks:
            a = acc[o, p]
            vals, ii, jj = a.largest()
            t = theta[pcols]
            el = _elasticity(vals, t[jj], y[ii], yscale)
            largest = tuple(
                Entry(o, _index(int(i), oblk.shape), report_labels[o][i], p,
                      _index(int(j), pblk.shape), report_labels[p][j], float(v), float(e))
                for v, i, j, e in zip(vals, ii, jj, el))
            rows = None
            if a.matrix is not None:
                rows = _LazyEntries(o, oblk.shape, p, pblk.shape, a.matrix, y, t, yscale,
                                    report_labels[o], report_labels[p])
            blocks[o, p] = BlockSensitivity(
                output=o, parameter=p, kind=kind, output_shape=oblk.shape,
                parameter_shape=pblk.shape, norm=float(np.sqrt(a.sumsq)),
                max_abs=float(abs(vals[0])) if vals.shape[0] else 0.0,
                largest=largest, jacobian=a.matrix, _rows=rows)

    # Rankings.
    def influences(scores: FloatArray, kind_sq: bool) -> tuple[Influence, ...]:
        values = np.sqrt(scores) if kind_sq else scores
        out = []
        offsets = np.cumsum([0] + [pb[2].shape[0] for pb in par_blocks])
        for idx in _top(values, k):
            pi = int(np.searchsorted(offsets, idx, side="right") - 1)
            p, pblk, _ = par_blocks[pi]
            j = int(idx - offsets[pi])
            out.append(Influence(p, _index(j, pblk.shape), report_labels[p][j],
                                 float(values[idx])))
        return tuple(out)

    if par_blocks:
        obj_scores = np.abs(np.concatenate([grad[pb[2]] for pb in par_blocks]))
        per_output = {
            o: influences(np.concatenate([acc[o, pb[0]].colsq for pb in par_blocks]), True)
            for o, *_ in out_blocks}
        total = np.zeros(C)
        for o, *_ in out_blocks:
            total += np.concatenate([acc[o, pb[0]].colsq for pb in par_blocks])
        ranking = Ranking(objective=influences(obj_scores, False),
                          overall=influences(total, True) if out_blocks else (),
                          per_output=per_output)
    else:
        ranking = Ranking((), (), {o: () for o in outputs})
    if not qp.parameters:
        notes.append("the model has no parameters: there is nothing to differentiate")

    sweeps: dict[str, Sweep] = {}
    for p, values in sweeps_in.items():
        sw = _run_sweep(model, p, values, progress=progress)
        sweeps[p] = sw
        for i, msg in sw.failures:
            notes.append(f"sweep of {p!r}: the re-solve at step {i} failed: {msg}")

    return SensitivityReport(
        value=f_star, sense="maximize" if qp.sign < 0 else "minimize",
        objective=objective, shadow_prices=shadow, blocks=blocks, top=ranking,
        notes=notes, outputs=tuple(outputs), parameters=tuple(params), sweeps=sweeps,
        k=k, mode=mode, solves=solves, seconds=time.perf_counter() - t_start,
        labels=report_labels, output_values=output_values)


def _expression_text(expr: object, limit: int = 60) -> str:
    """One line of CVXPY's text for ``expr``, numeric array literals shown as ``C``.

    CVXPY prints constant matrices in full, over several lines; a report only
    needs the structure, e.g. ``C @ p + -(C @ f)``.
    """
    text = " ".join(str(expr).split()).replace("Approx(", "(")
    # An array literal starts after a space, "(", "," or "[" (not an index like x[0]).
    literal = re.compile(r"(?<![\w\]\)])\[[-+0-9.eE ,…◦]*(?:\.\.\.)?[-+0-9.eE ,…◦]*\]")
    while True:
        shorter = literal.sub("◦", text)
        if shorter == text:
            break
        text = shorter
    text = re.sub(r"◦( ◦)*", "C", text)
    return _short(text, limit)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _LazyEntries(Sequence[Entry]):
    """Every entry of a stored block as :class:`Entry` rows, built on access."""

    def __init__(self, o: str, oshape: tuple[int, ...], p: str, pshape: tuple[int, ...],
                 matrix: FloatArray, y: FloatArray, t: FloatArray, yscale: float,
                 olabels: tuple[str, ...], plabels: tuple[str, ...]) -> None:
        self.args = (o, oshape, p, pshape, matrix, y, t, yscale, olabels, plabels)

    def __len__(self) -> int:
        return int(self.args[4].size)

    def __getitem__(self, item):  # type: ignore[no-untyped-def, override]
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        o, oshape, p, pshape, matrix, y, t, yscale, olabels, plabels = self.args
        if item < 0:
            item += len(self)
        if not 0 <= item < len(self):
            raise IndexError(item)
        i, j = divmod(int(item), matrix.shape[1])
        d = float(matrix[i, j])
        e = float(_elasticity(np.array(d), np.array(t[j]), np.array(y[i]), yscale))
        return Entry(o, _index(i, oshape), olabels[i], p, _index(j, pshape), plabels[j], d, e)


# ---------------------------------------------------------------- what-if


def _delta_vector(model: "Model", delta: Mapping[str, ArrayLike], call: str) -> FloatArray:
    if not isinstance(delta, Mapping):
        raise ModelError(f"{call}: delta must be a dict of parameter name to change")
    check_names(delta, model._qp.parameters, "parameter", call)
    dtheta = np.zeros(model._qp.n_theta + 1)
    for name, value in delta.items():
        block = model._qp.parameters[name]
        arr = check_array(value, block.shape, f"{call}: change of parameter '{name}'")
        dtheta[1 + block.offset: 1 + block.stop] = arr.ravel(order="F")
    return dtheta


def _split(model: "Model", z: FloatArray) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
    n = model._maps.n
    primal = {v: z[b.offset: b.stop].reshape(b.shape, order="F").copy()
              for v, b in model._qp.variables.items()}
    dual = {c: z[n + b.offset: n + b.stop].reshape(b.shape, order="F").copy()
            for c, b in model._qp.constraints.items()}
    return primal, dual


def predict(model: "Model", delta: Mapping[str, ArrayLike]) -> Prediction:
    """First-order prediction of the solution for a change δ of parameters.

    Parameters
    ----------
    model : Model
        A solved model.
    delta : dict of str to array_like
        The change of any subset of parameters, by name, shaped like each.

    Returns
    -------
    Prediction
        z + (dz/dθ) δ for the primal and dual solution (one forward solve
        with the stored factorization) and f* + ∇f*·δ for the optimal value
        (∇f* by the envelope theorem, no solve).

    Raises
    ------
    NotSolvedError
        If the model has no successful solve.
    ModelError
        For an unknown name, a wrong shape, NaN or inf.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> _ = model.solve(b=2.0)
    >>> guess = model.predict({"b": 0.5})    # f* = b²/2: 2 + 2·0.5
    >>> guess.value, guess.primal["x"]
    (3.0, array([1.25, 1.25]))
    """
    model = _check_model(model, "predict()")
    dtheta = _delta_vector(model, delta, "predict()")
    state = model._ready("predict()")
    dz = tangent(model._fact, state.z, dtheta)
    grad = model._qp.sign * objective_gradient(model._maps, state.z)
    primal, dual = _split(model, state.z + dz)
    base = float(state.solution.value)
    copies = {name: np.array(check_array(v, model._qp.parameters[name].shape, name))
              for name, v in delta.items()}
    return Prediction(delta=copies, value=base + float(grad[1:] @ dtheta[1:]),
                      primal=primal, dual=dual, base_value=base)


def sweep(
    model: "Model",
    name: str,
    values: ArrayLike,
    *,
    scale: bool | None = None,
    progress: bool | None = None,
) -> Sweep:
    """Compare the first-order prediction with re-solves along a path.

    Parameters
    ----------
    model : Model
        A solved model; the path starts from its current solution θ₀.
    name : str
        The parameter to move (all others keep their values at the solution).
    values : array_like
        The path: shape (k,) of values for a scalar parameter, or of
        multipliers t (θ = t·θ₀) for any other parameter; or shape
        (k, *parameter.shape) of values.
    scale : bool, optional
        Force the reading of a (k,) array as multipliers (True) or, for a
        scalar parameter only, as values (False).
    progress : bool or None, default None
        Progress bar on stderr, as in :func:`sensitivity`.

    Returns
    -------
    Sweep
        For each step the re-solved and the predicted optimal value and
        solution, and their errors. Predictions use the derivatives at θ₀:
        z₀ + (dz/dθ)(θₖ − θ₀) and f₀ + ∇f*·(θₖ − θ₀).

    Raises
    ------
    NotSolvedError
        If the model has no successful solve.
    ModelError
        For an unknown name, a path of the wrong shape or with values the
        parameter does not accept.

    Notes
    -----
    Each step is one solve (with the solver of the last solution); a failed
    step is recorded (NaN values, ``failures``) instead of raised. At the
    end the model is re-solved at θ₀ and every parameter's value is put
    back, so ``model.solution`` holds the same numbers as before (in a new
    :class:`Solution` object).

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> _ = model.solve(b=2.0)
    >>> path = model.sweep("b", [2.0, 3.0])   # f* = b²/2, prediction 2 + 2(b − 2)
    >>> path.value, path.predicted_value, path.value_error
    (array([2. , 4.5]), array([2., 4.]), array([0. , 0.5]))
    """
    model = _check_model(model, "sweep()")
    qp = model._qp
    check_names([name], qp.parameters, "parameter", "sweep()")
    if progress is not None and not isinstance(progress, bool):
        raise ModelError(f"sweep(): progress must be None, True or False, got {progress!r}")
    block = qp.parameters[name]
    shape = block.shape
    state = model._ready("sweep()")
    theta0 = state.theta
    p0 = theta0[1 + block.offset: 1 + block.stop].reshape(shape, order="F").copy()
    try:
        raw = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"sweep(): values for parameter '{name}' must be numeric: {exc}") from None
    if raw.ndim == 0:
        raw = raw.reshape(1)
    if raw.shape[0] == 0:
        raise ModelError(f"sweep(): values for parameter '{name}' are empty")
    if not np.isfinite(raw).all():
        raise ModelError(f"sweep(): values for parameter '{name}' contain NaN or inf")
    if raw.ndim == 1 and (scale is True or (scale is None and shape != ())):
        kind = "multiplier"
        steps = raw.copy()
        thetas = steps.reshape((-1,) + (1,) * len(shape)) * p0
    elif raw.ndim == 1 and shape == ():
        kind = "value"
        steps = raw.copy()
        thetas = raw.copy()
    elif raw.shape[1:] == shape and raw.ndim == 1 + len(shape):
        if scale is True:
            raise ModelError(f"sweep(): scale=True needs a 1-D array of multipliers, got "
                             f"shape {raw.shape}")
        kind = "index"
        steps = np.arange(raw.shape[0], dtype=np.float64)
        thetas = raw.copy()
    else:
        raise ModelError(
            f"sweep(): values for parameter '{name}' must have shape (k,) or "
            f"(k, *{shape}), got {raw.shape}" + (
                "; for a scalar parameter scale=False reads (k,) as values" if shape else ""))
    param = model._parameters[name]
    for i, th in enumerate(thetas):
        check_parameter_value(param, f"{name} (sweep step {i})", th)

    # Predictions first, with the factorization at θ₀.
    steps_n = thetas.shape[0]
    grad = qp.sign * objective_gradient(model._maps, state.z)
    z0 = state.z
    f0 = float(state.solution.value)
    # θₖ − θ₀, each step flattened column-major: shape (k, size).
    dflat = np.stack([(th - p0).ravel(order="F") for th in thetas])
    DT = np.zeros((qp.n_theta + 1, steps_n))
    DT[1 + block.offset: 1 + block.stop, :] = dflat.T
    if kind == "multiplier":
        direction = np.zeros(qp.n_theta + 1)
        direction[1 + block.offset: 1 + block.stop] = p0.ravel(order="F")
        dz1 = tangent(model._fact, z0, direction)
        DZ = np.outer(dz1, steps - 1.0)
    else:
        DZ = np.empty((z0.shape[0], steps_n))
        for i in range(steps_n):
            DZ[:, i] = tangent(model._fact, z0, DT[:, i])
    predicted_z = z0[:, None] + DZ
    predicted_value = f0 + grad[1:] @ DT[1:]

    # Re-solves.
    solver = state.solution.solver
    base = {p: theta0[1 + b.offset: 1 + b.stop].reshape(b.shape, order="F").copy()
            for p, b in qp.parameters.items()}
    saved = {p: (None if par.value is None else np.array(par.value))
             for p, par in model._parameters.items()}
    actual_z = np.full_like(predicted_z, np.nan)
    actual_value = np.full(steps_n, np.nan)
    failures: list[tuple[int, str]] = []
    bar = _Progress(steps_n, f"sweep of {name!r}", progress)
    try:
        for i in range(steps_n):
            try:
                sol = model.solve(solver=solver, **{**base, name: thetas[i]})
            except SolverError as exc:
                failures.append((i, str(exc)))
            else:
                actual_value[i] = sol.value
                actual_z[:, i] = model._state.z if model._state is not None else np.nan
            bar.update(i + 1)
    finally:
        bar.close()
        model.solve(solver=solver, **base)
        for p, old in saved.items():
            model._parameters[p].save_value(old)

    def per_step(Z: FloatArray) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        n = model._maps.n
        primal = {v: Z[b.offset: b.stop].T.reshape((steps_n, *b.shape), order="F")
                  for v, b in qp.variables.items()}
        dual = {c: Z[n + b.offset: n + b.stop].T.reshape((steps_n, *b.shape), order="F")
                for c, b in qp.constraints.items()}
        return primal, dual

    named = np.concatenate(
        [np.arange(b.offset, b.stop) for b in qp.variables.values()]
        + [np.arange(model._maps.n + b.offset, model._maps.n + b.stop)
           for b in qp.constraints.values()]).astype(np.int64)
    diff = np.abs(predicted_z[named] - actual_z[named])
    error = diff.max(axis=0, initial=0.0) if named.shape[0] else np.zeros(steps_n)
    error = np.where(np.isnan(actual_value), np.nan, error)
    primal, dual = per_step(actual_z)
    ppred, dpred = per_step(predicted_z)
    return Sweep(parameter=name, steps=steps, step_kind=kind, thetas=thetas,
                 value=actual_value, predicted_value=predicted_value,
                 value_error=np.abs(predicted_value - actual_value),
                 primal=primal, predicted_primal=ppred, dual=dual, predicted_dual=dpred,
                 error=error, failures=tuple(failures))


_run_sweep = sweep  # sensitivity()'s argument ``sweep`` shadows the function
