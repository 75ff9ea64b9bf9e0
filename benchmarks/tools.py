"""The tools compared by ``benchmarks/run.py``: diffmodel, the bare limit, peers.

Each tool is a class with the same four steps, timed by the runner:

- ``first(values)``: everything from the problem data to the first solution
  (compile, set up, factor, solve);
- ``resolve(values)``: a new solve with new parameter values;
- ``backward(g)``: the gradient of ℓ = gᵀx with respect to every parameter,
  after the last solve;
- ``forward(direction)`` and ``jacobian()`` where the tool has them (dx/db).

``values`` and the returned gradients are dicts by parameter name (q, b and,
for the matrix-parameter family, A). A tool that is not installed raises
ImportError at construction and its rows are skipped. Tools with
``peer = True`` are other projects' implementations: a failure of theirs is
theirs (tests/test_benchmarks.py skips it with a reason), while diffmodel's
tools and the bare limits must always run and agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from diffmodel.testing import QPData

Values = dict[str, np.ndarray]


class Tool:
    name = "tool"
    peer = False
    has_forward = False
    has_jacobian = False

    def __init__(self, data: QPData, params: tuple[str, ...]) -> None:
        self.data = data
        self.params = params

    def first(self, values: Values) -> np.ndarray:
        raise NotImplementedError

    def resolve(self, values: Values) -> np.ndarray:
        raise NotImplementedError

    def backward(self, g: np.ndarray) -> Values:
        raise NotImplementedError

    def forward(self, direction: Values) -> np.ndarray:
        raise NotImplementedError

    def jacobian(self) -> np.ndarray:
        raise NotImplementedError


def _matrices(data: QPData, values: Values) -> tuple[sp.csc_matrix, np.ndarray, sp.csc_matrix, np.ndarray]:
    A = sp.csc_matrix(values["A"]) if "A" in values else data.A
    return data.P, values.get("q", data.q), A, values.get("b", data.b)


# --------------------------------------------------------------------------- diffmodel


class Diffmodel(Tool):
    name = "diffmodel"
    has_forward = True
    has_jacobian = True
    solver = "kkt"

    def first(self, values: Values) -> np.ndarray:
        from diffmodel.testing import as_model

        self.model, _ = as_model(self.data, parameters=self.params, solver=self.solver)
        return self.resolve(values)

    def resolve(self, values: Values) -> np.ndarray:
        return self.model.solve(**values).primal["x"]

    def backward(self, g: np.ndarray) -> Values:
        return self.model.backward({"x": g})

    def forward(self, direction: Values) -> np.ndarray:
        return self.model.derivative(direction)["x"]

    def jacobian(self) -> np.ndarray:
        return self.model.jacobian("x", "b")


class DiffmodelOSQP(Diffmodel):
    name = "diffmodel (osqp)"
    solver = "osqp"


# --------------------------------------------------------------------------- the limit


class _Bare(Tool):
    """Assemble K once, factor once, one solve and one adjoint solve."""

    has_forward = True
    has_jacobian = True

    def first(self, values: Values) -> np.ndarray:
        P, q, A, b = _matrices(self.data, values)
        self.n, self.m = P.shape[0], A.shape[0]
        self.K = sp.bmat([[P, A.T], [A, None]], format="csc")
        self._factor(self.K)
        self.A = A
        return self.resolve(values)

    def resolve(self, values: Values) -> np.ndarray:
        if "A" in values and not np.array_equal(values["A"], self.A.toarray()):
            raise ValueError("the bare path refactors only in first()")
        q = values.get("q", self.data.q)
        b = values.get("b", self.data.b)
        self.z = self._solve(np.concatenate([-q, b]))
        return self.z[: self.n]

    def backward(self, g: np.ndarray) -> Values:
        n = self.n
        omega = self._solve(np.concatenate([g, np.zeros(self.m)]))
        grads = {"q": -omega[:n], "b": omega[n:]}
        if "A" in self.params:
            x, nu = self.z[:n], self.z[n:]
            grads["A"] = -(np.outer(nu, omega[:n]) + np.outer(omega[n:], x))
        return grads

    def forward(self, direction: Values) -> np.ndarray:
        rhs = np.concatenate([-direction.get("q", np.zeros(self.n)),
                              direction.get("b", np.zeros(self.m))])
        return self._solve(rhs)[: self.n]

    def jacobian(self) -> np.ndarray:
        rhs = np.zeros((self.n + self.m, self.m))
        rhs[self.n:] = np.eye(self.m)
        return np.column_stack([self._solve(rhs[:, j]) for j in range(self.m)])[: self.n]


class BareQDLDL(_Bare):
    """QDLDL on K + δ diag(I, −I) plus iterative refinement: diffmodel's factorization."""

    name = "limit: qdldl"

    def _factor(self, K: sp.csc_matrix) -> None:
        import qdldl

        delta = 1e-9 * abs(K).max()  # the static regularization of a bare quasi-definite LDLᵀ
        reg = sp.diags(np.concatenate([np.full(self.n, delta), np.full(self.m, -delta)]))
        self.solver = qdldl.Solver(sp.triu(K + reg, format="csc"), upper=True)

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        z = self.solver.solve(rhs)
        tol = 5e-15 * (abs(rhs).max() + abs(z).max())
        for _ in range(3):  # refinement to working precision (one step usually)
            res = rhs - self.K @ z
            if abs(res).max() <= tol:
                break
            z = z + self.solver.solve(res)
        return z


class BareSplu(_Bare):
    """SciPy's SuperLU (splu) of the exact K: a reference LU."""

    name = "limit: splu"

    def _factor(self, K: sp.csc_matrix) -> None:
        from scipy.sparse.linalg import splu

        self.lu = splu(K)

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.lu.solve(rhs)


# --------------------------------------------------------------------------- peers


class OSQPAdjoint(Tool):
    """OSQP 1.x (direct linear solver) and its adjoint derivative."""

    name = "OSQP + adjoint"
    peer = True

    def __init__(self, data: QPData, params: tuple[str, ...]) -> None:
        import osqp  # noqa: F401

        super().__init__(data, params)

    def first(self, values: Values) -> np.ndarray:
        import osqp

        P, q, A, b = _matrices(self.data, values)
        self.solver = osqp.OSQP()
        self.solver.setup(sp.triu(P, format="csc"), q, sp.csc_matrix(A), b, b, verbose=False,
                          eps_abs=1e-9, eps_rel=1e-9, polishing=True, max_iter=100_000)
        return self._solve()

    def _solve(self) -> np.ndarray:
        result = self.solver.solve(raise_error=False)
        if result.info.status != "solved":
            raise RuntimeError(f"OSQP: {result.info.status}")
        return np.asarray(result.x)

    def resolve(self, values: Values) -> np.ndarray:
        b = values.get("b", self.data.b)
        self.solver.update(q=values.get("q", self.data.q), l=b, u=b)
        return self._solve()

    def backward(self, g: np.ndarray) -> Values:
        self.solver.adjoint_derivative_compute(dx=g)
        dq, dl, du = self.solver.adjoint_derivative_get_vec()
        grads = {"q": np.asarray(dq), "b": np.asarray(dl) + np.asarray(du)}
        if "A" in self.params:
            _, dA = self.solver.adjoint_derivative_get_mat()
            grads["A"] = np.asarray(sp.csc_matrix(dA).toarray())
        return grads


def _cvxpy_problem(data: QPData, params: tuple[str, ...], values: Values) -> tuple[Any, ...]:
    import cvxpy as cp

    n = data.n
    x = cp.Variable(n, name="x")
    par = {k: cp.Parameter(v.shape, name=k, value=v) for k, v in values.items()}
    q = par.get("q", data.q)
    b = par.get("b", data.b)
    A = par.get("A", data.A)
    objective = cp.Minimize(0.5 * cp.quad_form(x, data.P, assume_PSD=True) + q @ x)
    return cp.Problem(objective, [A @ x == b]), x, par


class CVXPYBackward(Tool):
    """CVXPY ``solve(requires_grad=True)`` + ``backward()`` (diffcp, default solver)."""

    name = "CVXPY backward()"
    peer = True
    has_forward = True

    def __init__(self, data: QPData, params: tuple[str, ...]) -> None:
        import diffcp  # noqa: F401

        super().__init__(data, params)

    def first(self, values: Values) -> np.ndarray:
        self.problem, self.x, self.par = _cvxpy_problem(self.data, self.params, values)
        return self.resolve(values)

    def resolve(self, values: Values) -> np.ndarray:
        for k, v in values.items():
            self.par[k].value = v
        self.problem.solve(requires_grad=True)
        return np.asarray(self.x.value)

    def backward(self, g: np.ndarray) -> Values:
        self.x.gradient = g
        self.problem.backward()
        return {k: np.asarray(p.gradient) for k, p in self.par.items()}

    def forward(self, direction: Values) -> np.ndarray:
        for k, p in self.par.items():
            p.delta = direction.get(k, np.zeros(p.shape))
        self.problem.derivative()
        return np.asarray(self.x.delta)


class CvxpyLayers(Tool):
    """cvxpylayers' CvxpyLayer on PyTorch (CPU, float64)."""

    name = "cvxpylayers"
    peer = True

    def __init__(self, data: QPData, params: tuple[str, ...]) -> None:
        import cvxpylayers.torch  # noqa: F401
        import torch  # noqa: F401

        super().__init__(data, params)

    def first(self, values: Values) -> np.ndarray:
        from cvxpylayers.torch import CvxpyLayer

        problem, x, par = _cvxpy_problem(self.data, self.params, values)
        self.names = list(par)
        self.layer = CvxpyLayer(problem, parameters=[par[k] for k in self.names], variables=[x])
        return self.resolve(values)

    def resolve(self, values: Values) -> np.ndarray:
        import torch

        self.inputs = [torch.tensor(values[k], dtype=torch.float64, requires_grad=True)
                       for k in self.names]
        (self.x,) = self.layer(*self.inputs)
        return self.x.detach().numpy().copy()

    def backward(self, g: np.ndarray) -> Values:
        import torch

        for t in self.inputs:
            t.grad = None
        self.x.backward(torch.tensor(g, dtype=torch.float64), retain_graph=True)
        return {k: t.grad.numpy().copy() for k, t in zip(self.names, self.inputs)}


class Qpth(Tool):
    """qpth's QPFunction (dense batched interior point, PyTorch, float64).

    qpth needs an inequality block; a single inactive row 0ᵀx ≤ 1 is added.
    """

    name = "qpth"
    peer = True

    def __init__(self, data: QPData, params: tuple[str, ...]) -> None:
        import qpth  # noqa: F401
        import torch  # noqa: F401

        super().__init__(data, params)

    def first(self, values: Values) -> np.ndarray:
        import torch
        from qpth.qp import QPFunction

        t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
        self.Q = t(self.data.P.toarray())
        self.G = torch.zeros((1, self.data.n), dtype=torch.float64)
        self.h = torch.ones(1, dtype=torch.float64)
        self.A_fixed = None if "A" in values else t(self.data.A.toarray())
        self.fn = QPFunction(verbose=-1, eps=1e-12, maxIter=50)
        return self.resolve(values)

    def resolve(self, values: Values) -> np.ndarray:
        import torch

        self.inputs = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
                       for k, v in values.items()}
        A = self.inputs.get("A", self.A_fixed)
        x = self.fn(self.Q, self.inputs["q"], self.G, self.h, A, self.inputs["b"])
        self.x = x.reshape(-1)
        return self.x.detach().numpy().copy()

    def backward(self, g: np.ndarray) -> Values:
        import torch

        for t in self.inputs.values():
            t.grad = None
        self.x.backward(torch.tensor(g, dtype=torch.float64), retain_graph=True)
        return {k: t.grad.numpy().copy() for k, t in self.inputs.items()}


TOOLS: dict[str, type[Tool]] = {
    cls.name: cls
    for cls in (Diffmodel, DiffmodelOSQP, BareQDLDL, BareSplu, OSQPAdjoint, CVXPYBackward,
                CvxpyLayers, Qpth)
}
