"""The seed's worked cases (seed-differentiable-framework.txt §3.1, §3.2, §4.1).

``examples/seed_cases.py`` reproduces them against dense NumPy formulas; these
tests run that script, call its functions over more shapes, and add the
checks a script should not carry: the dual sign against CVXPY + Clarabel,
central finite differences, and the column-major order of vec(A).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

import diffmodel as dm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "seed_cases.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("seed_cases_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()

SHAPES = [pytest.param(n, m, seed, id=f"n{n}-m{m}-s{seed}")
          for seed, (n, m) in enumerate([(2, 1), (3, 2), (5, 2), (6, 5), (9, 3), (12, 11)])]


def test_example_script_runs_and_reports_every_check() -> None:
    result = subprocess.run([sys.executable, "-W", "error", str(SCRIPT)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for label in ("(a) dx/db", "(a) dnu/db", "(b) dx/dA", "(b) dnu/dA", "(c) dl/db"):
        assert out.count(label) == 2, out
    assert "FAIL" not in out and "all checks passed" in out
    assert len(out.splitlines()) < 30


@pytest.mark.parametrize("n, m, seed", SHAPES[1:])
def test_example_checks_hold_for_many_shapes(n: int, m: int, seed: int) -> None:
    for name, (err, scale) in example.seed_checks(n, m, seed).items():
        assert err <= example.TOL * scale, f"{name}: max |diff| {err:.2e}"


def test_example_checks_hold_with_one_constraint() -> None:
    for name, (err, scale) in example.seed_checks(3, 1, 0).items():
        assert err <= example.TOL * scale, f"{name}: max |diff| {err:.2e}"


# ------------------------------------------------------------------- helpers


def kkt(P: np.ndarray, q: np.ndarray, A: np.ndarray, b: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, m = P.shape[0], A.shape[0]
    K = np.block([[P, A.T], [A, np.zeros((m, m))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    return K, z[:n], z[n:]


def seed_problem(n: int, m: int, seed: int) -> tuple[dm.Model, dict, np.ndarray, np.ndarray]:
    """The seed's QP with plain parameters A and b (no 1 ⊙ θ or I θ wrapping)."""
    rng = np.random.default_rng(100 + seed)
    M = rng.standard_normal((n, n))
    P = M @ M.T + n * np.eye(n)
    q = rng.standard_normal(n)
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), {"eq": A @ x == b})
    U, _, Vt = np.linalg.svd(rng.standard_normal((m, n)), full_matrices=False)
    values = {"A": U @ np.diag(rng.uniform(1, 2, m)) @ Vt, "b": rng.standard_normal(m)}
    return model, values, P, q


def central_difference(model: dm.Model, values: dict, name: str, flat: int,
                       h: float = 1e-6) -> np.ndarray:
    """d(x, ν)/d vec(θ)[flat] by central differences, vec in column-major order."""
    out = []
    for sign in (1.0, -1.0):
        value = values[name].copy()
        idx = np.unravel_index(flat, value.shape, order="F")
        value[idx] += sign * h
        sol = model.solve(**{**values, name: value})
        out.append(np.concatenate([sol.primal["x"], sol.dual["eq"]]))
    model.solve(**values)
    return (out[0] - out[1]) / (2 * h)


# --------------------------------------------------------- sign convention


@pytest.mark.parametrize("n, m, seed", SHAPES[:4])
def test_nu_is_cvxpy_dual_and_z_solves_the_kkt_system(n: int, m: int, seed: int) -> None:
    """ν from diffmodel, ν from CVXPY + Clarabel (``dual_value``) and the ν-block
    of K⁻¹(−q, b) are one and the same vector."""
    model, values, P, q = seed_problem(n, m, seed)
    K, x, nu = kkt(P, q, values["A"], values["b"])
    con = model.constraints["eq"]
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(model.variables["x"], P)
                                     + q @ model.variables["x"]), [con])
    for name, par in model.parameters.items():
        par.value = values[name]
    problem.solve(solver="CLARABEL")
    cvxpy_nu = np.array(con.dual_value)
    np.testing.assert_allclose(cvxpy_nu, nu, rtol=1e-6, atol=1e-8)
    sol = model.solve(**values)
    np.testing.assert_allclose(sol.dual["eq"], nu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sol.primal["x"], x, rtol=1e-10, atol=1e-12)
    # Stationarity with this sign: P x + q + Aᵀ ν = 0.
    np.testing.assert_allclose(P @ sol.primal["x"] + q + values["A"].T @ sol.dual["eq"],
                               0.0, atol=1e-10)


# --------------------------------------------------------- (a) b(θ) = θ


@pytest.mark.parametrize("n, m, seed", SHAPES)
def test_case_a_jacobian_wrt_b(n: int, m: int, seed: int) -> None:
    """∂z/∂b = K⁻¹[0; I], against the dense formula and central differences."""
    model, values, P, q = seed_problem(n, m, seed)
    model.solve(**values)
    K, _, _ = kkt(P, q, values["A"], values["b"])
    expected = np.linalg.solve(K, np.vstack([np.zeros((n, m)), np.eye(m)]))
    got = np.vstack([model.jacobian("x", "b"), model.jacobian("eq", "b")])
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    for j in range(m):
        np.testing.assert_allclose(got[:, j], central_difference(model, values, "b", j),
                                   rtol=1e-6, atol=1e-8)


# --------------------------------------------------------- (b) A(θ) = θ


@pytest.mark.parametrize("n, m, seed", SHAPES)
def test_case_b_jacobian_wrt_A_column_major(n: int, m: int, seed: int) -> None:
    """∂z/∂vec(A) = −K⁻¹[I ⊗ νᵀ; xᵀ ⊗ I]: every column against the formula and a
    central difference of the entry A[i, j] at vec index i + m j."""
    model, values, P, q = seed_problem(n, m, seed)
    model.solve(**values)
    K, x, nu = kkt(P, q, values["A"], values["b"])
    dF = np.vstack([np.kron(np.eye(n), nu[None, :]), np.kron(x[None, :], np.eye(m))])
    expected = -np.linalg.solve(K, dF)
    got = np.vstack([model.jacobian("x", "A"), model.jacobian("eq", "A")])
    assert got.shape == (n + m, m * n)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    for i in range(m):
        for j in range(n):
            fd = central_difference(model, values, "A", i + m * j)
            np.testing.assert_allclose(got[:, i + m * j], fd, rtol=1e-6, atol=1e-8,
                                       err_msg=f"column of A[{i}, {j}]")


def test_case_b_order_is_not_row_major() -> None:
    """The check above can tell the two orders apart: the row-major permutation of
    the formula's columns is far from diffmodel's Jacobian."""
    n, m = 4, 3
    model, values, P, q = seed_problem(n, m, 0)
    model.solve(**values)
    K, x, nu = kkt(P, q, values["A"], values["b"])
    dF = np.vstack([np.kron(np.eye(n), nu[None, :]), np.kron(x[None, :], np.eye(m))])
    expected = -np.linalg.solve(K, dF)
    row_major = expected[:, np.arange(m * n).reshape((m, n), order="F").ravel(order="C")]
    got = model.jacobian("x", "A")
    assert np.max(np.abs(got - expected[:n])) < 1e-10
    assert np.max(np.abs(got - row_major[:n])) > 1e-3


def test_seed_parametrizations_match_plain_parameters() -> None:
    """A(θ) = 1 ⊙ θ and b(θ) = I θ (the example) give the same Jacobians as plain
    parameters A and b."""
    n, m = 5, 2
    wrapped, P, q, values = example.build(n, m, seed=3)
    wrapped.solve(**values)
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    plain = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), {"eq": A @ x == b})
    plain.solve(A=values["theta_A"], b=values["theta_b"])
    for of in ("x", "eq"):
        np.testing.assert_allclose(wrapped.jacobian(of, "theta_A"), plain.jacobian(of, "A"),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(wrapped.jacobian(of, "theta_b"), plain.jacobian(of, "b"),
                                   rtol=1e-12, atol=1e-14)


# --------------------------------------------------------- (c) backpropagation


@pytest.mark.parametrize("n, m, seed", SHAPES)
def test_case_c_backward_is_the_adjoint_solution(n: int, m: int, seed: int) -> None:
    """ω = K⁻ᵀ(∂ℓ/∂z)ᵀ; then ∂ℓ/∂b = ω_ν (seed §4.1), and, from the same ω,
    ∂ℓ/∂vec(A) = −[I ⊗ νᵀ; xᵀ ⊗ I]ᵀ ω."""
    model, values, P, q = seed_problem(n, m, seed)
    sol = model.solve(**values)
    K, x, nu = kkt(P, q, values["A"], values["b"])
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(n + m)
    omega = np.linalg.solve(K.T, g)
    grads = model.backward({"x": g[:n]}, dual={"eq": g[n:]})
    np.testing.assert_allclose(grads["b"], omega[n:], rtol=1e-8, atol=1e-10)
    dF = np.vstack([np.kron(np.eye(n), nu[None, :]), np.kron(x[None, :], np.eye(m))])
    np.testing.assert_allclose(grads["A"], (-dF.T @ omega).reshape((m, n), order="F"),
                               rtol=1e-8, atol=1e-10)
    # A loss of x alone: ω solves K ω = (∂ℓ/∂x, 0).
    omega_x = np.linalg.solve(K.T, np.concatenate([g[:n], np.zeros(m)]))
    np.testing.assert_allclose(model.backward({"x": g[:n]})["b"], omega_x[n:],
                               rtol=1e-8, atol=1e-10)
    # Against central differences of ℓ = ⟨g, z⟩ along each b_j.
    for j in range(m):
        fd = float(g @ central_difference(model, values, "b", j))
        assert grads["b"][j] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    assert sol.status == "optimal"


def test_example_exit_status_reports_a_failed_check(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With a zero tolerance some float difference must exceed it: main() says
    FAIL and returns 1 (the script's exit status)."""
    monkeypatch.setattr(example, "TOL", 0.0)
    assert example.main() == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "SOME CHECKS FAILED" in out
