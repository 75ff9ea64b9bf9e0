"""The user-facing :class:`Model`: names in, verified solutions out."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike

from ._packing import Packer
from ._typing import FloatArray
from ._validation import ParamSpec
from .canon import canonicalize
from .compiled import CompiledProblem
from .engine import Engine, note_shared_k
from .runner import Runner
from .errors import AccuracyWarning, DegenerateWarning, ModelError, NotSolvedError, SolverError
from .solution import BatchSolution, Solution
from .solvers import check_solver
from .tolerances import ACCURACY_WARN

from .analysis import Prediction, SensitivityReport, Sweep
from .analysis._common import check_progress, progress_bar

__all__ = ["Model", "RESERVED_NAMES"]


#: Keyword options of solve / solve_batch; no parameter may carry these names.
RESERVED_NAMES = ("solver", "executor", "chunk_size", "on_error", "progress")

# CVXPY attributes that restrict a parameter's values (validated on every value).
_VALUE_ATTRS = ("nonneg", "nonpos", "pos", "neg", "PSD", "NSD", "symmetric", "diag",
                "boolean", "integer")


def _as_constraint_dict(
    constraints: Mapping[str, cp.Constraint] | Sequence[cp.Constraint] | cp.Constraint | None,
) -> dict[str, cp.Constraint]:
    if constraints is None:
        return {}
    if isinstance(constraints, Mapping):
        return dict(constraints)
    if isinstance(constraints, cp.Constraint):
        constraints = [constraints]
    return {f"c{i}": con for i, con in enumerate(constraints)}


def _spec(name: str, param: cp.Parameter) -> ParamSpec:
    attrs: list[tuple[str, object]] = [(key, True) for key in _VALUE_ATTRS
                                       if param.attributes.get(key)]
    bounds = param.attributes.get("bounds")
    if bounds is not None:
        attrs.append(("bounds", bounds))
    return ParamSpec(name, tuple(param.shape), tuple(attrs))


def _set_attributes(var: cp.Variable) -> dict[str, object]:
    """The CVXPY attributes set on a variable (numeric bounds only), to rebuild it."""
    attrs: dict[str, object] = {k: v for k, v in var.attributes.items()
                                if v is not None and v is not False}
    bounds = var.attributes.get("bounds")
    if isinstance(bounds, (list, tuple)) and not all(
            isinstance(b, (int, float, np.ndarray)) for b in bounds):
        del attrs["bounds"]  # bounds given by expressions: enforced by the compiled problem
    return attrs


def _degenerate_text(sol: Solution) -> str:
    names = []
    for name, mask in sol.degenerate.items():
        if mask.any():
            entries = np.argwhere(np.atleast_1d(mask))
            shown = ", ".join(f"{name}[{', '.join(map(str, e))}]" if mask.ndim else name
                              for e in entries[:4])
            names.append(shown + (" ..." if entries.shape[0] > 4 else ""))
    return ("the solution is degenerate at " + "; ".join(names) + ": these rows are binding "
            "with a zero multiplier, or depend on other binding rows, so the solution is only "
            "directionally differentiable there (forward mode gives the one-sided derivative; "
            "reverse mode treats these rows as binding: see docs/math.md)")


class Model:
    """A differentiable quadratic program built from CVXPY objects.

    Parameters
    ----------
    objective : cp.Minimize, cp.Maximize or cp.Problem
        The objective, or a whole problem (then ``constraints`` must be
        omitted and the problem's constraints are named ``c0, c1, ...``).
    constraints : dict of str to constraint, or list of constraints, optional
        Constraints: ``==``, ``<=`` and ``>=`` between affine expressions
        (variable attributes ``nonneg``, ``nonpos`` and ``bounds`` add rows
        named ``<var>.lower`` and ``<var>.upper``). A dict names them; a list
        names them ``c0, c1, ...`` in order.
    solver : {"kkt", "osqp"}, default "kkt"
        Default backend for :meth:`solve`.

    Raises
    ------
    ModelError
        If the problem is not a convex QP with affine constraints, a
        variable or parameter has no explicit name, or a name is used twice
        or is reserved.

    Notes
    -----
    The model is compiled once, here, into an immutable
    :class:`~diffmodel.compiled.CompiledProblem`. :meth:`solve` evaluates its
    maps for new parameter values, factors the equilibrated KKT matrix
    (reusing the factorization when only q and b changed, and the symbolic
    analysis otherwise), solves and verifies. The :class:`Solution` it
    returns carries its own factorization and differentiates itself;
    :meth:`backward`, :meth:`derivative` and :meth:`jacobian` are shortcuts
    for the latest solution, as in CVXPY.

    Threads: one model may be solved and differentiated from several threads
    at once; every solution is independent. The side effects on CVXPY
    objects (``Parameter.value``, ``Variable.value``,
    ``Constraint.dual_value``, ``Parameter.gradient``) and the "latest
    solution" of the shortcuts are last-writer-wins.

    Vectorization is column-major: a matrix parameter ``A`` of shape (m, n)
    corresponds to ``A.ravel(order="F")`` in Jacobians.

    Examples
    --------
    >>> import cvxpy as cp, numpy as np, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> sol = model.solve(b=2.0)
    >>> sol.primal["x"]
    array([1., 1.])
    >>> sol.backward({"x": np.array([1.0, 0.0])})["b"]
    array(0.5)
    """

    def __init__(
        self,
        objective: cp.Minimize | cp.Maximize | cp.Problem,
        constraints: Mapping[str, cp.Constraint] | Sequence[cp.Constraint] | None = None,
        *,
        solver: str = "kkt",
    ) -> None:
        if isinstance(objective, cp.Problem):
            if constraints is not None:
                raise ModelError(
                    "pass either a cp.Problem or an objective with constraints, not both")
            constraints = list(objective.constraints)
            objective = objective.objective
        self._solver = check_solver(solver)
        cons = _as_constraint_dict(constraints)
        canonical = canonicalize(objective, cons)
        for name in canonical.parameters:
            if name in RESERVED_NAMES:
                raise ModelError(
                    f"a parameter is named {name!r}, which the keyword option "
                    f"{name}=... of solve() and solve_batch() reserves; rename the parameter "
                    f"(reserved names: {', '.join(RESERVED_NAMES)})")
        clash = set(canonical.variables) & set(cons)
        if clash:
            raise ModelError(
                f"the name {sorted(clash)[0]!r} is used by both a variable and a constraint; "
                "names must be unique so that results can be looked up by name")
        self._variables: dict[str, cp.Variable] = canonical.variables
        self._parameters: dict[str, cp.Parameter] = canonical.parameters
        self._constraints: dict[str, cp.Constraint | None] = dict(cons)
        specs = {name: _spec(name, p) for name, p in canonical.parameters.items()}
        self._setup(canonical.problem, specs)

    def _setup(self, problem: CompiledProblem, specs: Mapping[str, ParamSpec]) -> None:
        self._problem = problem
        self._specs = dict(specs)
        self._engine = Engine(problem)
        self._packer = Packer(problem.layout, specs)
        self._latest: Solution | None = None
        self._latest_batch: BatchSolution | None = None
        self._last_failure: str | None = None

    # ------------------------------------------------------------------ names

    @property
    def parameters(self) -> dict[str, cp.Parameter]:
        """The model's parameters by name, in order of creation."""
        return dict(self._parameters)

    @property
    def variables(self) -> dict[str, cp.Variable]:
        """The model's variables by name, in order of creation."""
        return dict(self._variables)

    @property
    def constraints(self) -> dict[str, cp.Constraint | None]:
        """The model's constraints by name (None in a model restored from a pickle,
        which carries no CVXPY expressions)."""
        return dict(self._constraints)

    @property
    def compiled(self) -> CompiledProblem:
        """The immutable compiled problem (maps θ → QP data and the layout of names)."""
        return self._problem

    @property
    def size(self) -> dict[str, int]:
        """Dimensions of the compiled QP: variables ``n`` (lifted auxiliaries
        included), equality rows ``m``, inequality rows ``m_ineq``, parameter
        entries ``n_theta``, and nonzeros of P's upper triangle and of the
        constraint matrix (``nnz_P``, ``nnz_M``)."""
        layout = self._problem.layout
        return {"n": layout.n, "m": layout.m_eq, "m_ineq": layout.m_ineq,
                "n_theta": layout.n_theta, "nnz_P": self._problem.P.nnz,
                "nnz_M": self._problem.M.nnz}

    @property
    def factorizations(self) -> int:
        """Number of numeric KKT factorizations performed so far."""
        return self._engine.factorizations

    @property
    def solution(self) -> Solution | None:
        """The latest successful solution, or None."""
        return self._latest

    def _current_value(self, name: str) -> object:
        return self._parameters[name].value

    # ------------------------------------------------------------------ solve

    def solve(self, solver: str | None = None, **values: ArrayLike) -> Solution:
        """Solve the QP for the given parameter values.

        Parameters
        ----------
        solver : {"kkt", "osqp"}, optional
            Backend for this solve; defaults to the model's.
        **values : array_like
            Parameter values by name, each shaped like its parameter. A
            parameter not given uses its ``Parameter.value``. Given values
            are also stored in ``Parameter.value``.

        Returns
        -------
        Solution
            The verified optimum, able to differentiate itself.
            ``Variable.value`` and ``Constraint.dual_value`` are set too.

        Raises
        ------
        ModelError
            For an unknown name, a value of the wrong shape, NaN or inf, a
            parameter with no value, or data that overflow. Nothing is
            changed in that case.
        SolverError
            If the problem is infeasible, unbounded, not convex for these
            values, or no solution can be verified to working accuracy.

        Warns
        -----
        AccuracyWarning
            If the solution's estimated error exceeds 1e-8.
        DegenerateWarning
            If rows bind with a zero multiplier or depend on other binding
            rows: the solution is then only directionally differentiable
            (see ``Solution.degenerate``).
        """
        t0 = time.perf_counter()
        name = self._solver if solver is None else check_solver(solver)
        theta, given = self._packer.theta(values, self._current_value, "solve()")
        for pname, arr in given.items():
            self._parameters[pname].save_value(arr)
        t1 = time.perf_counter()
        try:
            point = self._engine.solve(theta, name)
        except SolverError as exc:
            exc = self._in_model_terms(exc)
            self._latest, self._last_failure = None, str(exc)
            raise exc from None
        t2 = time.perf_counter()
        sol = Solution.from_point(point, self._packer, self._engine,
                                  {"setup": t1 - t0, "solve": t2 - t1,
                                   "total": time.perf_counter() - t0})
        if sol.accuracy > ACCURACY_WARN and sol.unique:
            warnings.warn(AccuracyWarning(
                f"the solution's estimated relative error is {sol.accuracy:.1e}: the KKT "
                "system is ill-conditioned even after equilibration (see sol.accuracy)"),
                stacklevel=2)
        raw = point.raw
        if raw.weak.shape[0] or raw.dependent.shape[0]:
            warnings.warn(DegenerateWarning(_degenerate_text(sol)), stacklevel=2)
        for vname, arr in sol.primal.items():
            self._variables[vname].save_value(arr.copy())
        for cname, arr in sol.dual.items():
            con = self._constraints.get(cname)  # bounds of variables have no CVXPY object
            if con is not None:
                con.save_dual_value(arr.copy())
        self._latest, self._last_failure = sol, None
        return sol

    def _solve_detached(self, values: Mapping[str, ArrayLike], call: str) -> Solution:
        """A solve at these values that changes nothing: not ``Parameter.value``,
        ``Variable.value`` nor the latest solution, and warns of nothing (the
        caller decides). The single-item path of the layers.

        Raises
        ------
        ModelError, SolverError
            As :meth:`solve`, with ``call`` naming the caller in messages.
        """
        t0 = time.perf_counter()
        theta, _ = self._packer.theta(values, self._current_value, call)
        t1 = time.perf_counter()
        try:
            point = self._engine.solve(theta, self._solver)
        except SolverError as exc:
            raise self._in_model_terms(exc) from None
        t2 = time.perf_counter()
        return Solution.from_point(point, self._packer, self._engine,
                                   {"setup": t1 - t0, "solve": t2 - t1,
                                    "total": time.perf_counter() - t0})

    def _in_model_terms(self, exc: SolverError) -> SolverError:
        if self._problem.layout.sign < 0 and exc.status == "unbounded":
            # The compiled problem minimizes −g; the model maximizes g.
            return SolverError(str(exc).replace("unbounded below", "unbounded above")
                               .replace("decreases", "increases"), exc.status)
        return exc

    def solve_batch(self, solver: str | None = None, *, executor: Any = None,
                    chunk_size: int | None = None,
                    on_error: Literal["raise", "record"] = "raise",
                    progress: bool | None = None, **values: ArrayLike) -> BatchSolution:
        """Solve the QP for a batch of parameter values (scenarios).

        Parameters
        ----------
        solver : {"kkt", "osqp"}, optional
            Backend; defaults to the model's.
        executor : concurrent.futures.Executor, optional
            Where to run the scenarios: a ``ProcessPoolExecutor``, a Dask
            client's ``client.get_executor()``, or any executor. The compiled
            problem (no CVXPY objects) goes to each worker once; scenarios go
            in chunks. None (default): in this process.
        chunk_size : int, optional
            Scenarios per chunk. By default a pilot run of a few scenarios in
            this process measures their cost, and chunks are sized to compute
            for about 0.1 s each (see docs/scaling.md).
        on_error : {"raise", "record"}, default "raise"
            ``"raise"``: a failing scenario raises :class:`SolverError` naming
            its index. ``"record"``: its status and message are recorded in
            ``batch.status`` and ``batch.errors``, its rows are NaN, and the
            other scenarios finish.
        progress : bool or None, default None
            A progress bar over scenarios on stderr: None shows it when the
            batch takes more than about a second and stderr is a terminal;
            True always; False never.
        **values : array_like
            By parameter name: either a batch of values of shape
            (B, *parameter.shape), or one value shared by the whole batch.
            Parameters not given use their ``Parameter.value``.

        Returns
        -------
        BatchSolution
            Values, primal and dual solutions with a leading batch axis, in
            scenario order whatever the executor. ``Variable.value`` and
            ``Parameter.value`` are not changed. Its ``backward`` and
            ``derivative`` run on the same executor.

        Raises
        ------
        ModelError
            For bad names, shapes or values, an empty batch, no batched value,
            or a bad option (an executor that is not a
            ``concurrent.futures.Executor``, a chunk size that is not a
            positive integer).
        SolverError
            With ``on_error="raise"``, for the failing scenario of lowest index
            (``"scenario 17: ..."``).

        Notes
        -----
        Every scenario is solved exactly as alone, wherever it runs: results
        through an executor equal the in-process ones. Within a process,
        scenarios that share P and the constraint matrix (only q and b
        vary, say) share one factorization, the others reuse its symbolic
        analysis, and with inequalities each scenario starts from the active
        set of the one before it (``batch.warm_starts`` counts those it
        verified directly). ``batch.execution`` says how the batch ran.

        Examples
        --------
        >>> import cvxpy as cp, numpy as np, diffmodel as dm
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> x = cp.Variable(2, name="x")
        >>> b = cp.Parameter(name="b")
        >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
        >>> with ThreadPoolExecutor(2) as pool:
        ...     batch = model.solve_batch(b=np.arange(4.0), executor=pool, chunk_size=2)
        >>> batch.primal["x"][:, 0]
        array([0. , 0.5, 1. , 1.5])
        """
        t0 = time.perf_counter()
        name = self._solver if solver is None else check_solver(solver)
        if on_error not in ("raise", "record"):
            raise ModelError(f"solve_batch(): on_error must be 'raise' or 'record', "
                             f"got {on_error!r}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
                chunk_size, (int, np.integer)) or chunk_size < 1):
            raise ModelError(f"solve_batch(): chunk_size must be a positive integer or None, "
                             f"got {chunk_size!r}")
        check_progress(progress, "solve_batch()")
        runner = Runner(self._engine, executor,
                        lambda total, desc: progress_bar(total, desc, progress))
        thetas, batched = self._packer.theta_batch(values, self._current_value,
                                                   "solve_batch()")
        note_shared_k(thetas, self._problem.k_parameters.isdisjoint(batched))
        t1 = time.perf_counter()
        try:
            result, execution = runner.solve(
                thetas, name, on_error, None if chunk_size is None else int(chunk_size))
        except SolverError as exc:
            raise self._in_model_terms(exc) from None
        t2 = time.perf_counter()
        primal, dual = self._packer.solution_batch(result.X, result.Y)
        batch = BatchSolution(
            value=self._problem.layout.sign * result.values, primal=primal, dual=dual,
            status=list(result.status), errors=dict(result.errors), accuracy=result.accuracy,
            solver=name, factorizations=result.factorizations,
            timings={"setup": t1 - t0, "solve": t2 - t1, "total": time.perf_counter() - t0},
            warm_starts=result.warm_starts, execution=execution,
            _result=result, _engine=self._engine, _packer=self._packer, _runner=runner)
        self._latest_batch = batch
        return batch

    # ------------------------------------------------------------- shortcuts

    def _require_latest(self, call: str) -> Solution:
        """The shared guard of the shortcuts: the latest successful solution."""
        sol = self._latest
        if sol is None:
            why = f" (the last solve failed: {self._last_failure})" if self._last_failure else ""
            raise NotSolvedError(f"{call} needs a solution: call model.solve() first{why}")
        return sol

    def backward(self, primal: Mapping[str, ArrayLike] | None = None,
                 dual: Mapping[str, ArrayLike] | None = None) -> dict[str, FloatArray]:
        """:meth:`Solution.backward` of the latest solution; also sets ``Parameter.gradient``.

        Raises
        ------
        NotSolvedError
            Without a successful solve.
        """
        grads = self._require_latest("backward()").backward(primal, dual)
        for name, grad in grads.items():
            self._parameters[name].gradient = grad.copy()
        return grads

    def derivative(self, directions: Mapping[str, ArrayLike]) -> dict[str, FloatArray]:
        """:meth:`Solution.derivative` of the latest solution; also sets ``Variable.delta``."""
        out = self._require_latest("derivative()").derivative(directions)
        for name, var in self._variables.items():
            var.delta = out[name].copy()
        return out

    def jacobian(self, of: str, wrt: str) -> FloatArray:
        """:meth:`Solution.jacobian` of the latest solution."""
        return self._require_latest("jacobian()").jacobian(of, wrt)

    def objective_gradient(self) -> dict[str, FloatArray]:
        """:meth:`Solution.objective_gradient` of the latest solution."""
        return self._require_latest("objective_gradient()").objective_gradient()

    def backward_batch(self, primal: Mapping[str, ArrayLike] | None = None,
                       dual: Mapping[str, ArrayLike] | None = None) -> dict[str, FloatArray]:
        """:meth:`BatchSolution.backward` of the latest batch (single solves are unaffected)."""
        batch = self._latest_batch
        if batch is None:
            raise NotSolvedError("backward_batch() needs a batch solution: call "
                                 "model.solve_batch() first")
        return batch.backward(primal, dual)

    def sensitivity(self, of: str | Sequence[str] | None = None,
                    wrt: str | Sequence[str] | None = None,
                    labels: Mapping[str, Any] | None = None, top: int = 10,
                    **options: Any) -> SensitivityReport:
        """:meth:`Solution.sensitivity` of the latest solution."""
        return self._require_latest("sensitivity()").sensitivity(
            of=of, wrt=wrt, labels=labels, top=top, **options)

    def predict(self, delta: Mapping[str, ArrayLike]) -> Prediction:
        """:meth:`Solution.predict` of the latest solution."""
        return self._require_latest("predict()").predict(delta)

    def sweep(self, name: str, values: ArrayLike, **options: Any) -> Sweep:
        """Compare first-order predictions with re-solves along a path; see
        :func:`diffmodel.analysis.sweep`."""
        return self._require_latest("sweep()").sweep(name, values, **options)

    # ------------------------------------------------------- copies, pickles

    def __getstate__(self) -> dict[str, object]:
        """The compiled problem, the names and the parameters' current values.

        No CVXPY expression tree and no factorization: the restored model has
        fresh CVXPY variables and parameters with the same names, shapes,
        attributes and values, constraints that map to None, and rebuilds
        its factorizations on the first solve.
        """
        return {
            "problem": self._problem, "specs": self._specs, "solver": self._solver,
            "variables": {n: (v.shape, _set_attributes(v)) for n, v in self._variables.items()},
            "parameters": {n: (p.shape, p.value) for n, p in self._parameters.items()},
            "constraints": list(self._constraints),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._solver = state["solver"]
        self._variables = {n: cp.Variable(shape, name=n, **attrs) for n, (shape, attrs) in
                           state["variables"].items()}
        specs: dict[str, ParamSpec] = state["specs"]
        self._parameters = {}
        for n, (shape, value) in state["parameters"].items():
            param = cp.Parameter(shape, name=n, **dict(specs[n].attributes))
            if value is not None:
                param.value = value
            self._parameters[n] = param
        self._constraints = {n: None for n in state["constraints"]}
        self._setup(state["problem"], specs)

    def __copy__(self) -> Model:
        """A model sharing the CVXPY objects and the compiled problem, with its own caches."""
        new = object.__new__(Model)
        new.__dict__.update(self.__dict__)
        new._engine = Engine(self._problem)
        new._packer = Packer(self._problem.layout, self._specs)
        return new

    def __deepcopy__(self, memo: dict[int, object]) -> Model:
        """An independent model: copied CVXPY objects, its own caches."""
        new = object.__new__(Model)
        memo[id(self)] = new
        shared = ("_engine", "_packer", "_problem", "_latest", "_latest_batch")
        for key, value in self.__dict__.items():
            if key not in shared:
                setattr(new, key, copy.deepcopy(value, memo))
        # Solutions are immutable and carry their own state: shared, not copied.
        new._latest, new._latest_batch = self._latest, self._latest_batch
        new._problem = self._problem  # immutable: shared
        new._engine = Engine(self._problem)
        new._packer = Packer(self._problem.layout, self._specs)
        return new

    def __repr__(self) -> str:
        def names(d: Mapping[str, object]) -> str:
            return ", ".join(d) or "-"

        s = self.size
        return (f"Model(variables=[{names(self._variables)}], "
                f"parameters=[{names(self._parameters)}], "
                f"constraints=[{names(self._constraints)}], n={s['n']}, m={s['m']}, "
                f"solver={self._solver!r})")
