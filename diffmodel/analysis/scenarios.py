"""Sensitivities across scenarios: a :class:`ScenarioReport` of a batch.

:func:`scenario_sensitivity` summarizes a :class:`~diffmodel.BatchSolution`
(from :meth:`Model.solve_batch`, on any executor) without solving anything
again:

- the objective sensitivity ∂f*/∂θ of every scenario, from its optimum
  (x, y) by the envelope theorem, for the whole batch at once, and its
  elasticity ∂f*/∂θ · θ / f*; summarized per parameter entry by the mean,
  the standard deviation and quantiles over the solved scenarios;
- for each parameter, the scenarios where it matters most (largest
  ‖∂f*/∂θ‖₂ over the parameter's entries);
- how often each inequality row is binding, from each scenario's active set.

:func:`scenario_frame` gives the batch's results as a DataFrame, one row per
scenario. The report renders like a single solution's (a terminal table,
Markdown, one self-contained HTML page with the distribution plots, a
DataFrame, JSON) through :mod:`.render.scenarios`; plots and DataFrames need
the ``report`` extra.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._packing import Packer
from .._validation import check_names
from ..compiled import CompiledProblem
from ..diff import _dF_adjoint
from ..engine import BatchResult
from ..errors import ModelError
from ._common import BoolArray, FloatArray, IntArray, elasticity, top_indices
from .labels import Labels, check_labels, label_table
from .render import scenarios as render

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    import pandas

    from ..solution import BatchSolution

__all__ = ["QUANTILES", "ScenarioReport", "ScenarioSensitivity", "BindingFrequency",
           "scenario_sensitivity", "scenario_frame", "objective_gradients"]

#: Quantiles reported by default (probabilities).
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

CALL = "sensitivity()"


@dataclass(frozen=True, eq=False)
class ScenarioSensitivity:
    """∂f*/∂θ of one parameter across the solved scenarios.

    Attributes
    ----------
    parameter : str
    mean, std : ndarray
        Mean and standard deviation of ∂f*/∂θ over the solved scenarios,
        shaped like the parameter.
    mean_abs : ndarray
        Mean of |∂f*/∂θ|: how much each entry matters, whatever its sign
        (reports rank entries by it).
    quantiles : ndarray of shape (len(probabilities), *parameter.shape)
        Its quantiles (linear interpolation, NumPy's default).
    elasticity_mean : ndarray
        Mean of the elasticity ∂f*/∂θ · θ / f* over the scenarios where it is
        defined (f* ≠ 0), shaped like the parameter; NaN where it never is.
    elasticity_quantiles : ndarray of shape (len(probabilities), *parameter.shape)
    top : tuple of (int, float)
        The scenarios where the parameter matters most: (scenario index,
        ‖∂f*/∂θ‖₂ over the parameter's entries), largest first.
    """

    parameter: str
    mean: FloatArray
    std: FloatArray
    mean_abs: FloatArray
    quantiles: FloatArray
    elasticity_mean: FloatArray
    elasticity_quantiles: FloatArray
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True, eq=False)
class BindingFrequency:
    """How often the rows of an inequality constraint bind across the solved scenarios.

    Attributes
    ----------
    constraint : str
    count : ndarray of int
        Scenarios in which each row is binding, shaped like the constraint.
    frequency : ndarray
        ``count`` over the number of solved scenarios.
    """

    constraint: str
    count: IntArray
    frequency: FloatArray


@dataclass(frozen=True, eq=False)
class ScenarioReport:
    """Sensitivities across the scenarios of a batch.

    Built by :func:`scenario_sensitivity` (or :meth:`BatchSolution.sensitivity`).

    Attributes
    ----------
    scenarios : int
        Scenarios in the batch, B.
    solved : int
        Scenarios solved; every statistic is over these.
    failures : tuple of (int, str)
        Failed scenarios with their error messages.
    sense : {"minimize", "maximize"}
    probabilities : tuple of float
        The quantiles' probabilities.
    values : ndarray of shape (B,)
        The optimal value f* of each scenario (NaN if it failed).
    value_quantiles : ndarray of shape (len(probabilities),)
        Quantiles of f*.
    objective : dict of str to ScenarioSensitivity
        By reported parameter.
    binding : dict of str to BindingFrequency
        By inequality constraint (equalities always bind).
    gradients : dict of str to ndarray
        ∂f*/∂θ of each scenario by parameter, shape (B, *parameter.shape),
        NaN rows for failed scenarios: the data behind the statistics.
    parameters : tuple of str
        Reported parameters.
    labels : dict of str to tuple of str
        Display labels of the entries of every parameter and constraint.
    k : int
        The ``top`` argument: rows per table and scenarios per ranking.
    seconds : float
        Time to build the report.
    """

    scenarios: int
    solved: int
    failures: tuple[tuple[int, str], ...]
    sense: str
    probabilities: tuple[float, ...]
    values: FloatArray
    value_quantiles: FloatArray
    objective: Mapping[str, ScenarioSensitivity]
    binding: Mapping[str, BindingFrequency]
    gradients: Mapping[str, FloatArray]
    parameters: tuple[str, ...]
    labels: Mapping[str, tuple[str, ...]]
    k: int
    seconds: float

    @property
    def value_mean(self) -> float:
        """Mean optimal value over the solved scenarios (NaN if none solved)."""
        return float(_mean(self.values[np.isfinite(self.values)][:, None])[0])

    def __str__(self) -> str:
        return render.scenario_text(self)

    def __repr__(self) -> str:
        return (f"ScenarioReport(scenarios={self.scenarios}, solved={self.solved}, "
                f"parameters={list(self.parameters)}, binding={list(self.binding)}, "
                f"value_mean={self.value_mean:.6g})")

    def to_markdown(self) -> str:
        """The report as Markdown (headings and pipe tables, no plots).

        Returns
        -------
        str
        """
        return render.scenario_markdown(self)

    def to_html(self, path: str | Path) -> Path:
        """Write the report as one self-contained HTML file, with its plots.

        The plots (embedded PNG): the distribution of ∂f*/∂θ across the
        scenarios for the most influential parameter entries (box plots),
        a histogram of the optimal value, and the binding frequencies.

        Parameters
        ----------
        path : str or Path
            The file to write (parent folders must exist).

        Returns
        -------
        Path

        Raises
        ------
        ImportError
            If matplotlib is missing (``pip install "diffmodel[report]"``).
        """
        out = Path(path)
        out.write_text(render.scenario_html(self), encoding="utf-8")
        return out

    def save_plots(self, folder: str | Path) -> list[Path]:
        """Save every plot of :meth:`to_html` as a PNG file in ``folder`` (created).

        Returns
        -------
        list of Path
            ``distribution.png``, ``values.png`` and, with inequalities,
            ``binding.png``.

        Raises
        ------
        ImportError
            If matplotlib is missing.
        """
        return render.save_scenario_plots(self, Path(folder))

    def to_dataframe(self) -> pandas.DataFrame:
        """The statistics in one table, one row per entry and kind.

        Returns
        -------
        pandas.DataFrame
            Columns ``kind`` ("value", "objective", "elasticity", "binding"),
            ``name``, ``index``, ``label``, ``count``, ``mean``, ``std``,
            ``min``, one column per quantile (``q0.05``, ...), ``max``. For
            "binding" rows ``count`` is the number of scenarios in which the
            row binds and ``mean`` its frequency (the other statistics NaN).

        Raises
        ------
        ImportError
            If pandas is missing (``pip install "diffmodel[report]"``).
        """
        return render.scenario_dataframe(self)

    def to_json(self) -> str:
        """The report as a JSON document (NaN written as null; no per-scenario gradients).

        Returns
        -------
        str
        """
        return render.scenario_json(self)


# ---------------------------------------------------------------- the report


def scenario_sensitivity(
    batch: BatchSolution,
    wrt: str | Sequence[str] | None = None,
    labels: Labels | None = None,
    quantiles: Sequence[float] = QUANTILES,
    top: int = 10,
) -> ScenarioReport:
    """Objective sensitivities and binding constraints across the scenarios of a batch.

    Parameters
    ----------
    batch : BatchSolution
        From :meth:`Model.solve_batch` (any executor, any ``on_error``).
    wrt : str or list of str, optional
        Parameters to report (default: all).
    labels : dict of str to list of str, optional
        Display labels by parameter or constraint name, as for
        :func:`~diffmodel.analysis.sensitivity`.
    quantiles : sequence of float, default (0.05, 0.25, 0.5, 0.75, 0.95)
        Probabilities of the quantiles reported, each in [0, 1].
    top : int, default 10
        Rows per table (the entries of largest mean |∂f*/∂θ|, the rows that
        bind most often) and scenarios per ranking.

    Returns
    -------
    ScenarioReport

    Raises
    ------
    ModelError
        For an unknown name, bad labels, quantiles outside [0, 1] or a bad
        ``top``, or if ``batch`` is not a :class:`~diffmodel.BatchSolution`.

    Notes
    -----
    No solve: ∂f*/∂θ at each scenario's optimum is the partial derivative of
    the Lagrangian ½xᵀPx + qᵀx + r + yᵀ(Mx − c) in θ with (x, y) held fixed
    (envelope theorem), evaluated for all scenarios at once from the stacked
    solutions; it is what :meth:`Solution.objective_gradient` gives for one
    solve. Statistics are over the solved scenarios (failed ones are listed
    in ``failures``).

    Examples
    --------
    >>> import cvxpy as cp, numpy as np, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> report = model.solve_batch(b=np.array([1.0, 2.0, 3.0])).sensitivity()
    >>> report.gradients["b"]                     # f* = b²/2
    array([1., 2., 3.])
    >>> float(report.objective["b"].mean)
    2.0
    """
    t_start = time.perf_counter()
    result, problem, packer = _batch_parts(batch, CALL)
    layout = packer.layout
    k, probs = _check_options(top, quantiles)
    params = _parameters(wrt, packer)
    given = check_labels(labels, [*layout.variables, *layout.constraints,
                                  *layout.parameters], CALL)
    names = label_table(layout, [*params, *layout.constraints, *given], given)
    ok = np.array([s == "optimal" for s in result.status], dtype=bool)
    idx = np.flatnonzero(ok)
    values = np.array(batch.value, dtype=np.float64)
    grad = np.full((layout.n_theta + 1, ok.shape[0]), np.nan)
    grad[:, idx] = layout.sign * objective_gradients(problem, result.X[:, idx],
                                                     result.Y[:, idx])
    gradients = {p: g for p, g in packer.params_batch(grad).items() if p in params}
    thetas = packer.params_batch(result.thetas)
    objective = {p: _spread(p, gradients[p][idx], thetas[p][idx], values[idx], probs, k, idx)
                 for p in params}
    return ScenarioReport(
        scenarios=int(ok.shape[0]), solved=int(idx.shape[0]),
        failures=tuple(sorted(batch.errors.items())),
        sense="maximize" if layout.sign < 0 else "minimize", probabilities=probs,
        values=values, value_quantiles=_quantiles(values[idx][:, None], probs)[:, 0],
        objective=objective, binding=_binding(batch, packer, ok), gradients=gradients,
        parameters=tuple(params), labels=names, k=k, seconds=time.perf_counter() - t_start)


def objective_gradients(problem: CompiledProblem, X: FloatArray, Y: FloatArray) -> FloatArray:
    """∂f*/∂θ̃ of the compiled problem at many optima at once (columns of X, Y).

    The block form of :func:`diffmodel.diff.objective_gradient`: at an optimum
    f* equals the Lagrangian L = ½xᵀPx + qᵀx + r + yᵀ(Mx − c), and ∂f*/∂θ is
    ∂L/∂θ with (x, y) held fixed. Entry 0 of each column is meaningless.

    Parameters
    ----------
    problem : CompiledProblem
    X : ndarray of shape (n, B)
    Y : ndarray of shape (m_eq + m_ineq, B)
        Multipliers of all rows (zero on inactive inequality rows).

    Returns
    -------
    ndarray of shape (n_theta + 1, B)
    """
    with np.errstate(all="ignore"):
        grad = 0.5 * _dF_adjoint(problem, X, Y, X, Y)
        # The q and c terms enter L linearly, not quadratically: undo the ½.
        grad += 0.5 * problem.f.apply_adjoint(np.concatenate([X, Y]))
        np.add.at(grad, problem.r_index, problem.r_value[:, None])
    return grad


def scenario_frame(batch: BatchSolution, labels: Labels | None = None) -> pandas.DataFrame:
    """The results of a batch as a DataFrame, one row per scenario.

    Parameters
    ----------
    batch : BatchSolution
    labels : dict of str to list of str, optional
        Display labels by variable or constraint name, as for
        :func:`~diffmodel.analysis.sensitivity`.

    Returns
    -------
    pandas.DataFrame
        Index ``scenario`` (0 … B−1). Columns: ``status``, ``f*`` (the optimal
        value), ``accuracy``, ``error`` (the message of a failed scenario,
        else None), then one column per entry of every variable (``x[0]``,
        ``p[Alta]``) and of every constraint's dual (``balance[A]``: the
        dual ν with CVXPY's sign), in column-major order; NaN for failed
        scenarios.

    Raises
    ------
    ModelError
        For labels of unknown names or the wrong length.
    ImportError
        If pandas is missing (``pip install "diffmodel[report]"``).
    """
    call = "to_dataframe()"
    result, _, packer = _batch_parts(batch, call)
    layout = packer.layout
    given = check_labels(labels, [*layout.variables, *layout.constraints], call)
    names = label_table(layout, [*layout.variables, *layout.constraints], given)
    size = batch.batch_size
    columns: dict[str, object] = {
        "status": list(batch.status), "f*": np.array(batch.value),
        "accuracy": np.array(batch.accuracy),
        "error": [batch.errors.get(i) for i in range(size)]}
    for name, arr in [*batch.primal.items(), *batch.dual.items()]:
        flat = np.asarray(arr).reshape(size, -1, order="F")
        for j, label in enumerate(names[name]):
            columns[label] = flat[:, j]
    return render.batch_dataframe(columns)


# ---------------------------------------------------------------- steps


def _batch_parts(batch: object, call: str) -> tuple[BatchResult, CompiledProblem, Packer]:
    """The stacked result, the compiled problem and the packer of a batch.

    Raises
    ------
    ModelError
        If ``batch`` is not a :class:`~diffmodel.BatchSolution`.
    """
    parts = getattr(batch, "_parts", None)
    if not callable(parts) or not hasattr(batch, "batch_size"):
        raise ModelError(f"{call}: expected a diffmodel BatchSolution (from "
                         f"model.solve_batch()), got {type(batch).__name__}")
    result, engine, packer = parts()
    return result, engine.problem, packer


def _parameters(wrt: str | Sequence[str] | None, packer: Packer) -> list[str]:
    params = list(packer.layout.parameters) if wrt is None else (
        [wrt] if isinstance(wrt, str) else list(dict.fromkeys(wrt)))
    check_names(params, packer.layout.parameters, "parameter", CALL)
    return params


def _check_options(top: object, quantiles: Sequence[float]) -> tuple[int, tuple[float, ...]]:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ModelError(f"{CALL}: top must be a positive integer, got {top!r}")
    try:
        probs = tuple(float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise ModelError(f"{CALL}: quantiles must be a sequence of probabilities in "
                         f"[0, 1], got {quantiles!r}") from None
    if not all(0.0 <= q <= 1.0 for q in probs):
        raise ModelError(f"{CALL}: quantiles must be probabilities in [0, 1], got "
                         f"{list(probs)}")
    return int(top), probs


def _mean(a: FloatArray) -> FloatArray:
    """Mean of each column over its finite entries (NaN for a column without any)."""
    finite = np.isfinite(a)
    count = finite.sum(axis=0)
    total = np.where(finite, a, 0.0).sum(axis=0)
    return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def _quantiles(a: FloatArray, probs: tuple[float, ...]) -> FloatArray:
    """Quantiles of each column over its finite entries: shape (len(probs), columns)."""
    clean = np.where(np.isfinite(a), a, np.nan)
    if clean.shape[0] == 0:
        return np.full((len(probs), a.shape[1]), np.nan)
    with warnings.catch_warnings():  # columns without a finite entry give NaN, as they should
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanquantile(clean, probs, axis=0), dtype=np.float64)


def _spread(name: str, G: FloatArray, T: FloatArray, f: FloatArray,
            probs: tuple[float, ...], k: int, scenarios: IntArray) -> ScenarioSensitivity:
    """Statistics of one parameter's ∂f*/∂θ (G, shape (S, *shape)) over S solved scenarios."""
    shape = G.shape[1:]
    size = G.shape[0]
    g = G.reshape(size, -1, order="F")
    t = T.reshape(size, -1, order="F")
    e = elasticity(g, t, f[:, None], 0.0)  # NaN where f* = 0 (each scenario its own scale)
    mean = _mean(g)
    std = np.sqrt(_mean((g - mean) ** 2))
    score = np.sqrt((g * g).sum(axis=1))
    top = tuple((int(scenarios[i]), float(score[i])) for i in top_indices(score, k))

    def shaped(v: FloatArray) -> FloatArray:
        return np.asarray(v.reshape(v.shape[:-1] + shape, order="F"))

    return ScenarioSensitivity(
        parameter=name, mean=shaped(mean), std=shaped(std), mean_abs=shaped(_mean(np.abs(g))),
        quantiles=shaped(_quantiles(g, probs)), elasticity_mean=shaped(_mean(e)),
        elasticity_quantiles=shaped(_quantiles(e, probs)), top=top)


def _binding(batch: BatchSolution, packer: Packer, ok: BoolArray
             ) -> dict[str, BindingFrequency]:
    """Binding counts and frequencies of every inequality constraint."""
    solved = int(ok.sum())
    out = {}
    for name, block in packer.layout.constraints.items():
        if block.kind != "ineq":
            continue
        count = np.asarray(batch.active[name][ok].sum(axis=0), dtype=np.int64)
        out[name] = BindingFrequency(name, count, count / solved if solved else
                                     np.full(count.shape, np.nan))
    return out
