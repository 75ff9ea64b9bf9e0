"""Derivatives of diffmodel models, checked three ways (see STYLE.md, "Tests").

1. Against central finite differences of re-solves, per entry (Jacobians)
   and along random directions (forward and reverse mode), written here and
   not delegated to ``dm.check_gradients``.
2. Against an independent dense NumPy solve of the KKT system, with the
   derivative formulas of the seed written out for each kind of parameter,
   and against CVXPY + Clarabel for the solution itself.
3. Forward against reverse: ⟨J v, g⟩ = ⟨v, Jᵀ g⟩, and ``jacobian`` agrees
   with both.

Problems come from the seeded generators in ``problems.py``; every case is
a well-posed equality QP (positive definite Hessian, full row rank
constraints), so every derivative exists.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffmodel as dm
from problems import GENERATORS, QP, full_row_rank, make, spd

# ----------------------------------------------------------------- settings

#: Relative step of the central differences (times max(1, max |θ|)). OSQP's
#: solutions carry errors near 1e-11, so its differences take a larger step
#: (the O(h²) truncation error stays below 1e-7).
FD_STEP = {"kkt": 1e-6, "osqp": 1e-4}
#: Finite differences against exact derivatives (KKT backend).
FD_RTOL = 1e-6
#: Finite differences carry rounding noise near 1e-16 |z| / h ≈ 1e-10 |z|, so a
#: derivative block below FD_FLOOR in size is compared in absolute terms
#: (error ≤ FD_RTOL · FD_FLOOR ≈ 1e-9) rather than relative ones.
FD_FLOOR = 1e-3
#: Exact derivatives against the dense NumPy reference.
DENSE_RTOL = 1e-8
#: Forward mode against reverse mode and Jacobians (same factorization).
ADJOINT_RTOL = 1e-10
#: OSQP solutions (ADMM + polishing) against the direct KKT backend.
OSQP_RTOL = 1e-5
#: Solutions against CVXPY + Clarabel.
CLARABEL_RTOL = 1e-6

SHAPES = [(1, 0), (2, 1), (4, 1), (5, 2), (6, 5), (8, 3)]
CASES = [
    pytest.param(gen, n, m, seed, id=f"{gen}-n{n}-m{m}-s{seed}")
    for gen in GENERATORS
    for seed, (n, m) in enumerate(SHAPES)
]
#: A smaller matrix for the expensive per-entry finite differences.
SMALL_CASES = [
    pytest.param(gen, n, m, seed, id=f"{gen}-n{n}-m{m}-s{seed}")
    for gen in GENERATORS
    for seed, (n, m) in enumerate([(2, 1), (5, 2)])
]
SOLVERS = [pytest.param("kkt", FD_RTOL, id="kkt"), pytest.param("osqp", OSQP_RTOL, id="osqp")]
HYPOTHESIS = settings(deadline=None, max_examples=25, derandomize=True, database=None)


# ----------------------------------------------------------------- helpers


def shapes(*pairs: tuple[int, int]) -> list:
    """pytest params (n, m) with readable ids."""
    return [pytest.param(n, m, id=f"n{n}-m{m}") for n, m in pairs]


def rel_err(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-12) -> float:
    """Norm-wise relative error ‖a − e‖∞ / max(‖e‖∞, floor)."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(expected))), floor)
    return float(np.max(np.abs(actual - expected))) / scale


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, what: str,
                 floor: float = 1e-12) -> None:
    err = rel_err(actual, expected, floor)
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


def is_symmetric(param: cp.Parameter) -> bool:
    return bool(param.attributes.get("PSD") or param.attributes.get("symmetric"))


def direction(rng: np.random.Generator, param: cp.Parameter) -> np.ndarray:
    """A random unit direction that keeps the parameter's declared structure."""
    v = rng.standard_normal(param.shape)
    if is_symmetric(param):
        v = 0.5 * (v + v.T)
    return v / max(float(np.linalg.norm(v)), 1e-300)


def step(value: np.ndarray, solver: str) -> float:
    return FD_STEP[solver] * max(1.0, float(np.max(np.abs(value), initial=0.0)))


def output_names(model: dm.Model) -> list[str]:
    """Every differentiable output: variables, then constraint duals."""
    return [*model.variables, *model.constraints]


def stack(sol: dm.Solution, names: list[str]) -> np.ndarray:
    """All primal and dual values of a solution, column-major, in ``names`` order."""
    parts = [sol.primal[k] if k in sol.primal else sol.dual[k] for k in names]
    return np.concatenate([np.ravel(p, order="F") for p in parts] + [np.zeros(0)])


def stack_dict(d: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.concatenate([np.ravel(d[k], order="F") for k in names] + [np.zeros(0)])


def solved(qp: QP, solver: str = "kkt") -> tuple[dm.Model, dm.Solution]:
    model = qp.model()
    return model, model.solve(solver=solver, **qp.values)


def fd_along(model: dm.Model, values: dict[str, np.ndarray], dirs: dict[str, np.ndarray],
             solver: str) -> np.ndarray:
    """Central difference of all outputs along the joint direction ``dirs``.

    The step is FD_STEP times max(1, max |θ|), the smallest such step over
    the parameters moved. The model is re-solved at the base point
    afterwards, so its state is unchanged.
    """
    names = output_names(model)
    h = min(step(values[k], solver) for k in dirs)
    plus = {**values, **{k: values[k] + h * v for k, v in dirs.items()}}
    minus = {**values, **{k: values[k] - h * v for k, v in dirs.items()}}
    zp = stack(model.solve(solver=solver, **plus), names)
    zm = stack(model.solve(solver=solver, **minus), names)
    model.solve(solver=solver, **values)
    return (zp - zm) / (2 * h)


def entry_directions(param: cp.Parameter) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Unit perturbations of single entries, or of symmetric pairs (i, j), (j, i)."""
    out = []
    if is_symmetric(param):
        k = param.shape[0]
        for i, j in itertools.combinations_with_replacement(range(k), 2):
            E = np.zeros((k, k))
            E[i, j] = E[j, i] = 1.0
            out.append(((i, j), E))
        return out
    for idx in np.ndindex(*param.shape):
        E = np.zeros(param.shape)
        E[idx] = 1.0
        out.append((idx, E))
    return out


def flat_index(shape: tuple[int, ...], idx: tuple[int, ...]) -> int:
    return int(np.ravel_multi_index(idx, shape, order="F")) if shape else 0


# ============================================================ 1. finite differences


@pytest.mark.parametrize("gen, n, m, seed", SMALL_CASES)
def test_jacobian_matches_entrywise_finite_differences(gen: str, n: int, m: int,
                                                       seed: int) -> None:
    """Every column of every Jacobian against a central difference of one
    parameter entry (or one symmetric pair of entries)."""
    qp = make(gen, n, m, seed)
    model, _ = solved(qp)
    names = output_names(model)
    sizes = [int(np.size(model.solution.primal.get(k, model.solution.dual.get(k))))
             for k in names]
    bounds = np.cumsum([0, *sizes])
    for pname, param in model.parameters.items():
        J = np.vstack([model.jacobian(of, pname) for of in names] + [np.zeros((0, param.size))])
        for idx, E in entry_directions(param):
            fd = fd_along(model, qp.values, {pname: E}, "kkt")
            col = J[:, flat_index(param.shape, idx)]
            if is_symmetric(param) and idx[0] != idx[1]:
                col = col + J[:, flat_index(param.shape, idx[::-1])]
            for k, of in enumerate(names):
                lo, hi = bounds[k], bounds[k + 1]
                assert_close(col[lo:hi], fd[lo:hi], FD_RTOL,
                             f"d{of}/d{pname}{list(idx)}", floor=FD_FLOOR)


@pytest.mark.parametrize("solver, rtol", SOLVERS)
@pytest.mark.parametrize("gen, n, m, seed", CASES)
def test_forward_matches_finite_differences(gen: str, n: int, m: int, seed: int,
                                            solver: str, rtol: float) -> None:
    """derivative() along a random direction of each parameter, and of all at once."""
    qp = make(gen, n, m, seed)
    model, _ = solved(qp, solver)
    names = output_names(model)
    rng = np.random.default_rng(1000 + seed)
    dirs = {k: direction(rng, p) for k, p in model.parameters.items()}
    for pname, v in [*dirs.items(), ("<all>", None)]:
        d = dirs if v is None else {pname: v}
        dz = stack_dict(model.derivative(d), names)
        fd = fd_along(model, qp.values, d, solver)
        assert_close(dz, fd, rtol, f"derivative() along {pname}", floor=FD_FLOOR)


@pytest.mark.parametrize("solver, rtol", SOLVERS)
@pytest.mark.parametrize("gen, n, m, seed", CASES)
def test_backward_matches_finite_differences(gen: str, n: int, m: int, seed: int,
                                             solver: str, rtol: float) -> None:
    """backward() of a random linear loss of all primal and dual outputs: ⟨∇θℓ, v⟩
    against the central difference of ℓ along v, for each parameter."""
    qp = make(gen, n, m, seed)
    model, sol = solved(qp, solver)
    names = output_names(model)
    rng = np.random.default_rng(2000 + seed)
    g_primal = {k: rng.standard_normal(np.shape(v)) for k, v in sol.primal.items()}
    g_dual = {k: rng.standard_normal(np.shape(v)) for k, v in sol.dual.items()}
    g = stack_dict({**g_primal, **g_dual}, names)
    grads = model.backward(g_primal, dual=g_dual)
    assert set(grads) == set(model.parameters)
    for pname, param in model.parameters.items():
        assert grads[pname].shape == param.shape
        for _ in range(2):
            v = direction(rng, param)
            fd = float(g @ fd_along(model, qp.values, {pname: v}, solver))
            reverse = float(np.sum(grads[pname] * v))
            scale = max(abs(fd), FD_FLOOR * np.linalg.norm(g))
            assert abs(reverse - fd) <= rtol * scale, (
                f"dℓ/d{pname}: backward {reverse:.10g} vs finite differences {fd:.10g}")


# ============================================================ 2. dense KKT reference


def dense_kkt(P: np.ndarray, q: np.ndarray, A: np.ndarray, b: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K, x, ν for minimize ½xᵀPx + qᵀx s.t. Ax = b, with K z = (−q, b)."""
    n, m = P.shape[0], A.shape[0]
    K = np.block([[P, A.T], [A, np.zeros((m, m))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    return K, z[:n], z[n:]


def canonical_partials(Q: np.ndarray, A: np.ndarray, x: np.ndarray, nu: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """∂F/∂θ for F(z, θ) = K z − (−q, b) of the canonical family, where the
    objective is ½ quad_form(x, Q) + qᵀx, so P = ½(Q + Qᵀ).

    Columns follow vec(θ) in column-major order:

    - q:  ∂F/∂q = [I; 0]
    - b:  ∂F/∂b = [0; −I]
    - A:  ∂(Aᵀν)/∂vec A = I ⊗ νᵀ,  ∂(Ax)/∂vec A = xᵀ ⊗ I
    - Q:  ∂(Px)/∂Q_kl = ½(e_k x_l + e_l x_k), i.e. ½[(xᵀ ⊗ I) + (I ⊗ xᵀ)]
          (entries of Q treated as independent, Q not symmetrized).
    """
    n, m = Q.shape[0], A.shape[0]
    I_n, I_m = np.eye(n), np.eye(m)
    return {
        "q": np.vstack([I_n, np.zeros((m, n))]),
        "b": np.vstack([np.zeros((n, m)), -I_m]),
        "A": np.vstack([np.kron(I_n, nu[None, :]), np.kron(x[None, :], I_m)]),
        "Q": np.vstack([0.5 * (np.kron(x[None, :], I_n) + np.kron(I_n, x[None, :])),
                        np.zeros((m, n * n))]),
    }


def canonical_dense_jacobians(values: dict[str, np.ndarray]
                              ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """x, ν and dz/dθ = −K⁻¹ ∂F/∂θ for every parameter of the canonical family."""
    Q, q = values["Q"], values["q"]
    n = q.shape[0]
    A = values.get("A", np.zeros((0, n)))
    b = values.get("b", np.zeros(0))
    K, x, nu = dense_kkt(0.5 * (Q + Q.T), q, A, b)
    partials = canonical_partials(Q, A, x, nu)
    return x, nu, {k: -np.linalg.solve(K, D) for k, D in partials.items() if k in values}


def test_dense_Q_formula_matches_finite_differences() -> None:
    """The ∂F/∂Q used as reference is itself right: perturb single, non-symmetric
    entries of Q in the dense solve (xᵀQx only sees ½(Q + Qᵀ))."""
    rng = np.random.default_rng(7)
    n, m = 4, 2
    Q, q = spd(rng, n), rng.standard_normal(n)
    A, b = full_row_rank(rng, m, n), rng.standard_normal(m)
    _, _, jac = canonical_dense_jacobians({"Q": Q, "q": q, "A": A, "b": b})
    for k, l in [(0, 0), (1, 3), (3, 1), (2, 0)]:
        E = np.zeros((n, n))
        E[k, l] = 1e-6
        zs = [np.concatenate(dense_kkt(0.5 * (Qe + Qe.T), q, A, b)[1:])
              for Qe in (Q + E, Q - E)]
        fd = (zs[0] - zs[1]) / 2e-6
        assert_close(jac["Q"][:, k + n * l], fd, 1e-7, f"dense dz/dQ[{k},{l}]")
    for name, value, D in [("A", A, jac["A"]), ("b", b, jac["b"]), ("q", q, jac["q"])]:
        for j in range(value.size):
            E = np.zeros(value.size)
            E[j] = 1e-6
            E = E.reshape(value.shape, order="F")
            args = {"q": q, "A": A, "b": b}
            zp = dense_kkt(Q, **{**args, name: value + E})
            zm = dense_kkt(Q, **{**args, name: value - E})
            fd = (np.concatenate(zp[1:]) - np.concatenate(zm[1:])) / 2e-6
            assert_close(D[:, j], fd, 1e-7, f"dense dz/d{name}[{j}]")


def check_canonical_against_dense(qp: QP, solver: str = "kkt", rtol: float = DENSE_RTOL) -> None:
    model, sol = solved(qp, solver)
    n = qp.values["q"].shape[0]
    x, nu, jac = canonical_dense_jacobians(qp.values)
    assert_close(sol.primal["x"], x, rtol, "x")
    if "balance" in model.constraints:
        assert_close(sol.dual["balance"], nu, rtol, "ν")
    for pname, D in jac.items():
        assert_close(model.jacobian("x", pname), D[:n], rtol, f"dx/d{pname}", floor=1e-8)
        if "balance" in model.constraints:
            assert_close(model.jacobian("balance", pname), D[n:], rtol, f"dν/d{pname}",
                         floor=1e-8)


@pytest.mark.parametrize("symmetric", [False, True], ids=["PSD", "symmetric"])
@pytest.mark.parametrize("n, m", shapes((1, 0), (3, 0), (3, 1), (5, 2), (7, 6), (10, 4)))
def test_canonical_matches_dense_kkt(n: int, m: int, symmetric: bool) -> None:
    """Solution and every Jacobian (q, b, A, Q) against the dense seed formulas."""
    qp = make("canonical_sym" if symmetric else "canonical", n, m, seed=10 * n + m)
    check_canonical_against_dense(qp)


@pytest.mark.parametrize("n, m", shapes((2, 1), (5, 2), (6, 5)))
def test_canonical_osqp_matches_dense_kkt(n: int, m: int) -> None:
    check_canonical_against_dense(make("canonical", n, m, seed=n + m), "osqp", OSQP_RTOL)


@given(n=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**16))
@HYPOTHESIS
def test_canonical_matches_dense_kkt_random_shapes(n: int, data: st.DataObject,
                                                   seed: int) -> None:
    m = data.draw(st.integers(0, n - 1), label="m")
    qp = make("canonical", n, m, seed)
    check_canonical_against_dense(qp)


@pytest.mark.parametrize("n, m", shapes((1, 0), (4, 2), (6, 5)))
def test_maximize_matches_dense_kkt(n: int, m: int) -> None:
    """Maximize(−xᵀQx + qᵀx + c) is minimize xᵀQx − qᵀx: P = 2Q, q ↦ −q, and
    CVXPY's dual ν solves [[2Q, Aᵀ], [A, 0]] (x, ν) = (q, b)."""
    qp = make("maximize", n, m, seed=n)
    model, sol = solved(qp)
    Q, q = qp.values["Q"], qp.values["q"]
    A = qp.values.get("A", np.zeros((0, n)))
    b = qp.values.get("b", np.zeros(0))
    K, x, nu = dense_kkt(2 * Q, -q, A, b)
    assert_close(sol.primal["x"], x, DENSE_RTOL, "x")
    assert sol.value == pytest.approx(-x @ Q @ x + q @ x + 1.5, rel=1e-12)
    # dz/dq = K⁻¹[I; 0] (q enters −q in the canonical form).
    dz_dq = np.linalg.solve(K, np.vstack([np.eye(n), np.zeros((m, n))]))
    assert_close(model.jacobian("x", "q"), dz_dq[:n], DENSE_RTOL, "dx/dq")
    # dz/dQ: xᵀQx gives P = Q + Qᵀ, so ∂(Px)/∂Q_kl = e_k x_l + e_l x_k.
    DQ = np.kron(x[None, :], np.eye(n)) + np.kron(np.eye(n), x[None, :])
    dz_dQ = -np.linalg.solve(K, np.vstack([DQ, np.zeros((m, n * n))]))
    assert_close(model.jacobian("x", "Q"), dz_dQ[:n], DENSE_RTOL, "dx/dQ", floor=1e-8)
    if m:
        assert_close(sol.dual["balance"], nu, DENSE_RTOL, "ν")
        dz_db = np.linalg.solve(K, np.vstack([np.zeros((n, m)), np.eye(m)]))
        assert_close(model.jacobian("x", "b"), dz_db[:n], DENSE_RTOL, "dx/db")
        assert_close(model.jacobian("balance", "b"), dz_db[n:], DENSE_RTOL, "dν/db")
        dz_dA = -np.linalg.solve(K, np.vstack([np.kron(np.eye(n), nu[None, :]),
                                               np.kron(x[None, :], np.eye(m))]))
        assert_close(model.jacobian("balance", "A"), dz_dA[n:], DENSE_RTOL, "dν/dA",
                     floor=1e-8)


@pytest.mark.parametrize("n, m", shapes((1, 0), (3, 2), (6, 4)))
def test_lifted_least_squares_matches_dense_kkt(n: int, m: int) -> None:
    """sum_squares(F x − g) + ½‖x‖² s.t. E x = e (F, g lifted by diffmodel) against
    the dense problem in x alone: P = 2FᵀF + I, q = −2Fᵀg, A = E, b = e.

    ∂(Px + q)/∂F_kl = 2[e_l (Fx − g)_k + Fᵀ e_k x_l],  ∂(Px + q)/∂g = −2Fᵀ.
    """
    qp = make("least_squares", n, m, seed=3 * n + m)
    model, sol = solved(qp)
    F, g = qp.values["F"], qp.values["g"]
    E = qp.extra["E"]
    e = qp.values.get("e", np.zeros(0))
    K, x, nu = dense_kkt(2 * F.T @ F + np.eye(n), -2 * F.T @ g, E, e)
    assert_close(sol.primal["x"], x, DENSE_RTOL, "x")
    k = F.shape[0]
    r = F @ x - g
    DF = np.zeros((n + m, k * n))
    for kk, ll in itertools.product(range(k), range(n)):
        DF[ll, kk + k * ll] += 2 * r[kk]
        DF[:n, kk + k * ll] += 2 * F[kk, :] * x[ll]
    Dg = np.vstack([-2 * F.T, np.zeros((m, k))])
    for name, D in [("F", DF), ("g", Dg)]:
        dz = -np.linalg.solve(K, D)
        assert_close(model.jacobian("x", name), dz[:n], DENSE_RTOL, f"dx/d{name}", floor=1e-8)
        if m:
            assert_close(model.jacobian("fixed", name), dz[n:], DENSE_RTOL, f"dν/d{name}",
                         floor=1e-8)
    if m:
        assert_close(sol.dual["fixed"], nu, DENSE_RTOL, "ν")
        dz_de = np.linalg.solve(K, np.vstack([np.zeros((n, m)), np.eye(m)]))
        assert_close(model.jacobian("x", "e"), dz_de[:n], DENSE_RTOL, "dx/de")


# ============================================================ 2b. CVXPY + Clarabel


@pytest.mark.parametrize("gen, n, m, seed", CASES)
def test_solution_matches_clarabel(gen: str, n: int, m: int, seed: int) -> None:
    """Primal, dual (with CVXPY's sign convention) and optimal value of the
    "kkt" backend against CVXPY solving the same problem with Clarabel."""
    qp = make(gen, n, m, seed)
    # CVXPY cannot take quad_form with a merely symmetric parameter: solve the
    # same data declared PSD (the generators draw identical values).
    ref = qp if qp.dcp else make("canonical", n, m, seed)
    prob = ref.problem()
    prob.solve(solver="CLARABEL")
    assert prob.status == cp.OPTIMAL
    expected_primal = {v.name(): np.array(v.value) for v in prob.variables()}
    expected_dual = {k: np.array(c.dual_value) for k, c in ref.constraints.items()}

    model, sol = solved(qp)
    assert sol.status == "optimal"
    assert sol.value == pytest.approx(prob.value, rel=CLARABEL_RTOL, abs=CLARABEL_RTOL)
    for name, var in model.variables.items():
        assert sol.primal[name].shape == var.shape
        assert_close(sol.primal[name], expected_primal[name], CLARABEL_RTOL, name, floor=1.0)
        assert np.array_equal(var.value, sol.primal[name])
    for name, con in model.constraints.items():
        assert sol.dual[name].shape == con.shape
        assert_close(sol.dual[name], expected_dual[name], CLARABEL_RTOL, f"dual {name}",
                     floor=1.0)
        assert np.array_equal(np.asarray(con.dual_value), sol.dual[name])


@pytest.mark.parametrize("gen, n, m, seed", CASES)
def test_osqp_solution_matches_kkt(gen: str, n: int, m: int, seed: int) -> None:
    qp = make(gen, n, m, seed)
    model, exact = solved(qp, "kkt")
    names = output_names(model)
    grads_kkt = model.backward({k: np.ones_like(v) for k, v in exact.primal.items()})
    approx = model.solve(solver="osqp", **qp.values)
    assert approx.solver == "osqp"
    assert_close(stack(approx, names), stack(exact, names), OSQP_RTOL, "z", floor=1.0)
    assert approx.value == pytest.approx(exact.value, rel=OSQP_RTOL, abs=OSQP_RTOL)
    grads_osqp = model.backward({k: np.ones_like(v) for k, v in exact.primal.items()})
    for k in grads_kkt:
        assert_close(grads_osqp[k], grads_kkt[k], OSQP_RTOL, f"dℓ/d{k}", floor=1.0)


# ============================================================ 3. forward vs reverse


def random_like(rng: np.random.Generator, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal(np.shape(v)) for k, v in arrays.items()}


def check_adjoint(qp: QP, seed: int, solver: str = "kkt") -> None:
    """⟨derivative(v), g⟩ = ⟨v, backward(g)⟩ over all parameters, primal and dual
    outputs, and ``jacobian`` against both modes."""
    model, sol = solved(qp, solver)
    rng = np.random.default_rng(seed)
    v = random_like(rng, qp.values)
    gp, gd = random_like(rng, sol.primal), random_like(rng, sol.dual)
    dz = model.derivative(v)
    # Loss on all outputs, on the primal outputs only, and on the duals only.
    for g in ({**gp, **gd}, gp, gd):
        if not g:
            continue
        grads = model.backward({k: a for k, a in g.items() if k in sol.primal},
                               dual={k: a for k, a in g.items() if k in sol.dual})
        fwd_terms = [dz[k] * a for k, a in g.items()]
        rev_terms = [v[k] * grads[k] for k in v]
        lhs = sum(float(np.sum(t)) for t in fwd_terms)
        rhs = sum(float(np.sum(t)) for t in rev_terms)
        # Relative to the sums of absolute terms (the condition of the inner products).
        scale = sum(float(np.sum(np.abs(t))) for t in fwd_terms + rev_terms)
        assert abs(lhs - rhs) <= ADJOINT_RTOL * max(scale, 1e-300), (
            f"⟨J v, g⟩ = {lhs!r} but ⟨v, Jᵀ g⟩ = {rhs!r}")

    # Jacobians: columns are forward derivatives, rows are backward passes.
    names = output_names(model)
    for of, wrt in itertools.product(names, model.parameters):
        J = model.jacobian(of, wrt)
        out_shape = np.shape(sol.primal.get(of, sol.dual.get(of)))
        param = model.parameters[wrt]
        assert J.shape == (int(np.prod(out_shape)), param.size)
        # J @ vec(v) equals the forward derivative along v.
        fwd = model.derivative({wrt: v[wrt]})[of]
        assert_close(J @ np.ravel(v[wrt], order="F"), np.ravel(fwd, order="F"),
                     ADJOINT_RTOL, f"J d{of}/d{wrt} · v", floor=1e-10)
        # A few columns (unit directions) and rows (unit loss gradients).
        for j in rng.choice(param.size, size=min(3, param.size), replace=False):
            e = np.zeros(param.size)
            e[j] = 1.0
            col = model.derivative({wrt: e.reshape(param.shape, order="F")})[of]
            assert_close(J[:, j], np.ravel(col, order="F"), ADJOINT_RTOL,
                         f"column {j} of d{of}/d{wrt}", floor=1e-10)
        for i in rng.choice(J.shape[0], size=min(3, J.shape[0]), replace=False):
            e = np.zeros(J.shape[0])
            e[i] = 1.0
            seed_out = e.reshape(out_shape, order="F")
            row = (model.backward({of: seed_out}) if of in sol.primal
                   else model.backward({}, dual={of: seed_out}))[wrt]
            assert_close(J[i, :], np.ravel(row, order="F"), ADJOINT_RTOL,
                         f"row {i} of d{of}/d{wrt}", floor=1e-10)


@pytest.mark.parametrize("solver", ["kkt", "osqp"])
@pytest.mark.parametrize("gen, n, m, seed", CASES)
def test_forward_reverse_and_jacobian_agree(gen: str, n: int, m: int, seed: int,
                                            solver: str) -> None:
    check_adjoint(make(gen, n, m, seed), seed=3000 + seed, solver=solver)


@pytest.mark.parametrize("gen", list(GENERATORS))
@given(n=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**16))
@settings(HYPOTHESIS, max_examples=10)
def test_random_shapes_adjoint_and_finite_differences(gen: str, n: int, data: st.DataObject,
                                                      seed: int) -> None:
    """Every generator, random shapes: forward = reverse, and the forward
    derivative along a random joint direction matches central finite differences."""
    m = data.draw(st.integers(0, n - 1), label="m")
    qp = make(gen, n, m, seed)
    check_adjoint(qp, seed)
    model, _ = solved(qp)
    rng = np.random.default_rng(seed)
    dirs = {k: direction(rng, p) for k, p in model.parameters.items()}
    dz = stack_dict(model.derivative(dirs), output_names(model))
    fd = fd_along(model, qp.values, dirs, "kkt")
    assert_close(dz, fd, FD_RTOL, f"{gen} n={n} m={m}: derivative()", floor=FD_FLOOR)


# ============================================================ side effects


@pytest.mark.parametrize("gen, n, m, seed", CASES[::3])
def test_gradient_and_delta_attributes_are_set(gen: str, n: int, m: int, seed: int) -> None:
    """backward() sets Parameter.gradient and derivative() sets Variable.delta to
    the returned arrays."""
    qp = make(gen, n, m, seed)
    model, sol = solved(qp)
    rng = np.random.default_rng(seed)
    grads = model.backward(random_like(rng, sol.primal))
    for name, param in model.parameters.items():
        assert param.gradient is not None
        np.testing.assert_array_equal(param.gradient, grads[name])
        assert np.shape(param.gradient) == param.shape
    dz = model.derivative(random_like(rng, qp.values))
    for name, var in model.variables.items():
        assert var.delta is not None
        np.testing.assert_array_equal(var.delta, dz[name])
        assert np.shape(var.delta) == var.shape
    assert set(dz) == set(model.variables) | set(model.constraints)


def test_derivatives_follow_the_latest_solve() -> None:
    """After a re-solve with new values, derivatives are those of the new point
    (checked against the dense reference at the new point)."""
    qp = make("canonical", 5, 2, seed=99)
    model, _ = solved(qp)
    model.jacobian("x", "A")
    rng = np.random.default_rng(5)
    new = {**qp.values, "A": full_row_rank(rng, 2, 5), "Q": spd(rng, 5)}
    model.solve(**new)
    _, _, jac = canonical_dense_jacobians(new)
    for name, D in jac.items():
        assert_close(model.jacobian("x", name), D[:5], DENSE_RTOL, f"dx/d{name}", floor=1e-8)
    # And after an OSQP solve at yet other values.
    newer = {**new, "Q": spd(rng, 5), "b": rng.standard_normal(2)}
    model.solve(solver="osqp", **newer)
    _, _, jac = canonical_dense_jacobians(newer)
    for name, D in jac.items():
        assert_close(model.jacobian("x", name), D[:5], OSQP_RTOL, f"dx/d{name}", floor=1e-8)


def test_osqp_sees_every_change_of_the_matrices() -> None:
    """Regression: a derivative factors K at θ; OSQP then solves at θ + h and back
    at θ. The last OSQP solve must use the matrices of θ again (in cb3657d it
    kept those of θ + h, because "K changed" was judged against the KKT
    factorization, not against the data OSQP last saw)."""
    qp = make("canonical", 4, 2, seed=17)
    model, exact = solved(qp, "osqp")
    model.derivative({"Q": np.eye(4)})
    for name in ("Q", "A"):
        moved = {**qp.values, name: qp.values[name] * 1.01}
        x_moved = canonical_dense_jacobians(moved)[0]
        assert_close(model.solve(solver="osqp", **moved).primal["x"], x_moved,
                     OSQP_RTOL, f"x after moving {name}")
        back = model.solve(solver="osqp", **qp.values)
        assert_close(back.primal["x"], exact.primal["x"], OSQP_RTOL, f"x after restoring {name}")


# ============================================================ bugs found


@pytest.mark.parametrize("kind", ["param_dot", "const_dot", "param_matvec"])
def test_size_one_matmul(kind: str) -> None:
    """n = 1: ``q @ x`` with q, x of shape (1,), and ``A @ x`` with A (1, 1).

    minimize x² + q x  s.t. (nothing)     -> x = −q/2,   dx/dq = −1/2
    minimize x²        s.t. A x = b       -> x = b/A,    dx/dA = −b/A²
    """
    x = cp.Variable(1, name="x")
    if kind == "param_matvec":
        A = cp.Parameter((1, 1), name="A")
        b = cp.Parameter(1, name="b")
        model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"fix": A @ x == b})
        model.solve(A=[[2.0]], b=[3.0])
        assert model.jacobian("x", "A")[0, 0] == pytest.approx(-3.0 / 4.0, rel=1e-10)
        return
    q = cp.Parameter(1, name="q")
    lin = q @ x if kind == "param_dot" else np.ones(1) @ x + q[0] * x[0]
    model = dm.Model(cp.Minimize(cp.sum_squares(x) + lin))
    sol = model.solve(q=[1.0])
    offset = 1.0 if kind == "const_dot" else 0.0
    assert sol.primal["x"][0] == pytest.approx(-(1.0 + offset) / 2)
    assert model.jacobian("x", "q")[0, 0] == pytest.approx(-0.5, rel=1e-10)


@pytest.mark.parametrize("where", ["variable", "parameter"])
def test_reversed_slice(where: str) -> None:
    """v[::-1] (variable) and p[::-1] (parameter) against the same model written
    with an explicit permutation."""
    v = cp.Variable(4, name="v")
    p = cp.Parameter(4, name="p")
    flip = np.eye(4)[::-1]
    rev = v[::-1] if where == "variable" else p[::-1]
    ref = flip @ v if where == "variable" else flip @ p
    other = p if where == "variable" else v
    cons = {"sum": cp.sum(v) == 1.0}
    model = dm.Model(cp.Minimize(cp.sum_squares(v) + rev @ other), cons)
    reference = dm.Model(cp.Minimize(cp.sum_squares(v) + ref @ other), cons)
    value = np.arange(1.0, 5.0)
    sol, sol_ref = model.solve(p=value), reference.solve(p=value)
    np.testing.assert_allclose(sol.primal["v"], sol_ref.primal["v"], rtol=1e-12)
    np.testing.assert_allclose(model.jacobian("v", "p"), reference.jacobian("v", "p"),
                               rtol=1e-12, atol=1e-14)


def test_inconsistent_constraints_are_infeasible() -> None:
    """x1 + x2 = 1 and x1 + x2 = 2 at once: DESIGN.md requires a clear error.

    Found failing at d4763a5: the kkt backend reported 'optimal' with
    x = (0.75, 0.75), violating A x = b by 0.5, and duals ≈ ±7.5e8 (≈ 1/δ),
    because the refined residual, relative to ‖K‖‖z‖ + ‖rhs‖ with ‖z‖ ≈ 1/δ,
    stayed below SOLVE_TOL. The check also guards the primal feasibility of
    what a consistent redundant system returns.
    """
    x = cp.Variable(2, name="x")
    b = cp.Parameter(2, name="b")
    model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"dup": np.ones((2, 2)) @ x == b})
    with pytest.raises(dm.SolverError, match="infeasible") as info:
        model.solve(b=[1.0, 2.0])
    assert info.value.status == "infeasible"
    # Consistent (but redundant) data: a feasible solution, x = (½, ½).
    sol = model.solve(b=[1.0, 1.0])
    np.testing.assert_allclose(sol.primal["x"], [0.5, 0.5], rtol=1e-10)
