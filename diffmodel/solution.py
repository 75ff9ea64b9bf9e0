"""Solutions that carry their own derivatives.

A :class:`Solution` holds the verified point of one solve and the
factorization of its KKT matrix. ``sol.backward``, ``sol.derivative``,
``sol.jacobian`` and ``sol.sensitivity`` use *that* factorization, whatever
the model solved since; the factorization lives as long as the solution
does. A :class:`BatchSolution` holds a batch's solutions and differentiates
each scenario exactly, refactoring only where the scenarios' KKT matrices
differ.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import analysis
from ._packing import Packer
from .analysis import ParameterRange, Prediction, SensitivityReport, Sweep
from ._typing import BoolArray, FloatArray, IntArray
from .diff import adjoint, jacobian, objective_gradient, tangent
from .engine import BatchResult, Engine
from .runner import Execution, Runner
from .point import Point

if TYPE_CHECKING:  # pragma: no cover
    import pandas


__all__ = ["Solution", "BatchSolution"]



def _shapes(d: Mapping[str, FloatArray]) -> str:
    return ", ".join(f"{k}: {np.shape(v)}" for k, v in d.items())


@dataclass(frozen=True, eq=False, repr=False)
class Solution:
    """The result of :meth:`Model.solve`, able to differentiate itself.

    Attributes
    ----------
    status : str
        ``"optimal"`` (failures raise :class:`~diffmodel.SolverError` instead).
    value : float
        Optimal objective value, in the sense of the model (the maximized
        value for ``cp.Maximize``).
    primal : dict of str to ndarray
        Optimal value of each variable, by name, shaped like the variable.
    dual : dict of str to ndarray
        Optimal dual of each constraint, by name, shaped like the constraint,
        with CVXPY's sign convention (see docs/math.md).
    solver : str
        The backend that solved it (``"kkt"`` or ``"osqp"``).
    iterations : int
        Refinement steps of the KKT solve (equality models, ``"kkt"``), or
        OSQP's ADMM iterations (``"osqp"``, and inequality models whose
        active set came from OSQP; 0 when the previous active set was
        re-verified).
    residual : float
        Componentwise backward error of the KKT system at the solution: the
        largest relative change of any entry of the data that makes the
        returned point exact.
    accuracy : float
        Estimated relative error of the solution: a bound on
        max |ẑ − ẑ*| / max |ẑ| for z = (x, duals) in the units of the
        equilibrated problem (see docs/math.md). For a solution that is not
        unique (singular KKT matrix) it is the backward error instead.
    unique : bool
        False when the KKT matrix is singular: the point is optimal but not
        the only one, and derivatives raise :class:`~diffmodel.DerivativeError`.
    active : dict of str to ndarray of bool
        Binding rows by constraint name, shaped like the constraint (all
        True for an equality).
    degenerate : dict of str to ndarray of bool
        Rows at which the solution is only directionally differentiable:
        binding inequality rows with a zero multiplier (weakly active), and
        binding rows that depend linearly on others. See
        :class:`~diffmodel.DegenerateWarning`.
    timings : dict of str to float
        Seconds spent per phase of the solve.

    Notes
    -----
    The arrays in ``primal`` and ``dual`` are read-only views of the
    solution's own copy of the result: copy them to modify them. Every array
    returned by the derivative methods is a fresh array owned by the caller.
    A solution keeps its KKT factorization alive (about the memory of the
    factor, see docs/api.md) as long as it is referenced; after pickling, the
    factorization is rebuilt on the first derivative call.
    """

    status: str
    value: float
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    solver: str
    iterations: int
    residual: float
    accuracy: float
    unique: bool
    timings: Mapping[str, float] = field(default_factory=dict)
    _point: Point | None = field(default=None, repr=False)
    _packer: Packer | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @classmethod
    def from_point(cls, point: Point, packer: Packer, engine: Engine,
                   timings: Mapping[str, float]) -> Solution:
        """Name the arrays of a verified point."""
        primal, dual = packer.solution(point.x, point.y)  # read-only, never written
        raw = point.raw
        # The fields, set at once: the same instance the generated __init__ of
        # this frozen dataclass builds, without its per-field setattr calls.
        sol = object.__new__(cls)
        sol.__dict__.update(
            status="optimal", value=packer.layout.sign * point.value, primal=primal,
            dual=dual, solver=point.solver, iterations=raw.iterations,
            residual=raw.backward_error, accuracy=raw.accuracy, unique=raw.unique,
            timings=timings, _point=point, _packer=packer, _engine=engine)
        return sol

    @functools.cached_property
    def active(self) -> Mapping[str, BoolArray]:
        """Binding rows by constraint name, shaped like the constraint (read-only
        masks; every row of an equality is binding)."""
        point, packer = self._parts()
        return MappingProxyType(packer.row_masks(point.raw.active, True))

    @functools.cached_property
    def degenerate(self) -> Mapping[str, BoolArray]:
        """Rows where the solution is only directionally differentiable, by
        constraint name: binding inequality rows with a zero multiplier (weakly
        active) and binding rows that depend linearly on others."""
        point, packer = self._parts()
        raw = point.raw
        return MappingProxyType(packer.row_masks(np.union1d(raw.weak, raw.dependent), False))

    def _parts(self) -> tuple[Point, Packer]:
        point, packer = self._point, self._packer
        if point is None or packer is None:
            raise TypeError("this Solution was not produced by Model.solve()")
        return point, packer

    def _resolver(self) -> Engine:
        """The engine that produced this solution (re-solves for sweeps)."""
        if self._engine is None:
            raise TypeError("this Solution was not produced by Model.solve()")
        return self._engine

    def __repr__(self) -> str:
        return (f"Solution(status={self.status!r}, value={self.value:.6g}, "
                f"primal={{{_shapes(self.primal)}}}, dual={{{_shapes(self.dual)}}}, "
                f"solver={self.solver!r}, accuracy={self.accuracy:.1e})")

    # ----------------------------------------------------------- derivatives

    def backward(self, primal: Mapping[str, ArrayLike] | None = None,
                 dual: Mapping[str, ArrayLike] | None = None) -> dict[str, FloatArray]:
        """Reverse mode: the gradient of a loss with respect to every parameter.

        Parameters
        ----------
        primal : dict of str to array_like, optional
            ∂ℓ/∂x for any subset of variables, by name, shaped like each.
        dual : dict of str to array_like, optional
            ∂ℓ/∂ν for any subset of constraints' duals, by constraint name.

        Returns
        -------
        dict of str to ndarray
            dℓ/dθ for every parameter, by name, shaped like the parameter.

        Raises
        ------
        ModelError
            For an unknown name or a gradient of the wrong shape.
        DerivativeError
            If the solution is not unique or the adjoint solve is not accurate.

        Notes
        -----
        One adjoint solve ω = K⁻¹ ∂ℓ/∂z with this solution's factorization,
        then dℓ/dθ = −(∂F/∂θ)ᵀ ω for all parameters at once.
        """
        point, packer = self._parts()
        gx, gy = packer.outputs(primal, dual, "backward()")
        return packer.params(adjoint(point, gx, gy))

    def derivative(self, directions: Mapping[str, ArrayLike]) -> dict[str, FloatArray]:
        """Forward mode: the change of the solution along a parameter direction.

        Parameters
        ----------
        directions : dict of str to array_like
            dθ for any subset of parameters, by name, shaped like each.

        Returns
        -------
        dict of str to ndarray
            dx by variable name and dν by constraint name.

        Raises
        ------
        ModelError, DerivativeError
            As for :meth:`backward`.
        """
        point, packer = self._parts()
        dx, dy = tangent(point, packer.direction(directions, "derivative()"))
        return packer.unpack_outputs(dx, dy)

    def jacobian(self, of: str, wrt: str) -> FloatArray:
        """The Jacobian of a variable (or a constraint's dual) w.r.t. a parameter.

        Returns
        -------
        ndarray of shape (size of ``of``, size of ``wrt``)
            Rows follow ``of`` and columns ``wrt``, each flattened in
            column-major order.
        """
        point, packer = self._parts()
        rows, _ = packer.output_index(of, "jacobian()")
        cols = packer.param_index(wrt, "jacobian()")
        return jacobian(point, rows, cols)

    def objective_gradient(self) -> dict[str, FloatArray]:
        """∂f*/∂θ, the derivative of the optimal value (envelope theorem, no solve)."""
        point, packer = self._parts()
        return packer.params(packer.layout.sign * objective_gradient(point))

    def sensitivity(self, of: str | Sequence[str] | None = None,
                    wrt: str | Sequence[str] | None = None,
                    labels: Mapping[str, Any] | None = None, top: int = 10,
                    **options: Any) -> SensitivityReport:
        """A sensitivity report at this solution; see :func:`diffmodel.analysis.sensitivity`."""
        return analysis.sensitivity(self, of=of, wrt=wrt, labels=labels, top=top, **options)

    def predict(self, delta: Mapping[str, ArrayLike]) -> Prediction:
        """First-order prediction for a parameter change; see :func:`diffmodel.analysis.predict`."""
        return analysis.predict(self, delta)

    def sweep(self, name: str, values: ArrayLike, **options: Any) -> Sweep:
        """First-order predictions against re-solves along a path of one parameter;
        see :func:`diffmodel.analysis.sweep`. The model's CVXPY objects are not touched."""
        return analysis.sweep(self, name, values, **options)

    def ranging(self, wrt: str | Sequence[str] | None = None,
                labels: Mapping[str, Any] | None = None, progress: bool | None = None
                ) -> dict[str, ParameterRange]:
        """The interval of each parameter entry over which the active set holds, with
        the row that ends it; see :func:`diffmodel.analysis.ranging`."""
        return analysis.ranging(self, wrt=wrt, labels=labels, progress=progress)


@dataclass(frozen=True, eq=False, repr=False)
class BatchSolution:
    """The result of :meth:`Model.solve_batch`: B scenarios, stacked.

    Attributes
    ----------
    value : ndarray of shape (B,)
        Optimal values (NaN for failed scenarios).
    primal, dual : dict of str to ndarray
        Each variable's values and each constraint's duals, shape
        (B, *shape) (NaN rows for failed scenarios).
    status : list of str
        ``"optimal"`` or the failure status, per scenario.
    errors : dict of int to str
        The failure message of each failed scenario.
    accuracy : ndarray of shape (B,)
        Estimated relative error of each scenario's solution.
    solver : str
    factorizations : int
        Numeric KKT factorizations the batch performed (in every worker).
    timings : dict of str to float
    warm_starts : int
        Scenarios of a model with inequalities whose active set was verified
        directly from the previous scenario's (no OSQP run).
    execution : Execution or None
        How the batch ran: executor, chunk size and count, the pilot's
        measured cost per scenario, compute and wall time, bytes shipped.

    Notes
    -----
    :meth:`backward` and :meth:`derivative` run on the executor the batch was
    solved with, in chunks of the same size.
    """

    value: FloatArray
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    status: list[str]
    errors: dict[int, str]
    accuracy: FloatArray
    solver: str
    factorizations: int
    timings: Mapping[str, float] = field(default_factory=dict)
    warm_starts: int = 0
    execution: Execution | None = None
    _result: BatchResult | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _packer: Packer | None = field(default=None, repr=False)
    _runner: Runner | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        """Number of scenarios B."""
        return int(self.value.shape[0])

    @functools.cached_property
    def active(self) -> Mapping[str, BoolArray]:
        """Binding rows per scenario by constraint name, shape (B, *constraint.shape):
        every row of an equality, the binding rows of an inequality; all False for
        a failed scenario (read-only masks)."""
        result, _, packer = self._parts()
        layout = packer.layout
        ok = np.array([s == "optimal" for s in result.status], dtype=bool)
        flags = np.zeros((layout.rows, self.batch_size), dtype=bool)
        flags[: layout.m_eq] = ok
        flags[layout.m_eq:] = result.active
        masks = {}
        for name, block in layout.constraints.items():
            mask = np.asarray(block.take_batch(flags, 0 if block.kind == "eq" else layout.m_eq),
                              dtype=bool)
            mask.flags.writeable = False
            masks[name] = mask
        return MappingProxyType(masks)

    def __repr__(self) -> str:
        failed = len(self.errors)
        return (f"BatchSolution(batch_size={self.batch_size}, primal={{{_shapes(self.primal)}}}, "
                f"dual={{{_shapes(self.dual)}}}, solver={self.solver!r}, failed={failed}, "
                f"factorizations={self.factorizations})")

    def _parts(self) -> tuple[BatchResult, Engine, Packer]:
        if self._result is None or self._engine is None or self._packer is None:
            raise TypeError("this BatchSolution was not produced by Model.solve_batch()")
        return self._result, self._engine, self._packer

    def _run(self) -> tuple[BatchResult, Runner, Packer, BoolArray, int]:
        """The result, the runner (its executor), the packer, which scenarios
        solved, and the chunk size for derivatives."""
        result, engine, packer = self._parts()
        runner = self._runner if self._runner is not None else Runner(engine)
        ok = np.array([s == "optimal" for s in result.status], dtype=bool)
        chunk = self.execution.chunk_size if self.execution is not None else self.batch_size
        return result, runner, packer, ok, max(1, chunk)

    def backward(self, primal: Mapping[str, ArrayLike] | None = None,
                 dual: Mapping[str, ArrayLike] | None = None) -> dict[str, FloatArray]:
        """Reverse mode for every scenario.

        Parameters
        ----------
        primal, dual : dict of str to array_like, optional
            Loss gradients by variable / constraint name, each of shape
            (B, *shape), or (*shape) to use the same gradient for every scenario.

        Returns
        -------
        dict of str to ndarray
            dℓ_i/dθ for every parameter, shape (B, *parameter.shape); NaN for
            failed scenarios.

        Notes
        -----
        Runs where the batch was solved, chunk by chunk. With a KKT matrix
        shared by the batch this is B adjoint solves with one factorization
        (per worker). Otherwise each scenario is differentiated with its own
        factorization: kept from the solve when the batch ran in this process,
        for as many scenarios as fit in ``diffmodel.runner.KEEP_BYTES`` (each
        point's size measured, ``Point.nbytes``), else solved again (same
        data, same result).
        """
        result, runner, packer, ok, chunk = self._run()
        GX, GY = packer.outputs(primal, dual, "backward()", batch=self.batch_size)
        out = runner.backward(result, self.solver, ok, GX, GY, chunk)
        return packer.params_batch(out)

    def _backward_reduced(self, primal: Mapping[str, ArrayLike] | None,
                          dual: Mapping[str, ArrayLike] | None, per_item: Sequence[str],
                          summed: Sequence[str]) -> dict[str, FloatArray]:
        """:meth:`backward` for the parameters ``per_item`` (shape (B, *shape)) and
        the sum over the scenarios of it for the parameters ``summed`` (shape
        ``shape``; NaN if a scenario failed), forming nothing else: what a layer
        needs for its batched and its broadcast inputs."""
        result, runner, packer, ok, chunk = self._run()
        GX, GY = packer.outputs(primal, dual, "backward()", batch=self.batch_size)
        blocks = packer.layout.parameters

        def entries(names: Sequence[str]) -> IntArray:
            ranges = [np.arange(1 + blocks[k].offset, 1 + blocks[k].stop) for k in names]
            return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

        keep, total = entries(per_item), entries(summed)
        rows, sums = runner.backward_reduced(result, self.solver, ok, GX, GY, chunk, keep, total)
        out: dict[str, FloatArray] = {}
        start = 0
        for name in per_item:
            block = blocks[name]
            out[name] = np.ascontiguousarray(rows[start: start + block.size].T.reshape(
                (self.batch_size, *block.shape), order="F"))
            start += block.size
        start = 0
        for name in summed:
            block = blocks[name]
            out[name] = sums[start: start + block.size].reshape(block.shape, order="F").copy()
            start += block.size
        return out

    def derivative(self, directions: Mapping[str, ArrayLike]) -> dict[str, FloatArray]:
        """Forward mode for every scenario along one direction (shared by all).

        Returns dx by variable name and dν by constraint name, shape (B, *shape)
        (NaN for failed scenarios). Runs where the batch was solved, chunk by chunk.
        """
        result, runner, packer, ok, chunk = self._run()
        dtheta = packer.direction(directions, "derivative()")
        DX, DY = runner.derivative(result, self.solver, ok, dtheta, chunk)
        primal, dual = packer.solution_batch(DX, DY)
        return {**primal, **dual}

    def sensitivity(self, wrt: str | Sequence[str] | None = None,
                    labels: Mapping[str, Any] | None = None,
                    quantiles: Sequence[float] = analysis.QUANTILES,
                    top: int = 10) -> analysis.ScenarioReport:
        """Objective sensitivities and binding constraints across the scenarios; see
        :func:`diffmodel.analysis.scenario_sensitivity`."""
        return analysis.scenario_sensitivity(self, wrt=wrt, labels=labels,
                                             quantiles=quantiles, top=top)

    def to_dataframe(self, labels: Mapping[str, Any] | None = None) -> pandas.DataFrame:
        """The stacked results, one row per scenario; see
        :func:`diffmodel.analysis.scenario_frame` (needs pandas)."""
        return analysis.scenario_frame(self, labels=labels)
