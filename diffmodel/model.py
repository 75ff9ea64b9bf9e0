"""The user-facing :class:`Model`: names in, named arrays out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cvxpy as cp
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._validation import (
    check_array,
    check_names,
    check_parameter_value,
    has_checked_attributes,
)
from .canon import Block, ParametricQP, canonicalize
from .diff import adjoint, check_solved, jacobian_block, objective_gradient, tangent
from .errors import DerivativeError, ModelError, NotSolvedError, SolverError
from .kkt import KKTFactorization, KKTMaps, build_maps
from .solvers import SOLVERS, Backend, make_backend
from .solvers.direct import check_solution, factorize

__all__ = ["Model", "Solution", "BatchSolution"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Solution:
    """The result of :meth:`Model.solve`.

    Attributes
    ----------
    status : str
        ``"optimal"`` (failures raise :class:`~diffmodel.SolverError` instead).
    value : float
        Optimal objective value, in the sense of the model (maximized value
        for ``cp.Maximize``).
    primal : dict of str to ndarray
        Optimal value of each variable, by name, shaped like the variable.
    dual : dict of str to ndarray
        Optimal dual of each constraint, by name, shaped like the constraint,
        with CVXPY's sign convention: the Lagrangian is
        f(x) + Σ νᵀ(lhs − rhs) for a constraint ``lhs == rhs``, where f is the
        objective as CVXPY minimizes it (see docs/math.md for ``Maximize``).
    solver : str
        The backend that solved it (``"kkt"`` or ``"osqp"``).
    iterations : int
        Refinement steps (``"kkt"``) or ADMM iterations (``"osqp"``).
    residual : float
        Final relative KKT residual reported by the backend.
    timings : dict of str to float
        Seconds spent per phase of this call.
    """

    status: str
    value: float
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    solver: str
    iterations: int
    residual: float
    timings: Mapping[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        def shapes(d: Mapping[str, FloatArray]) -> str:
            return ", ".join(f"{k}: {np.shape(v)}" for k, v in d.items())

        return (
            f"Solution(status={self.status!r}, value={self.value:.6g}, "
            f"primal={{{shapes(self.primal)}}}, dual={{{shapes(self.dual)}}}, "
            f"solver={self.solver!r}, iterations={self.iterations}, "
            f"residual={self.residual:.1e})"
        )


@dataclass(frozen=True)
class BatchSolution:
    """The result of :meth:`Model.solve_batch`: B solutions stacked.

    Attributes
    ----------
    value : ndarray of shape (B,)
        Optimal values.
    primal : dict of str to ndarray
        Each variable's values, shape (B, *variable.shape).
    dual : dict of str to ndarray
        Each constraint's duals, shape (B, *constraint.shape), CVXPY's sign
        convention.
    solver : str
        The backend used.
    factorizations : int
        Numeric KKT factorizations this call performed (1, or 0 when the
        previous one could be reused, if no batched parameter changes K).
    timings : dict of str to float
        Seconds spent per phase.
    """

    value: FloatArray
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    solver: str
    factorizations: int
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Number of problems B in the batch."""
        return int(self.value.shape[0])

    def __repr__(self) -> str:
        def shapes(d: Mapping[str, FloatArray]) -> str:
            return ", ".join(f"{k}: {np.shape(v)}" for k, v in d.items())

        return (
            f"BatchSolution(batch_size={self.batch_size}, primal={{{shapes(self.primal)}}}, "
            f"dual={{{shapes(self.dual)}}}, solver={self.solver!r}, "
            f"factorizations={self.factorizations})"
        )


@dataclass(frozen=True)
class _BatchState:
    """What :meth:`Model.backward_batch` needs from the last batch solve."""

    thetas: FloatArray  # (n_theta + 1, B)
    Z: FloatArray  # (n + m, B)
    shared_K: bool


class _State(NamedTuple):
    """Everything derivatives need from the last successful solve."""

    theta: FloatArray
    kdata: FloatArray
    f: FloatArray
    z: FloatArray
    solution: Solution


def _as_constraint_dict(
    constraints: Mapping[str, cp.Constraint] | Sequence[cp.Constraint] | None,
) -> dict[str, cp.Constraint]:
    if constraints is None:
        return {}
    if isinstance(constraints, Mapping):
        return dict(constraints)
    if isinstance(constraints, cp.Constraint):
        constraints = [constraints]
    return {f"c{i}": con for i, con in enumerate(constraints)}


class Model:
    """A differentiable quadratic program built from CVXPY objects.

    Parameters
    ----------
    objective : cp.Minimize, cp.Maximize or cp.Problem
        The objective, or a whole problem (then ``constraints`` must be
        omitted and the problem's constraints are named ``c0, c1, ...``).
    constraints : dict of str to constraint, or list of constraints, optional
        Equality constraints. A dict names them; a list names them
        ``c0, c1, ...`` in order.
    solver : {"kkt", "osqp"}, default "kkt"
        Default backend for :meth:`solve`.

    Raises
    ------
    ModelError
        If the problem is not a convex QP with equality constraints, a
        variable or parameter has no explicit name, or a name is used twice.

    Notes
    -----
    The model is canonicalized once, here. :meth:`solve` only evaluates the
    stored affine maps for new parameter values, refactors the KKT matrix
    (reusing its symbolic analysis, and skipping the numeric factorization if
    only q and b changed), and solves. The factorization is then reused by
    every :meth:`backward`, :meth:`derivative` and :meth:`jacobian` call until
    the next solve.

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
    >>> model.backward({"x": np.array([1.0, 0.0])})["b"]
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
                    "pass either a cp.Problem or an objective with constraints, not both"
                )
            constraints = list(objective.constraints)
            objective = objective.objective
        if solver not in SOLVERS:
            raise ModelError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        cons = _as_constraint_dict(constraints)
        qp, variables, parameters = canonicalize(objective, cons)
        if "solver" in parameters:
            raise ModelError(
                "a parameter is named 'solver', which solve(solver=...) reserves; "
                "rename the parameter"
            )
        clash = set(variables) & set(cons)
        if clash:
            name = sorted(clash)[0]
            raise ModelError(
                f"the name {name!r} is used by both a variable and a constraint; "
                "names must be unique so that results can be looked up by name"
            )
        self._maps: KKTMaps = build_maps(qp)
        self._qp: ParametricQP = qp.layout()  # the coefficient lists live on in the maps
        del qp
        self._variables: dict[str, cp.Variable] = variables
        self._parameters: dict[str, cp.Parameter] = parameters
        self._constraints: dict[str, cp.Constraint] = cons
        self._solver_name = solver
        self._fact = KKTFactorization(self._maps)
        self._backends: dict[str, Backend] = {}
        # θ̃ at the current factorization (None: no valid factorization). Only
        # its entries in self._k_slices matter: the parameters K depends on.
        self._fact_theta: FloatArray | None = None
        # The last evaluated K data and the θ̃ it was evaluated at.
        self._kdata: FloatArray = np.zeros(0)
        self._kdata_theta: FloatArray | None = None
        # Per parameter: name, object, layout, and whether CVXPY attributes need checking.
        self._param_slots = [
            (name, param, self._qp.parameters[name], has_checked_attributes(param))
            for name, param in parameters.items()
        ]
        self._state: _State | None = None
        self._batch: _BatchState | None = None
        self._last_failure: str | None = None
        k_entries = self._maps.K_theta
        self._k_params = {
            name for name, block in self._qp.parameters.items()
            if np.any((k_entries >= 1 + block.offset) & (k_entries < 1 + block.stop))
        }
        self._k_slices = [
            slice(1 + block.offset, 1 + block.stop)
            for name, block in self._qp.parameters.items() if name in self._k_params
        ]

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
    def constraints(self) -> dict[str, cp.Constraint]:
        """The model's constraints by name."""
        return dict(self._constraints)

    @property
    def size(self) -> dict[str, int]:
        """Dimensions of the canonical QP: variables ``n`` (lifted auxiliaries
        included), equality rows ``m``, parameter entries ``n_theta``, and
        stored entries of the KKT matrix's upper triangle ``nnz_kkt`` (its
        pattern, including the explicit diagonal)."""
        return {"n": self._qp.n, "m": self._qp.m, "n_theta": self._qp.n_theta,
                "nnz_kkt": int(self._maps.indices.shape[0])}

    @property
    def factorizations(self) -> int:
        """Number of numeric KKT factorizations performed so far."""
        return self._fact.count

    # ------------------------------------------------------------------ solve

    def _theta(self, values: Mapping[str, ArrayLike]) -> tuple[FloatArray, dict[str, FloatArray]]:
        """θ̃ = (1, θ) from the given values and the parameters' current values.

        Validates everything before anything is changed. Shapes are checked
        per parameter; finiteness once for the whole vector.
        """
        if not values.keys() <= self._parameters.keys():
            check_names(values, self._parameters, "parameter", "solve()")
        theta = np.empty(self._qp.n_theta + 1)
        theta[0] = 1.0
        given: dict[str, FloatArray] = {}
        for name, param, block, strict in self._param_slots:
            if name in values:
                value = values[name]
                if (isinstance(value, np.ndarray) and value.dtype == np.float64
                        and value.shape == block.shape and not strict):
                    arr = value
                else:
                    arr = check_parameter_value(param, name, value)
                given[name] = arr
            else:
                arr = param.value
                if arr is None:
                    raise ModelError(
                        f"parameter '{name}' has no value: pass {name}=... to solve() "
                        f"or set {name}.value"
                    )
                if not isinstance(arr, np.ndarray) or arr.shape != block.shape:
                    arr = check_array(arr, block.shape, f"parameter '{name}'")
            theta[1 + block.offset: 1 + block.stop] = arr.ravel(order="F")
        if not np.isfinite(theta.sum()):  # cheap; a NaN or inf makes the sum non-finite
            for name, param, block, _ in self._param_slots:
                check_array(theta[1 + block.offset: 1 + block.stop].reshape(block.shape, order="F"),
                            block.shape, f"parameter '{name}'")
        return theta, given

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
            Optimal value, primal values by variable name and duals by
            constraint name. ``Variable.value`` and ``Constraint.dual_value``
            are set too.

        Raises
        ------
        ModelError
            For an unknown name, a value of the wrong shape, NaN or inf, or a
            parameter with no value. Nothing is changed in that case.
        SolverError
            If the problem is infeasible, unbounded, not convex for these
            values, or the backend fails. The previous solution is discarded.
        """
        t0 = time.perf_counter()
        name = self._solver_name if solver is None else solver
        if name not in SOLVERS:
            raise ModelError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
        theta, given = self._theta(values)
        for pname, arr in given.items():
            self._parameters[pname].save_value(arr)
        maps = self._maps
        k_changed = not self._same_k(theta, self._fact_theta)
        if self._same_k(theta, self._kdata_theta):
            kdata = self._kdata  # K does not depend on what changed: reuse its data.
        else:
            kdata = maps.K.apply(theta)
            self._kdata, self._kdata_theta = kdata, theta
        f = maps.F.apply(theta)
        backend = self._backends.get(name)
        if backend is None:
            backend = self._backends[name] = make_backend(name, maps)
        t1 = time.perf_counter()
        self._state = None
        try:
            if k_changed:
                self._fact_theta = None
            raw = backend.solve(kdata, f, self._fact, k_changed)
        except SolverError as exc:
            if self._qp.sign < 0 and exc.status == "unbounded":
                # The canonical problem minimizes −g; the model maximizes g.
                exc = SolverError(str(exc).replace("unbounded below", "unbounded above")
                                  .replace("decreases", "increases"), exc.status)
            self._last_failure = str(exc)
            raise exc from None
        if raw.factored:
            self._fact_theta = theta
        t2 = time.perf_counter()
        z = raw.z
        n = maps.n
        x, nu = z[:n], z[n:]
        # At a KKT point P x = −q − Aᵀν and A x = b, so ½xᵀPx + qᵀx = ½(qᵀx − bᵀν) = ½ fᵀz.
        value = 0.5 * float(f @ z)
        if maps.r_index.shape[0]:
            value += float(maps.r(theta))
        value *= self._qp.sign
        primal: dict[str, FloatArray] = {}
        for vname, block in self._qp.variables.items():
            arr = x[block.offset: block.stop].reshape(block.shape, order="F")
            primal[vname] = arr
            self._variables[vname].save_value(arr.copy())
        dual: dict[str, FloatArray] = {}
        for cname, block in self._qp.constraints.items():
            arr = nu[block.offset: block.stop].reshape(block.shape, order="F")
            dual[cname] = arr
            self._constraints[cname].save_dual_value(arr.copy())
        sol = Solution(
            status="optimal", value=value, primal=primal, dual=dual, solver=name,
            iterations=raw.iterations, residual=raw.residual,
            timings={"setup": t1 - t0, "solve": t2 - t1, "total": time.perf_counter() - t0},
        )
        self._state = _State(theta, kdata, f, z, sol)
        self._last_failure = None
        return sol

    def _same_k(self, theta: FloatArray, ref: FloatArray | None) -> bool:
        """Whether K at θ̃ equals K at ``ref`` (its parameters are unchanged)."""
        if ref is None:
            return False
        for s in self._k_slices:
            if not np.array_equal(theta[s], ref[s]):
                return False
        return True

    @property
    def solution(self) -> Solution | None:
        """The last successful solution, or None if there is none."""
        return None if self._state is None else self._state.solution

    # ----------------------------------------------------------------- batches

    def _batch_thetas(self, values: Mapping[str, ArrayLike]) -> tuple[FloatArray, set[str]]:
        """Stack θ̃ for a batch: (n_theta + 1, B) and the names that vary."""
        check_names(values, self._parameters, "parameter", "solve_batch()")
        batched: dict[str, FloatArray] = {}
        shared: dict[str, ArrayLike] = {}
        size: int | None = None
        for name, value in values.items():
            shape = self._qp.parameters[name].shape
            arr = np.asarray(value)
            if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
                if size is not None and arr.shape[0] != size:
                    raise ModelError(
                        f"solve_batch(): parameter '{name}' has a batch of {arr.shape[0]} "
                        f"values, others have {size}"
                    )
                size = arr.shape[0]
                batched[name] = arr
            else:
                shared[name] = value
        if size is None:
            raise ModelError(
                "solve_batch(): no batched value given; pass at least one parameter with "
                "a leading batch dimension, e.g. q of shape (B, *q.shape)"
            )
        base, _ = self._theta({**shared, **{k: v[0] for k, v in batched.items()}})
        thetas = np.repeat(base[:, None], size, axis=1)
        for name, arr in batched.items():
            block = self._qp.parameters[name]
            rows = slice(1 + block.offset, 1 + block.stop)
            for i in range(size):
                item = check_parameter_value(self._parameters[name], f"{name}[{i}]", arr[i])
                thetas[rows, i] = item.ravel(order="F")
        return thetas, set(batched)

    def solve_batch(self, solver: str | None = None, **values: ArrayLike) -> BatchSolution:
        """Solve the QP for a batch of parameter values.

        Parameters
        ----------
        solver : {"kkt", "osqp"}, optional
            Backend; defaults to the model's.
        **values : array_like
            By parameter name: either a batch of values of shape
            (B, *parameter.shape), or one value shared by the whole batch.
            Parameters not given use their ``Parameter.value``.

        Returns
        -------
        BatchSolution
            Values, primal and dual solutions with a leading batch axis.
            ``Variable.value`` and ``Parameter.value`` are not changed.

        Raises
        ------
        ModelError
            For bad names, shapes or values, or no batched value.
        SolverError
            If any problem of the batch has no solution; the message gives
            its batch index.

        Notes
        -----
        When no batched parameter enters the KKT matrix (only q and b, say,
        vary), the whole batch costs one factorization and B solves with
        it; otherwise each item is factored in turn.
        """
        t0 = time.perf_counter()
        name = self._solver_name if solver is None else solver
        if name not in SOLVERS:
            raise ModelError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
        thetas, varying = self._batch_thetas(values)
        maps = self._maps
        size = thetas.shape[1]
        shared_K = not (varying & self._k_params)
        F = maps.F.apply(thetas)
        before = self._fact.count
        self._batch = None
        t1 = time.perf_counter()
        if shared_K and name == "kkt":
            theta0 = thetas[:, 0]
            if not self._same_k(theta0, self._fact_theta):
                self._fact_theta = None
                kdata = maps.K.apply(theta0)
                factorize(self._fact, kdata, need_inertia=maps.P_theta.size > 0
                          or self._fact.count == 0)
                self._fact_theta = theta0
            Z, residuals = self._fact.solve_many(-F)
            for i in range(size):
                exc = check_solution(self._fact, Z[:, i], F[:, i], float(residuals[i]))
                if exc is not None:
                    raise SolverError(f"batch item {i}: {exc}", exc.status)
        else:
            Z = np.empty((maps.dim, size))
            for i in range(size):
                try:
                    Z[:, i] = self._solve_item(thetas[:, i], name)
                except SolverError as exc:
                    raise SolverError(f"batch item {i}: {exc}", exc.status) from None
        t2 = time.perf_counter()
        n = maps.n
        values_out = self._qp.sign * (
            0.5 * np.einsum("ij,ij->j", F, Z) + maps.r(thetas)
        )
        primal = {
            v: Z[b.offset: b.stop].T.reshape((size, *b.shape), order="F")
            if b.shape else Z[b.offset].copy()
            for v, b in self._qp.variables.items()
        }
        dual = {
            c: Z[n + b.offset: n + b.stop].T.reshape((size, *b.shape), order="F")
            if b.shape else Z[n + b.offset].copy()
            for c, b in self._qp.constraints.items()
        }
        self._batch = _BatchState(thetas, Z, shared_K and name == "kkt")
        return BatchSolution(
            value=values_out, primal=primal, dual=dual, solver=name,
            factorizations=self._fact.count - before,
            timings={"setup": t1 - t0, "solve": t2 - t1, "total": time.perf_counter() - t0},
        )

    def _solve_item(self, theta: FloatArray, name: str) -> FloatArray:
        """Solve for one θ̃ without touching the single-solve state's outputs."""
        maps = self._maps
        kdata = maps.K.apply(theta)
        k_changed = not self._same_k(theta, self._fact_theta)
        backend = self._backends.get(name)
        if backend is None:
            backend = self._backends[name] = make_backend(name, maps)
        if k_changed:
            self._fact_theta = None
        raw = backend.solve(kdata, maps.F.apply(theta), self._fact, k_changed)
        if raw.factored:
            self._fact_theta = theta
        return raw.z

    def backward_batch(
        self,
        primal: Mapping[str, ArrayLike] | None = None,
        dual: Mapping[str, ArrayLike] | None = None,
    ) -> dict[str, FloatArray]:
        """Reverse mode for the last :meth:`solve_batch`.

        Parameters
        ----------
        primal, dual : dict of str to array_like, optional
            Loss gradients by variable / constraint name, each of shape
            (B, *shape), or (*shape) to use the same gradient for every item.

        Returns
        -------
        dict of str to ndarray
            dℓ_i/dθ for every parameter, shape (B, *parameter.shape).

        Raises
        ------
        NotSolvedError
            Without a successful :meth:`solve_batch` before.
        ModelError, DerivativeError
            As for :meth:`backward`.

        Notes
        -----
        With a KKT matrix shared by the batch, this is B adjoint solves with
        one factorization; otherwise each item is refactored.
        """
        batch = self._batch
        if batch is None:
            raise NotSolvedError("backward_batch() needs a batch solution: call "
                                 "model.solve_batch() first")
        size = batch.Z.shape[1]
        G = np.zeros((self._maps.dim, size))
        n = self._maps.n
        for mapping, blocks, shift, kind in (
            (primal, self._qp.variables, 0, "variable"),
            (dual, self._qp.constraints, n, "constraint"),
        ):
            for name, value in (mapping or {}).items():
                if name not in blocks:
                    check_names([name], blocks, kind, "backward_batch()")
                block = blocks[name]
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape == block.shape:
                    arr = np.broadcast_to(arr, (size, *block.shape))
                arr = check_array(arr, (size, *block.shape),
                                  f"backward_batch(): gradient for {kind} '{name}'")
                G[shift + block.offset: shift + block.stop] = arr.reshape(
                    size, block.size, order="F").T
        maps = self._maps
        if batch.shared_K:
            theta0 = batch.thetas[:, 0].copy()
            if not self._same_k(theta0, self._fact_theta):
                self._fact_theta = None
                factorize(self._fact, maps.K.apply(theta0), need_inertia=False)
                self._fact_theta = theta0
                self._state = None
            Omega, residuals = self._fact.solve_many(G)
            check_solved(self._fact, float(residuals.max(initial=0.0)))
            grad = maps.F.apply_adjoint(Omega)
            if maps.dep_rows.shape[0]:
                grad += maps.dep.apply_adjoint(maps.dK_adjoint(Omega, batch.Z))
            dtheta = -grad
        else:
            dtheta = np.empty((maps.K.shape[1], size))
            for i in range(size):
                theta = batch.thetas[:, i].copy()
                self._fact_theta = None
                factorize(self._fact, maps.K.apply(theta), need_inertia=False)
                self._fact_theta = theta
                dtheta[:, i] = adjoint(self._fact, batch.Z[:, i], G[:, i])
        return {
            name: dtheta[1 + b.offset: 1 + b.stop].T.reshape((size, *b.shape), order="F")
            for name, b in self._qp.parameters.items()
        }

    # ------------------------------------------------------------ derivatives

    def _ready(self, call: str) -> _State:
        """The shared guard of every derivative: a good solve and a factorization."""
        state = self._state
        if state is None:
            why = (f" (the last solve failed: {self._last_failure})"
                   if self._last_failure else "")
            raise NotSolvedError(f"{call} needs a solution: call model.solve() first{why}")
        if not self._same_k(state.theta, self._fact_theta):
            try:
                factorize(self._fact, state.kdata, need_inertia=False)
            except SolverError as exc:
                raise DerivativeError(f"{call}: {exc}") from None
            self._fact_theta = state.theta
        return state

    def _z_vector(self, primal: Mapping[str, ArrayLike] | None,
                  dual: Mapping[str, ArrayLike] | None, call: str) -> FloatArray:
        """∂ℓ/∂z from gradients by variable and constraint name, validated."""
        g = np.zeros(self._maps.dim)
        n = self._maps.n
        given: list[tuple[str, str, Block, int, ArrayLike]] = []
        for name, value in (primal or {}).items():
            block = self._qp.variables.get(name)
            if block is None:
                if name in self._constraints:
                    raise ModelError(
                        f"{call}: {name!r} is a constraint, not a variable: pass the "
                        f"gradient for its dual as dual={{{name!r}: ...}}"
                    )
                check_names([name], self._variables, "variable", call)
            else:
                given.append((f"gradient for variable '{name}'", name, block, 0, value))
        for name, value in (dual or {}).items():
            block = self._qp.constraints.get(name)
            if block is None:
                check_names([name], self._constraints, "constraint", call)
            else:
                given.append((f"gradient for the dual of '{name}'", name, block, n, value))
        for what, _, block, shift, value in given:
            if not (isinstance(value, np.ndarray) and value.dtype == np.float64
                    and value.shape == block.shape):
                value = check_array(value, block.shape, f"{call}: {what}")
            g[shift + block.offset: shift + block.stop] = value.ravel(order="F")
        if not np.isfinite(g.sum()):  # name the culprit
            for what, _, block, _, value in given:
                check_array(value, block.shape, f"{call}: {what}")
        return g

    def backward(
        self,
        primal: Mapping[str, ArrayLike] | None = None,
        dual: Mapping[str, ArrayLike] | None = None,
    ) -> dict[str, FloatArray]:
        """Reverse mode: gradients of a loss with respect to every parameter.

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
            ``Parameter.gradient`` is set too.

        Raises
        ------
        NotSolvedError
            If there is no successful solve to differentiate.
        ModelError
            For an unknown name or a gradient of the wrong shape.
        DerivativeError
            If the KKT matrix is singular at the solution.

        Notes
        -----
        One adjoint solve ω = K⁻ᵀ ∂ℓ/∂z with the factorization of the last
        solve, then dℓ/dθ = −(∂F/∂θ)ᵀ ω for all parameters at once.
        """
        g = self._z_vector(primal, dual, "backward()")
        state = self._ready("backward()")
        dtheta = adjoint(self._fact, state.z, g)
        grads: dict[str, FloatArray] = {}
        for name, block in self._qp.parameters.items():
            arr = dtheta[1 + block.offset: 1 + block.stop].reshape(block.shape, order="F")
            grads[name] = arr
            self._parameters[name].gradient = arr
        return grads

    def derivative(self, directions: Mapping[str, ArrayLike]) -> dict[str, FloatArray]:
        """Forward mode: the change of the solution along a parameter direction.

        Parameters
        ----------
        directions : dict of str to array_like
            dθ for any subset of parameters, by name, shaped like each
            (parameters not given do not move).

        Returns
        -------
        dict of str to ndarray
            dx for every variable (by variable name) and dν for every
            constraint's dual (by constraint name). ``Variable.delta`` is set
            too.

        Raises
        ------
        NotSolvedError, ModelError, DerivativeError
            As for :meth:`backward`.
        """
        check_names(directions, self._parameters, "parameter", "derivative()")
        dtheta = np.zeros(self._qp.n_theta + 1)
        for name, value in directions.items():
            block = self._qp.parameters[name]
            arr = check_array(value, block.shape, f"derivative(): direction for parameter '{name}'")
            dtheta[1 + block.offset: 1 + block.stop] = arr.ravel(order="F")
        state = self._ready("derivative()")
        dz = tangent(self._fact, state.z, dtheta)
        n = self._maps.n
        out: dict[str, FloatArray] = {}
        for name, block in self._qp.variables.items():
            arr = dz[block.offset: block.stop].reshape(block.shape, order="F")
            out[name] = arr
            self._variables[name].delta = arr
        for name, block in self._qp.constraints.items():
            out[name] = dz[n + block.offset: n + block.stop].reshape(block.shape, order="F")
        return out

    def _output_rows(self, of: str, call: str) -> tuple[Block, int]:
        if of in self._qp.variables:
            return self._qp.variables[of], 0
        if of in self._qp.constraints:
            return self._qp.constraints[of], self._maps.n
        names = ", ".join(repr(k) for k in [*self._variables, *self._constraints])
        raise ModelError(f"{call}: {of!r} is neither a variable nor a constraint (known: {names})")

    def jacobian(self, of: str, wrt: str) -> FloatArray:
        """The Jacobian of a variable (or a constraint's dual) w.r.t. a parameter.

        Parameters
        ----------
        of : str
            A variable name, or a constraint name for its dual ν.
        wrt : str
            A parameter name.

        Returns
        -------
        ndarray of shape (size of ``of``, size of ``wrt``)
            Rows follow ``of`` and columns ``wrt``, each flattened in
            column-major (Fortran) order.

        Notes
        -----
        Uses forward passes (one per column) or reverse passes (one per row),
        whichever is fewer, all with the factorization of the last solve.
        """
        block, shift = self._output_rows(of, "jacobian()")
        check_names([wrt], self._parameters, "parameter", "jacobian()")
        state = self._ready("jacobian()")
        pblock = self._qp.parameters[wrt]
        rows = np.arange(shift + block.offset, shift + block.stop)
        cols = np.arange(1 + pblock.offset, 1 + pblock.stop)
        return jacobian_block(self._fact, state.z, rows, cols)

    def objective_gradient(self) -> dict[str, FloatArray]:
        """∂f*/∂θ: the derivative of the optimal value w.r.t. every parameter.

        Computed from the Lagrangian at the current solution (envelope
        theorem), without any solve.

        Returns
        -------
        dict of str to ndarray
            By parameter name, shaped like the parameter. For ``Maximize``
            this is the derivative of the maximized value.

        Raises
        ------
        NotSolvedError
            If there is no successful solve.
        """
        state = self._state
        if state is None:
            self._ready("objective_gradient()")  # raises the shared NotSolvedError
            raise AssertionError("unreachable")  # pragma: no cover
        grad = self._qp.sign * objective_gradient(self._maps, state.z)
        return {
            name: grad[1 + b.offset: 1 + b.stop].reshape(b.shape, order="F")
            for name, b in self._qp.parameters.items()
        }

    # ----------------------------------------------------------- sensitivity

    def sensitivity(
        self,
        of: str | Sequence[str] | None = None,
        wrt: str | Sequence[str] | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        top: int = 10,
        **options: object,
    ) -> "SensitivityReport":  # noqa: F821
        """A sensitivity report at the current solution.

        See :func:`diffmodel.report.sensitivity` for the parameters, the
        contents of the report and its renderings.
        """
        from .report import sensitivity

        return sensitivity(self, of=of, wrt=wrt, labels=labels, top=top, **options)

    def predict(self, delta: Mapping[str, ArrayLike]) -> "Prediction":  # noqa: F821
        """First-order prediction of the solution for a change of parameters.

        See :func:`diffmodel.report.predict`.
        """
        from .report import predict

        return predict(self, delta)

    def sweep(self, name: str, values: ArrayLike, **options: object) -> "Sweep":  # noqa: F821
        """Compare the first-order prediction with re-solves along a path.

        See :func:`diffmodel.report.sweep`.
        """
        from .report import sweep

        return sweep(self, name, values, **options)

    def __repr__(self) -> str:
        def names(d: Mapping[str, object]) -> str:
            return ", ".join(d) or "-"

        s = self.size
        return (
            f"Model(variables=[{names(self._variables)}], parameters=[{names(self._parameters)}], "
            f"constraints=[{names(self._constraints)}], n={s['n']}, m={s['m']}, "
            f"solver={self._solver_name!r})"
        )
