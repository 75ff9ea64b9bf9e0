"""The results of the analyses: frozen dataclasses, and their renderings.

:class:`SensitivityReport` (from :func:`~diffmodel.analysis.sensitivity`)
holds :class:`ObjectiveSensitivity`, :class:`ShadowPrice`,
:class:`BlockSensitivity` (with :class:`Entry` rows), a :class:`Ranking`
of :class:`Influence` items and a
:class:`~diffmodel.analysis.ParameterRange` per parameter. The results of
:func:`~diffmodel.analysis.predict` and :func:`~diffmodel.analysis.sweep`,
:class:`Prediction` and :class:`Sweep`, live in :mod:`.whatif` (re-exported
here).
Every rendering method delegates to :mod:`diffmodel.analysis.render`; plots
and DataFrames need the ``report`` extra (``pip install "diffmodel[report]"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._common import BoolArray, FloatArray, elasticity
from .labels import entry_index
from .render import frames, html, markdown, plots, text
from .whatif import Prediction, Sweep

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .ranging import ParameterRange

__all__ = [
    "Entry", "ObjectiveSensitivity", "ShadowPrice", "BlockSensitivity", "Influence",
    "Ranking", "Prediction", "Sweep", "SensitivityReport", "BlockValues",
]


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
        is 0, NaN where the output entry is 0 (see
        :data:`diffmodel.analysis._common.ZERO_TOL`).
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
    threshold : float
        Entries of ``gradient`` at or below this in magnitude are within the
        error the solution's accuracy allows, and are set to 0 (see
        :mod:`diffmodel.analysis.significance`).
    """

    parameter: str
    value: FloatArray
    gradient: FloatArray
    elasticity: FloatArray
    threshold: float = 0.0


@dataclass(frozen=True, eq=False)
class ShadowPrice:
    """The dual of a named constraint and the price it implies.

    Attributes
    ----------
    constraint : str
        The constraint's name.
    lhs, rhs : str
        The two sides as CVXPY stores them (``constraint.args``), which may
        be swapped with respect to the written order (see docs/math.md);
        numeric array literals read ``C``. An inequality reads
        ``lhs <= rhs`` (``a >= b`` is stored as ``b <= a``).
    dual : ndarray
        ν, with CVXPY's sign (Lagrangian f + νᵀ(lhs − rhs); ν ≥ 0 for an
        inequality), shaped like the constraint.
    price : ndarray
        ∂f*/∂ε for the constraint relaxed to ``lhs == rhs + ε`` (or
        ``lhs <= rhs + ε``), entrywise: the change of the optimal objective
        per unit increase of the right-hand side. Equals −ν for ``Minimize``
        and +ν for ``Maximize``.
    meaning : str
        The statement above, with this constraint's sides.
    relation : {"==", "<="}
        The constraint's relation.
    slack : ndarray or None
        For an inequality, rhs − lhs ≥ 0 entrywise (0 on binding rows),
        shaped like the constraint; None for an equality.
    status : tuple of str
        Per row (column-major): ``"equality"``; or for an inequality
        ``"binding"``, ``"not binding"``, ``"weakly active"`` (binding with a
        zero multiplier) or ``"dependent"`` (binding, and linearly dependent
        on other binding rows).
    threshold : float
        Duals (and prices) at or below this in magnitude are within the error
        the solution's accuracy allows, and are set to 0 (see
        :mod:`diffmodel.analysis.significance`).
    """

    constraint: str
    lhs: str
    rhs: str
    dual: FloatArray
    price: FloatArray
    meaning: str
    relation: str = "=="
    slack: FloatArray | None = None
    status: tuple[str, ...] = ()
    threshold: float = 0.0


@dataclass(frozen=True, eq=False)
class BlockValues:
    """What a stored block needs to list its entries: the output's and the
    parameter's values (flattened column-major), and their labels."""

    output: FloatArray
    theta: FloatArray
    output_labels: tuple[str, ...]
    parameter_labels: tuple[str, ...]


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
        The largest nonzero entries by magnitude (at most ``top``), largest
        first; entries within the threshold are never listed.
    jacobian : ndarray or None
        The dense block, shape (output size, parameter size), rows and
        columns in column-major order as in :meth:`Solution.jacobian`, with
        the entries within the threshold set to 0; None when the report was
        capped by ``max_entries``.
    threshold : float
        Entries at or below this in magnitude are within the error the
        solution's accuracy allows, and count as zero: in ``jacobian``,
        ``norm``, ``largest`` and the rankings (see
        :mod:`diffmodel.analysis.significance`).
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
    threshold: float = 0.0
    _values: BlockValues | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(output size, parameter size)."""
        return (int(np.prod(self.output_shape, dtype=np.int64)),
                int(np.prod(self.parameter_shape, dtype=np.int64)))

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry (row-major over output then parameter entries) when the
        block is stored, otherwise only :attr:`largest`."""
        J, values = self.jacobian, self._values
        if J is None or values is None:
            return self.largest
        rows, cols = J.shape
        y, t = values.output, values.theta
        el = elasticity(J, t[None, :], y[:, None], float(np.abs(y).max(initial=0.0)))
        oidx = [entry_index(i, self.output_shape) for i in range(rows)]
        pidx = [entry_index(j, self.parameter_shape) for j in range(cols)]
        return tuple(
            Entry(self.output, oidx[i], values.output_labels[i], self.parameter, pidx[j],
                  values.parameter_labels[j], float(J[i, j]), float(el[i, j]))
            for i in range(rows) for j in range(cols))


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
        column ∂(outputs)/∂θⱼ in the solution rankings. Always positive:
        an entry whose numbers all count as zero is not ranked.
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
class SensitivityReport:
    """Sensitivities of a solution: objective, shadow prices, Jacobian blocks.

    Built by :func:`~diffmodel.analysis.sensitivity` (or
    :meth:`Solution.sensitivity`, :meth:`Model.sensitivity`).

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
    active : dict of str to ndarray of bool
        The binding rows of every constraint, shaped like it (all True for an
        equality): ``Solution.active``.
    degenerate : dict of str to ndarray of bool
        Weakly active rows and binding rows that depend linearly on others,
        by constraint: ``Solution.degenerate``.
    ranges_detail : dict of str to ParameterRange
        Per reported parameter (unless ``ranges=False``): the range of each
        entry over which the active set holds, and what ends it. See
        :attr:`ranges` and :func:`~diffmodel.analysis.ranging`.
    range_solves : int
        Solves with the stored factorization spent on the ranges.
    accuracy : float
        The solution's accuracy estimate (:attr:`Solution.accuracy`).
    resolution : float
        max(10 · accuracy, 1e-11): the relative error of the numbers of the
        report. Each group of numbers (a constraint's duals, a parameter's
        ∂f*/∂θ, a block) has a threshold, this times its scale, at or below
        which its numbers count as zero: shown as 0, never ranked (see
        :mod:`diffmodel.analysis.significance`).

    Notes
    -----
    Numbers within their threshold are set to 0 in the report's arrays
    (``gradient``, ``dual``, ``price``, ``jacobian``); the raw numbers are
    those of :meth:`Solution.objective_gradient`, :attr:`Solution.dual` and
    :meth:`Solution.jacobian`.
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
    active: Mapping[str, BoolArray] = field(default_factory=dict, repr=False)
    degenerate: Mapping[str, BoolArray] = field(default_factory=dict, repr=False)
    ranges_detail: Mapping[str, ParameterRange] = field(default_factory=dict, repr=False)
    range_solves: int = 0
    accuracy: float = 0.0
    resolution: float = 0.0

    @property
    def ranges(self) -> dict[str, tuple[FloatArray, FloatArray]]:
        """``(low, high)`` by parameter name, each shaped like the parameter: entry k
        can move within [low[k], high[k]], the others fixed, before the active
        set changes (±inf: unbounded). Exact for entries that enter only q, b
        and h, first order for entries of P, A and G (see :attr:`ranges_detail`)."""
        return {p: (r.low, r.high) for p, r in self.ranges_detail.items()}

    def __str__(self) -> str:
        return text.report_text(self)

    def __repr__(self) -> str:
        return (f"SensitivityReport(value={self.value:.6g}, outputs={list(self.outputs)}, "
                f"parameters={list(self.parameters)}, blocks={len(self.blocks)}, "
                f"mode={self.mode!r}, solves={self.solves}, notes={len(self.notes)})")

    def to_markdown(self) -> str:
        """The report as Markdown (headings and pipe tables, no plots).

        Returns
        -------
        str
        """
        return markdown.report_markdown(self)

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
            If matplotlib is missing (``pip install "diffmodel[report]"``);
            nothing is written then.
        """
        out = Path(path)
        out.write_text(html.report_html(self), encoding="utf-8")
        return out

    def save_plots(self, folder: str | Path) -> list[Path]:
        """Save every plot of :meth:`to_html` as a PNG file in ``folder``.

        Parameters
        ----------
        folder : str or Path
            Created if needed.

        Returns
        -------
        list of Path
            The files written (``tornado.png``, ``heatmap-<output>-<parameter>.png``,
            ``ranges.png``, ``sweep-<parameter>.png``).

        Raises
        ------
        ImportError
            If matplotlib is missing (``pip install "diffmodel[report]"``).
        """
        return plots.save_plots(self, Path(folder))

    def to_dataframe(self, table: str = "derivatives") -> pandas.DataFrame:
        """The report's numbers as a DataFrame.

        Parameters
        ----------
        table : {"derivatives", "constraints", "ranges"}, default "derivatives"
            ``"derivatives"``: long format, one row per derivative, columns
            ``kind`` ("objective", "primal", "dual"), ``output``,
            ``output_index``, ``output_label``, ``parameter``,
            ``parameter_index``, ``parameter_label``, ``derivative``,
            ``elasticity``; objective rows have output ``"f*"`` and index
            ``()``; stored blocks contribute every entry, capped blocks
            their largest. ``"constraints"``: one row per constraint row,
            with its slack, dual, price and status (the active set).
            ``"ranges"``: one row per entry of the reported parameters, with
            its range and what ends it on each side.

        Returns
        -------
        pandas.DataFrame
            See :data:`diffmodel.analysis.render.frames.TABLES` for the columns.

        Raises
        ------
        ValueError
            For another ``table``.
        ImportError
            If pandas is missing (``pip install "diffmodel[report]"``).
        """
        return frames.report_dataframe(self, table)

    def to_json(self) -> str:
        """The report as a JSON document (arrays as nested lists, NaN written as null).

        Returns
        -------
        str
        """
        return frames.report_json(self)
