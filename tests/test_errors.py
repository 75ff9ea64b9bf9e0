"""Every failure of diffmodel's public API: type, pinned message, model still usable.

The contract (DESIGN.md): bad input is a clear error that names the culprit
and loses nothing. So every test below

1. triggers one failure and pins the message with ``pytest.raises(match=...)``
   on the words that matter (the culprit's name, expected vs actual shape);
2. then solves the same model successfully and runs a backward pass, checked
   against a dense NumPy KKT solve, to prove the model is still usable. For
   errors raised while building a model there is no model; the same CVXPY
   objects are then used to build a valid model, which must work.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm

SOLVERS = ("kkt", "osqp")


# ---------------------------------------------------------------------------
# The test problem and a dense reference
# ---------------------------------------------------------------------------

N, M = 4, 2


@dataclass
class QP:
    """minimize ½‖x‖² + qᵀx  subject to  A x = b  ("bal"), parameters A, b, q."""

    x: cp.Variable
    A: cp.Parameter
    b: cp.Parameter
    q: cp.Parameter
    values: dict[str, np.ndarray]

    def objective(self) -> cp.Minimize:
        return cp.Minimize(0.5 * cp.sum_squares(self.x) + self.q @ self.x)

    def model(self, **kwargs: object) -> dm.Model:
        return dm.Model(self.objective(), {"bal": self.A @ self.x == self.b}, **kwargs)


def make_qp(seed: int = 0) -> QP:
    rng = np.random.default_rng(seed)
    # Well-conditioned full-row-rank A: singular values in [1, 2].
    U, _ = np.linalg.qr(rng.standard_normal((M, M)))
    V, _ = np.linalg.qr(rng.standard_normal((N, M)))
    A0 = U @ np.diag(rng.uniform(1.0, 2.0, M)) @ V.T
    values = {"A": A0, "b": rng.standard_normal(M), "q": rng.standard_normal(N)}
    return QP(
        x=cp.Variable(N, name="x"),
        A=cp.Parameter((M, N), name="A"),
        b=cp.Parameter(M, name="b"),
        q=cp.Parameter(N, name="q"),
        values=values,
    )


@pytest.fixture
def qp() -> QP:
    return make_qp(0)


def dense_reference(A: np.ndarray, b: np.ndarray, q: np.ndarray, g: np.ndarray):
    """x, ν and the exact gradients of ℓ = gᵀx for minimize ½‖x‖² + qᵀx, Ax = b.

    K = [[I, Aᵀ], [A, 0]], K z = (−q, b); ω = K⁻¹ (g, 0);
    dℓ/dq = −ω_x, dℓ/db = ω_ν, dℓ/dA = −(ν ω_xᵀ + ω_ν xᵀ).
    """
    n, m = A.shape[1], A.shape[0]
    K = np.block([[np.eye(n), A.T], [A, np.zeros((m, m))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    w = np.linalg.solve(K, np.concatenate([g, np.zeros(m)]))
    x, nu, wx, wn = z[:n], z[n:], w[:n], w[n:]
    grads = {"A": -(np.outer(nu, wx) + np.outer(wn, x)), "b": wn, "q": -wx}
    return x, nu, grads


def assert_usable(model: dm.Model, values: dict[str, np.ndarray], solver: str = "kkt") -> None:
    """A successful solve and backward pass on ``model``, checked against dense KKT.

    ``model`` must have the structure of :class:`QP` (variable x, constraint
    "bal", parameters A, b, q).
    """
    sol = model.solve(solver=solver, **values)
    assert sol.status == "optimal"
    g = np.linspace(-1.0, 1.0, N)
    x_ref, nu_ref, grads_ref = dense_reference(values["A"], values["b"], values["q"], g)
    tol = 1e-9 if solver == "kkt" else 1e-7
    np.testing.assert_allclose(sol.primal["x"], x_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(sol.dual["bal"], nu_ref, rtol=tol, atol=tol)
    grads = model.backward({"x": g})
    for name, ref in grads_ref.items():
        np.testing.assert_allclose(grads[name], ref, rtol=1e-7, atol=1e-9, err_msg=name)


@contextmanager
def input_error(match: str) -> Iterator[pytest.ExceptionInfo[dm.ModelError]]:
    """Expect a ModelError matching ``match``, which must also be a ValueError."""
    with pytest.raises(dm.ModelError, match=match) as info:
        yield info
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, dm.DiffModelError)


# ---------------------------------------------------------------------------
# The exception hierarchy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [dm.ModelError, dm.SolverError, dm.DerivativeError, dm.NotSolvedError]
)
def test_every_error_is_a_diffmodel_error(cls: type) -> None:
    assert issubclass(cls, dm.DiffModelError)


def test_input_errors_are_value_errors() -> None:
    assert issubclass(dm.ModelError, ValueError)


def test_not_solved_is_a_derivative_error() -> None:
    assert issubclass(dm.NotSolvedError, dm.DerivativeError)


def test_solver_error_carries_status() -> None:
    err = dm.SolverError("boom", "infeasible")
    assert err.status == "infeasible"
    assert str(err) == "boom"


# ---------------------------------------------------------------------------
# Bad parameter values in solve()
# ---------------------------------------------------------------------------

BAD_VALUES = [
    pytest.param("b", np.ones(3), r"parameter 'b': expected shape \(2,\), got \(3,\)",
                 id="b-too-long"),
    pytest.param("A", np.ones((N, M)), r"parameter 'A': expected shape \(2, 4\), got \(4, 2\)",
                 id="A-transposed"),
    pytest.param("q", 1.0, r"parameter 'q': expected shape \(4,\), got \(\)", id="q-scalar"),
    pytest.param("b", np.array([np.nan, 1.0]), r"parameter 'b': .*NaN", id="b-nan"),
    pytest.param("q", np.array([0.0, np.inf, 0.0, 0.0]), r"parameter 'q': .*inf", id="q-inf"),
    pytest.param("A", np.full((M, N), -np.inf), r"parameter 'A': .*inf", id="A-minus-inf"),
    pytest.param("b", "ab", r"parameter 'b': expected a numeric array", id="b-string"),
    pytest.param(
        "b", np.array([1.0 + 1.0j, 2.0]), r"parameter 'b': complex values are not supported",
        id="b-complex",
    ),
    pytest.param(
        "b", [[1.0, 2.0], [3.0]], r"parameter 'b'", id="b-ragged",
    ),
]


@pytest.mark.parametrize(("name", "bad", "match"), BAD_VALUES)
def test_bad_parameter_value(qp: QP, name: str, bad: object, match: str) -> None:
    model = qp.model()
    with input_error(match):
        model.solve(**{**qp.values, name: bad})
    assert_usable(model, qp.values)


@pytest.mark.parametrize(("name", "bad", "match"), BAD_VALUES[:6])
def test_bad_value_keeps_previous_solution_and_parameter_values(
    qp: QP, name: str, bad: object, match: str
) -> None:
    """Validation happens before any state changes: solution, values, derivatives."""
    model = qp.model()
    sol = model.solve(**qp.values)
    direction = {"b": np.array([1.0, -2.0])}
    before = model.derivative(direction)
    grads_before = model.backward({"x": np.ones(N)})
    new_q = qp.values["q"] + 1.0  # valid, but must not be stored either
    with input_error(match):
        model.solve(**{**qp.values, "q": new_q, name: bad})
    assert model.solution is sol
    for pname, value in qp.values.items():
        np.testing.assert_array_equal(model.parameters[pname].value, value)
    after = model.derivative(direction)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    grads_after = model.backward({"x": np.ones(N)})
    for key in grads_before:
        np.testing.assert_array_equal(grads_after[key], grads_before[key])
    assert_usable(model, qp.values)


def test_unknown_parameter_name_in_solve(qp: QP) -> None:
    model = qp.model()
    with input_error(r"solve\(\): unknown parameter name 'c' .*'A', 'b', 'q'"):
        model.solve(c=1.0, **qp.values)
    assert model.solution is None
    assert_usable(model, qp.values)


def test_parameter_without_value(qp: QP) -> None:
    model = qp.model()
    values = {k: v for k, v in qp.values.items() if k != "q"}
    with input_error(r"parameter 'q' has no value"):
        model.solve(**values)
    assert_usable(model, qp.values)


def test_parameter_value_attribute_is_used_when_not_given(qp: QP) -> None:
    """The counterpart of the previous test: a stored value is enough."""
    model = qp.model()
    qp.q.value = qp.values["q"]
    sol = model.solve(A=qp.values["A"], b=qp.values["b"])
    x_ref, _, _ = dense_reference(qp.values["A"], qp.values["b"], qp.values["q"], np.zeros(N))
    np.testing.assert_allclose(sol.primal["x"], x_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("where", ["solve", "model"])
def test_unknown_solver_name(qp: QP, where: str) -> None:
    if where == "model":
        with input_error(r"unknown solver 'gurobi'; choose one of kkt, osqp"):
            qp.model(solver="gurobi")
        model = qp.model()
    else:
        model = qp.model()
        sol = model.solve(**qp.values)
        with input_error(r"unknown solver 'gurobi'; choose one of kkt, osqp"):
            model.solve(solver="gurobi", **qp.values)
        assert model.solution is sol
    assert_usable(model, qp.values)


# ---------------------------------------------------------------------------
# Bad names and gradients in backward / derivative / jacobian
# ---------------------------------------------------------------------------

DERIVATIVE_INPUT_ERRORS = [
    pytest.param(lambda m: m.derivative({"c": 1.0}),
                 r"derivative\(\): unknown parameter name 'c'", id="derivative-unknown"),
    pytest.param(lambda m: m.derivative({"b": np.ones(3)}),
                 r"derivative\(\): direction for parameter 'b': expected shape \(2,\), got \(3,\)",
                 id="derivative-shape"),
    pytest.param(lambda m: m.derivative({"q": np.full(N, np.nan)}),
                 r"direction for parameter 'q'.*NaN", id="derivative-nan"),
    pytest.param(lambda m: m.jacobian("x", "c"),
                 r"jacobian\(\): unknown parameter name 'c'", id="jacobian-unknown-wrt"),
    pytest.param(lambda m: m.jacobian("y", "b"),
                 r"jacobian\(\): 'y' is neither a variable nor a constraint",
                 id="jacobian-unknown-of"),
    pytest.param(lambda m: m.backward({"y": np.ones(N)}),
                 r"backward\(\).*unknown variable name 'y' .*'x'", id="backward-unknown-variable"),
    pytest.param(lambda m: m.backward(dual={"foo": np.ones(M)}),
                 r"backward\(\).*unknown constraint name 'foo' .*'bal'",
                 id="backward-unknown-constraint"),
    pytest.param(lambda m: m.backward(dual={"x": np.ones(N)}),
                 r"backward\(\).*unknown constraint name 'x'", id="backward-variable-as-dual"),
    pytest.param(lambda m: m.backward({"x": np.ones(N + 1)}),
                 r"backward\(\): gradient for variable 'x': expected shape \(4,\), got \(5,\)",
                 id="backward-shape"),
    pytest.param(lambda m: m.backward(dual={"bal": np.ones(3)}),
                 r"gradient for the dual of 'bal': expected shape \(2,\), got \(3,\)",
                 id="backward-dual-shape"),
    pytest.param(lambda m: m.backward({"x": np.array([0.0, np.inf, 0.0, 0.0])}),
                 r"gradient for variable 'x'.*inf", id="backward-inf"),
    pytest.param(lambda m: dm.check_gradients(m, wrt=["c"]),
                 r"check_gradients\(\): unknown parameter name 'c'", id="check-gradients-unknown"),
]


@pytest.mark.parametrize(("call", "match"), DERIVATIVE_INPUT_ERRORS)
def test_bad_derivative_input(qp: QP, call, match: str) -> None:
    model = qp.model()
    sol = model.solve(**qp.values)
    before = model.backward({"x": np.ones(N)})
    with input_error(match):
        call(model)
    # Nothing was lost: same solution, same derivatives.
    assert model.solution is sol
    after = model.backward({"x": np.ones(N)})
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert_usable(model, qp.values)


def test_constraint_name_in_primal_dict(qp: QP) -> None:
    model = qp.model()
    model.solve(**qp.values)
    with input_error(r"'bal' is a constraint, not a variable") as info:
        model.backward({"bal": np.ones(M)})
    # The message should point at the fix: 'bal' is a constraint, use dual=.
    assert "constraint" in str(info.value)
    assert "dual=" in str(info.value)
    assert_usable(model, qp.values)


# ---------------------------------------------------------------------------
# Models diffmodel must refuse at construction
# ---------------------------------------------------------------------------


def _unnamed_variable(p: QP) -> dm.Model:
    z = cp.Variable(3)
    return dm.Model(cp.Minimize(cp.sum_squares(z) + p.q @ p.x), {"bal": p.A @ p.x == p.b})


def _unnamed_parameter(p: QP) -> dm.Model:
    c = cp.Parameter(N)
    return dm.Model(cp.Minimize(cp.sum_squares(p.x) + c @ p.x), {"bal": p.A @ p.x == p.b})


def _duplicate_variables(p: QP) -> dm.Model:
    other = cp.Variable(2, name="x")
    return dm.Model(cp.Minimize(cp.sum_squares(p.x) + cp.sum_squares(other)),
                    {"bal": p.A @ p.x == p.b})


def _duplicate_parameters(p: QP) -> dm.Model:
    other = cp.Parameter(name="b")
    return dm.Model(p.objective(), {"bal": p.A @ p.x == p.b, "first": p.x[0] == other})


def _variable_and_constraint_same_name(p: QP) -> dm.Model:
    return dm.Model(p.objective(), {"x": p.A @ p.x == p.b})


def _norm1(p: QP) -> dm.Model:
    return dm.Model(cp.Minimize(cp.norm1(p.x) + p.q @ p.x), {"bal": p.A @ p.x == p.b})


def _exp(p: QP) -> dm.Model:
    return dm.Model(cp.Minimize(cp.sum(cp.exp(p.x))), {"bal": p.A @ p.x == p.b})


def _norm2_not_squared(p: QP) -> dm.Model:
    return dm.Model(cp.Minimize(cp.norm(p.x, 2) + p.q @ p.x), {"bal": p.A @ p.x == p.b})


def _minimize_concave(p: QP) -> dm.Model:
    return dm.Model(cp.Minimize(-cp.sum_squares(p.x)), {"bal": p.A @ p.x == p.b})


def _maximize_convex(p: QP) -> dm.Model:
    return dm.Model(cp.Maximize(cp.sum_squares(p.x)), {"bal": p.A @ p.x == p.b})


def _strictly_positive_variable(p: QP) -> dm.Model:
    z = cp.Variable(N, name="z", pos=True)
    return dm.Model(cp.Minimize(cp.sum_squares(z) + p.q @ z), {"bal": p.A @ z == p.b})


def _integer_variable(p: QP) -> dm.Model:
    z = cp.Variable(N, name="z", integer=True)
    return dm.Model(cp.Minimize(cp.sum_squares(z) + p.q @ z), {"bal": p.A @ z == p.b})


def _bounds_named_like_a_constraint(p: QP) -> dm.Model:
    z = cp.Variable(N, name="z", nonneg=True)
    return dm.Model(cp.Minimize(cp.sum_squares(z) + p.q @ z), {"z.lower": p.A @ z == p.b})


def _soc(p: QP) -> dm.Model:
    t = cp.Variable(name="t")
    return dm.Model(cp.Minimize(cp.sum_squares(p.x) + t),
                    {"bal": p.A @ p.x == p.b, "cone": cp.SOC(t, p.x)})


def _psd(p: QP) -> dm.Model:
    X = cp.Variable((2, 2), name="X")
    return dm.Model(cp.Minimize(cp.sum_squares(X) + cp.sum_squares(p.x)),
                    {"bal": p.A @ p.x == p.b, "cone": X >> 0})


def _parameter_product(p: QP) -> dm.Model:
    s = cp.Parameter(name="s")
    return dm.Model(p.objective(), {"k": (s * p.A) @ p.x == p.b})


def _variable_product(p: QP) -> dm.Model:
    y = cp.Variable(N, name="y")
    return dm.Model(cp.Minimize(cp.sum_squares(p.x) + cp.sum_squares(y)),
                    {"k": cp.multiply(p.x, y) == 1})


def _problem_and_constraints(p: QP) -> dm.Model:
    prob = cp.Problem(p.objective(), [p.A @ p.x == p.b])
    return dm.Model(prob, {"bal": p.A @ p.x == p.b})


def _problem_and_constraint_list(p: QP) -> dm.Model:
    prob = cp.Problem(p.objective(), [p.A @ p.x == p.b])
    return dm.Model(prob, [p.A @ p.x == p.b])


CONSTRUCTION_ERRORS = [
    pytest.param(_unnamed_variable,
                 r"every variable needs an explicit name: variable of shape \(3,\)",
                 id="unnamed-variable"),
    pytest.param(_unnamed_parameter,
                 r"every parameter needs an explicit name: parameter of shape \(4,\)",
                 id="unnamed-parameter"),
    pytest.param(_duplicate_variables, r"two different variables are named 'x'",
                 id="duplicate-variables"),
    pytest.param(_duplicate_parameters, r"two different parameters are named 'b'",
                 id="duplicate-parameters"),
    pytest.param(_variable_and_constraint_same_name,
                 r"'x' is used by both a variable and a constraint",
                 id="variable-constraint-clash"),
    pytest.param(_norm1, r"objective: norm1\(x\) is not a quadratic term", id="norm1"),
    pytest.param(_exp, r"objective: .*exp\(x\).* is not a quadratic term", id="exp"),
    pytest.param(_norm2_not_squared, r"objective: .*x.* is not a quadratic term", id="norm2"),
    pytest.param(_minimize_concave, r"objective .* is not convex", id="minimize-concave"),
    pytest.param(_maximize_convex, r"objective .* is not concave", id="maximize-convex"),
    pytest.param(_strictly_positive_variable,
                 r"variable 'z' is declared pos=True; diffmodel supports the attributes "
                 r"nonneg, nonpos and bounds", id="pos-variable"),
    pytest.param(_integer_variable, r"variable 'z' is declared integer=True",
                 id="integer-variable"),
    pytest.param(_bounds_named_like_a_constraint,
                 r"a constraint is named 'z.lower', which diffmodel uses for the bounds",
                 id="bounds-name-clash"),
    pytest.param(_soc, r"constraint 'cone' .* SOC constraint; only equality", id="soc"),
    pytest.param(_psd, r"constraint 'cone' .* PSD constraint; only equality", id="psd"),
    pytest.param(_parameter_product,
                 r"constraint 'k': the term s\*A multiplies parameters 's' and 'A'.*DPP.*pass the product as one parameter",
                 id="parameter-product"),
    pytest.param(_variable_product,
                 r"constraint 'k': .* multiplies two variable expressions", id="variable-product"),
    pytest.param(_problem_and_constraints,
                 r"either a cp.Problem or an objective with constraints, not both",
                 id="problem-and-dict"),
    pytest.param(_problem_and_constraint_list,
                 r"either a cp.Problem or an objective with constraints, not both",
                 id="problem-and-list"),
]


@pytest.mark.parametrize(("build", "match"), CONSTRUCTION_ERRORS)
def test_construction_error(qp: QP, build, match: str) -> None:
    with input_error(match):
        build(qp)
    # The same CVXPY objects still make a valid, working model.
    assert_usable(qp.model(), qp.values)


def test_quad_form_with_plain_parameter_is_refused_by_cvxpy(qp: QP) -> None:
    """quad_form(x, Q) with Q neither PSD nor symmetric never reaches diffmodel:
    CVXPY itself raises while building the expression."""
    Q = cp.Parameter((N, N), name="Q")
    with pytest.raises(ValueError, match="symmetric"):
        cp.quad_form(qp.x, Q)
    assert_usable(qp.model(), qp.values)


# ---------------------------------------------------------------------------
# Problems without a (unique) solution: SolverError
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("solver", ["kkt", "osqp"])
def test_infeasible_equalities(solver: str) -> None:
    """x[0] == 1 and x[0] == 2: SolverError with status 'infeasible'."""
    x = cp.Variable(3, name="x")
    c1 = cp.Parameter(name="c1")
    c2 = cp.Parameter(name="c2")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"one": x[0] == c1, "two": x[0] == c2})
    with pytest.raises(dm.SolverError, match=r"infeasible") as info:
        model.solve(c1=1.0, c2=2.0, solver=solver)
    assert info.value.status == "infeasible"
    assert model.solution is None
    with pytest.raises(dm.NotSolvedError, match=r"call model\.solve\(\) first"):
        model.backward({"x": np.ones(3)})
    # Consistent values solve (the duplicated rows make derivatives singular,
    # see test_duplicated_constraint_rows).
    sol = model.solve(c1=1.0, c2=1.0, solver=solver)
    np.testing.assert_allclose(sol.primal["x"], [1.0, 0.0, 0.0], atol=1e-8)


@pytest.mark.parametrize("solver", ["kkt", "osqp"])
def test_infeasible_then_usable(qp: QP, solver: str) -> None:
    """A parameter value that makes A x = b inconsistent, then a good one."""
    model = qp.model()
    A_bad = np.vstack([qp.values["A"][0], qp.values["A"][0]])
    b_bad = np.array([1.0, 2.0])
    with pytest.raises(dm.SolverError, match=r"infeasible") as info:
        model.solve(solver=solver, **{**qp.values, "A": A_bad, "b": b_bad})
    assert info.value.status == "infeasible"
    assert_usable(model, qp.values, solver=solver)


def _unbounded_model() -> tuple[dm.Model, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """minimize x0² + x1² + qᵀx s.t. a x = b: unbounded in x2 when a = e0, q2 ≠ 0."""
    x = cp.Variable(3, name="x")
    a = cp.Parameter((1, 3), name="a")
    b = cp.Parameter(1, name="b")
    q = cp.Parameter(3, name="q")
    model = dm.Model(cp.Minimize(cp.sum_squares(x[:2]) + q @ x), {"k": a @ x == b})
    bad = {"a": np.array([[1.0, 0.0, 0.0]]), "b": np.array([1.0]), "q": np.ones(3)}
    good = {"a": np.array([[0.0, 0.0, 1.0]]), "b": np.array([1.0]), "q": np.ones(3)}
    return model, bad, good


@pytest.mark.parametrize(
    "solver",
    [
        "kkt",
        "osqp",
    ],
)
def test_unbounded(solver: str) -> None:
    model, bad, good = _unbounded_model()
    with pytest.raises(dm.SolverError, match=r"unbounded") as info:
        model.solve(solver=solver, **bad)
    assert info.value.status == "unbounded"
    sol = model.solve(solver=solver, **good)
    # x2 = 1, x0 = x1 = -1/2 (from 2 x_i + 1 = 0), ν = -q2 = -1.
    np.testing.assert_allclose(sol.primal["x"], [-0.5, -0.5, 1.0], atol=1e-8)
    np.testing.assert_allclose(sol.dual["k"], [-1.0], atol=1e-8)
    grads = model.backward({"x": np.array([0.0, 0.0, 1.0])})
    np.testing.assert_allclose(grads["b"], [1.0], atol=1e-8)


def test_osqp_unbounded_status() -> None:
    model, bad, good = _unbounded_model()
    with pytest.raises(dm.SolverError) as info:
        model.solve(solver="osqp", **bad)
    assert info.value.status == "unbounded"
    sol = model.solve(solver="osqp", **good)
    np.testing.assert_allclose(sol.primal["x"], [-0.5, -0.5, 1.0], atol=1e-8)


@pytest.mark.parametrize("solver", ["kkt", "osqp"])
def test_unbounded_linear_objective(solver: str) -> None:
    """minimize qᵀx with one equality on x0: no quadratic term at all."""
    x = cp.Variable(3, name="x")
    q = cp.Parameter(3, name="q")
    model = dm.Model(cp.Minimize(q @ x), {"k": x[0] == 1})
    with pytest.raises(dm.SolverError) as info:
        model.solve(q=np.ones(3), solver=solver)
    assert info.value.status == "unbounded"


def _symmetric_quad_form_model() -> dm.Model:
    x = cp.Variable(N, name="x")
    Q = cp.Parameter((N, N), name="Q", symmetric=True)
    b = cp.Parameter(name="b")
    return dm.Model(cp.Minimize(cp.quad_form(x, Q)), {"total": cp.sum(x) == b})


# Indefinite, with negative curvature on the feasible set of both test models
# (Σx = b: direction (1, 0, -2, 1); x[:2] = b: direction e2).
INDEFINITE = np.diag([1.0, 1.0, -1.0, 1.0])
PSD_VALUE = np.diag([1.0, 2.0, 3.0, 4.0])


def _check_psd_solution(model: dm.Model, solver: str) -> None:
    """minimize xᵀDx s.t. Σx = b, b = 1: x = b D⁻¹1 / (1ᵀD⁻¹1), so for ℓ = x0
    dℓ/db = x0 / b."""
    sol = model.solve(Q=PSD_VALUE, b=1.0, solver=solver)
    inv = 1.0 / np.diag(PSD_VALUE)
    x_ref = inv / inv.sum()
    np.testing.assert_allclose(sol.primal["x"], x_ref, rtol=1e-8)
    grads = model.backward({"x": np.eye(N)[0]})
    np.testing.assert_allclose(grads["b"], x_ref[0], rtol=1e-8)


@pytest.mark.parametrize(
    "solver",
    [
        "kkt",
        "osqp",
    ],
)
def test_nonconvex_parameter_value(solver: str, capfd: pytest.CaptureFixture[str]) -> None:
    """quad_form(x, Q), Q symmetric=True, given an indefinite value."""
    model = _symmetric_quad_form_model()
    with pytest.raises(dm.SolverError, match=r"not convex") as info:
        model.solve(Q=INDEFINITE, b=1.0, solver=solver)
    assert info.value.status == "nonconvex"
    assert capfd.readouterr() == ("", "")  # an error, not printing
    with pytest.raises(dm.NotSolvedError, match=r"last solve failed"):
        model.derivative({"b": 1.0})
    _check_psd_solution(model, solver)


@pytest.mark.parametrize(
    "solver",
    [
        "kkt",
        "osqp",
    ],
)
def test_nonconvex_value_after_a_good_solve(solver: str) -> None:
    model = _symmetric_quad_form_model()
    _check_psd_solution(model, solver)
    with pytest.raises(dm.SolverError, match=r"not convex") as info:
        model.solve(Q=INDEFINITE, b=1.0, solver=solver)
    assert info.value.status == "nonconvex"
    # The earlier solution was discarded with the failed solve.
    assert model.solution is None
    with pytest.raises(dm.NotSolvedError, match=r"call model\.solve\(\) first.*last solve failed"):
        model.backward({"x": np.ones(N)})
    _check_psd_solution(model, solver)


def test_psd_declared_parameter_rejects_indefinite_value() -> None:
    x = cp.Variable(N, name="x")
    Q = cp.Parameter((N, N), name="Q", PSD=True)
    b = cp.Parameter(name="b")
    model = dm.Model(cp.Minimize(cp.quad_form(x, Q)), {"total": cp.sum(x) == b})
    with input_error(r"parameter 'Q': .*positive semidefinite"):
        model.solve(Q=INDEFINITE, b=1.0)
    _check_psd_solution(model, "kkt")


# ---------------------------------------------------------------------------
# Singular KKT systems: the solve works, derivatives do not exist
# ---------------------------------------------------------------------------


def _clarabel_solution(objective, constraints, values):
    prob = cp.Problem(objective, constraints)
    for par in prob.parameters():
        par.value = values[par.name()]
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL
    return {v.name(): np.array(v.value) for v in prob.variables()}


@pytest.mark.parametrize("solver", SOLVERS)
def test_duplicated_constraint_rows(qp: QP, solver: str) -> None:
    """A with two equal rows and consistent b: x exists and is unique, ν is
    not, so K is singular and every derivative raises DerivativeError."""
    model = qp.model()
    A_dup = np.vstack([qp.values["A"][0], qp.values["A"][0]])
    b_dup = np.array([0.7, 0.7])
    values = {**qp.values, "A": A_dup, "b": b_dup}
    sol = model.solve(solver=solver, **values)
    ref = _clarabel_solution(qp.objective(), [qp.A @ qp.x == qp.b], values)
    np.testing.assert_allclose(sol.primal["x"], ref["x"], rtol=1e-6, atol=1e-7)
    calls = {
        "backward": lambda: model.backward({"x": np.ones(N)}),
        "derivative": lambda: model.derivative({"b": np.ones(M)}),
        "jacobian": lambda: model.jacobian("x", "b"),
        "jacobian-dual": lambda: model.jacobian("bal", "A"),
    }
    for name, call in calls.items():
        with pytest.raises(dm.DerivativeError, match=r"singular") as info:
            call()
        assert not isinstance(info.value, dm.NotSolvedError), name
    # The solution itself is still there, and a nonsingular A works again.
    assert model.solution is sol
    assert_usable(model, qp.values, solver=solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_duplicated_constant_constraints(solver: str) -> None:
    """The literal case x[0] == c, x[0] == c: always singular, never broken."""
    x = cp.Variable(3, name="x")
    c = cp.Parameter(name="c")
    objective = cp.Minimize(cp.sum_squares(x - np.array([3.0, 2.0, 1.0])))
    model = dm.Model(objective, {"one": x[0] == c, "two": x[0] == c})
    for value in (1.0, -2.0):
        sol = model.solve(c=value, solver=solver)
        ref = _clarabel_solution(objective, [x[0] == c, x[0] == c], {"c": value})
        np.testing.assert_allclose(sol.primal["x"], ref["x"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(sol.primal["x"], [value, 2.0, 1.0], atol=1e-8)
        with pytest.raises(dm.DerivativeError, match=r"singular"):
            model.backward({"x": np.ones(3)})
        with pytest.raises(dm.DerivativeError, match=r"singular"):
            model.derivative({"c": 1.0})
        with pytest.raises(dm.DerivativeError, match=r"singular"):
            model.jacobian("x", "c")


# ---------------------------------------------------------------------------
# Derivatives without a solution
# ---------------------------------------------------------------------------

NOT_SOLVED_CALLS = [
    pytest.param(lambda m: m.derivative({"b": np.ones(M)}), "derivative", id="derivative"),
    pytest.param(lambda m: m.backward({"x": np.ones(N)}), "backward", id="backward"),
    pytest.param(lambda m: m.jacobian("x", "b"), "jacobian", id="jacobian"),
    pytest.param(lambda m: dm.check_gradients(m), "check_gradients", id="check_gradients"),
]


@pytest.mark.parametrize(("call", "name"), NOT_SOLVED_CALLS)
def test_derivative_before_any_solve(qp: QP, call, name: str) -> None:
    model = qp.model()
    match = rf"{name}\(\) needs a solution: call model\.solve\(\) first"
    with pytest.raises(dm.NotSolvedError, match=match):
        call(model)
    assert_usable(model, qp.values)


@pytest.mark.parametrize(("call", "name"), NOT_SOLVED_CALLS)
def test_derivative_after_failed_solve(call, name: str) -> None:
    """A good solve, then a failed one: the old solution must not be differentiated."""
    x = cp.Variable(N, name="x")
    Q = cp.Parameter((N, N), name="Q", symmetric=True)
    b = cp.Parameter(M, name="b")
    model = dm.Model(cp.Minimize(cp.quad_form(x, Q)), {"bal": x[:M] == b})
    good = {"Q": PSD_VALUE, "b": np.array([1.0, 2.0])}
    model.solve(**good)
    with pytest.raises(dm.SolverError):
        model.solve(Q=INDEFINITE, b=good["b"])
    match = rf"{name}\(\).*call model\.solve\(\) first.*last solve failed.*not convex"
    with pytest.raises(dm.NotSolvedError, match=match):
        call(model)
    sol = model.solve(**good)
    np.testing.assert_allclose(sol.primal["x"], [1.0, 2.0, 0.0, 0.0], atol=1e-12)
    # x[:2] = b, so dℓ/db = g[:2] for ℓ = gᵀx.
    g = np.array([1.0, -1.0, 3.0, 4.0])
    np.testing.assert_allclose(model.backward({"x": g})["b"], g[:M], atol=1e-10)


# ---------------------------------------------------------------------------
# The caller's data, repeat solves
# ---------------------------------------------------------------------------


def _read_only(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in values.items():
        arr = np.array(value, dtype=float)
        arr.setflags(write=False)
        out[key] = arr
    return out


@pytest.mark.parametrize("solver", SOLVERS)
def test_caller_arrays_are_not_mutated(qp: QP, solver: str) -> None:
    """Read-only inputs are accepted (no in-place writes) and keep their values."""
    model = qp.model()
    values = _read_only(qp.values)
    copies = {k: v.copy() for k, v in values.items()}
    g = _read_only({"x": np.linspace(1.0, 2.0, N), "bal": np.array([0.5, -0.5])})
    g_copy = {k: v.copy() for k, v in g.items()}
    direction = _read_only({"A": np.ones((M, N)), "b": np.array([1.0, 2.0]), "q": np.ones(N)})
    d_copy = {k: v.copy() for k, v in direction.items()}

    model.solve(solver=solver, **values)
    model.backward({"x": g["x"]}, dual={"bal": g["bal"]})
    model.derivative(direction)
    model.jacobian("x", "A")

    for src, ref in ((values, copies), (g, g_copy), (direction, d_copy)):
        for key in ref:
            np.testing.assert_array_equal(src[key], ref[key], err_msg=key)
    assert_usable(model, qp.values, solver=solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_repeat_solves_are_identical(qp: QP, solver: str) -> None:
    model = qp.model()
    first = model.solve(solver=solver, **qp.values)
    g1 = model.backward({"x": np.ones(N)})
    second = model.solve(solver=solver, **qp.values)
    g2 = model.backward({"x": np.ones(N)})
    # "kkt" reuses the same factorization: bit-for-bit identical. OSQP warm
    # starts from its previous iterate, so its repeat differs in the last ulp
    # (measured 2.2e-16 absolute on this problem): identical to 1e-13.
    rtol = 0.0 if solver == "kkt" else 1e-13
    np.testing.assert_allclose(second.primal["x"], first.primal["x"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(second.dual["bal"], first.dual["bal"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(second.value, first.value, rtol=rtol, atol=rtol)
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("solver", SOLVERS)
def test_later_solves_do_not_change_earlier_solutions(qp: QP, solver: str) -> None:
    model = qp.model()
    first = model.solve(solver=solver, **qp.values)
    x1, nu1 = first.primal["x"].copy(), first.dual["bal"].copy()
    grads = model.backward({"x": np.ones(N)})
    grads_copy = {k: v.copy() for k, v in grads.items()}
    model.solve(solver=solver, **{**qp.values, "b": qp.values["b"] + 1.0})
    model.backward({"x": -np.ones(N)})
    np.testing.assert_array_equal(first.primal["x"], x1)
    np.testing.assert_array_equal(first.dual["bal"], nu1)
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads_copy[key])


def test_osqp_backend_emits_no_warning(qp: QP) -> None:
    """Library code must not leak warnings to users (osqp-python 1.x warns on
    every ``OSQP.solve()`` that does not pass ``raise_error`` explicitly)."""
    model = qp.model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.solve(solver="osqp", **qp.values)
    assert_usable(model, qp.values, solver="osqp")


def test_quad_form_with_parametric_matrix_is_checked_at_solve_time(qp: QP) -> None:
    """quad_form(x, diag(d)), d a plain parameter: not DCP for CVXPY, but
    accepted; convexity is checked from the KKT inertia at every solve."""
    d = cp.Parameter(N, name="d")
    model = dm.Model(cp.Minimize(cp.quad_form(qp.x, cp.diag(d))), {"bal": qp.A @ qp.x == qp.b})
    values = {"A": qp.values["A"], "b": qp.values["b"]}
    with pytest.raises(dm.SolverError, match=r"not convex") as info:
        model.solve(d=-np.ones(N), **values)
    assert info.value.status == "nonconvex"
    sol = model.solve(d=np.arange(1.0, N + 1), **values)
    # Dense reference: minimize xᵀ diag(d) x s.t. A x = b.
    A, b = values["A"], values["b"]
    K = np.block([[2 * np.diag(np.arange(1.0, N + 1)), A.T], [A, np.zeros((M, M))]])
    z = np.linalg.solve(K, np.concatenate([np.zeros(N), b]))
    np.testing.assert_allclose(sol.primal["x"], z[:N], rtol=1e-10, atol=1e-12)
