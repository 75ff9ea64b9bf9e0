"""The seed's two worked cases (seed-differentiable-framework.txt, §3–4), with diffmodel.

    minimize ½ xᵀPx + qᵀx  s.t.  A(θ_A) x = b(θ_b),  A(θ_A) = 1 ⊙ θ_A,  b(θ_b) = I θ_b

z = (x, ν) solves K z = (−q, b), K = [[P, Aᵀ], [A, 0]]; ν is CVXPY's dual of the
constraint (Lagrangian f + νᵀ(Ax − b); tests/test_seed_cases.py checks it against
CVXPY + Clarabel). The seed's formulas, computed densely here:

    (a) ∂z/∂θ_b = K⁻¹ [0; I]
    (b) ∂z/∂θ_A = −K⁻¹ [I ⊗ νᵀ; xᵀ ⊗ I]   (columns: vec(θ_A), column-major)
    (c) ∂ℓ/∂θ_b = ω_ν, the ν-block of ω = K⁻ᵀ (∂ℓ/∂z)ᵀ

Run ``python examples/seed_cases.py``; the exit status is 1 if a check fails.
"""

import sys

import cvxpy as cp
import numpy as np

import diffmodel as dm

TOL = 1e-8  # on max |Δ|, relative to max(1, max |expected|)


def build(n=5, m=2, seed=0):
    """The seed's QP as a diffmodel Model, with its data (P, q, values)."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    P, q = M @ M.T + n * np.eye(n), rng.standard_normal(n)
    x = cp.Variable(n, name="x")
    theta_A = cp.Parameter((m, n), name="theta_A")
    theta_b = cp.Parameter(m, name="theta_b")
    A, b = cp.multiply(np.ones((m, n)), theta_A), np.eye(m) @ theta_b
    model = dm.Model(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), {"eq": A @ x == b})
    values = {"theta_A": rng.standard_normal((m, n)), "theta_b": rng.standard_normal(m)}
    return model, P, q, values


def seed_checks(n=5, m=2, seed=0):
    """Max |diffmodel − seed formula| for each check, with the tolerance scale."""
    model, P, q, values = build(n, m, seed)
    A, b = values["theta_A"], values["theta_b"]
    sol = model.solve(**values)
    K = np.block([[P, A.T], [A, np.zeros((m, m))]])
    z = np.linalg.solve(K, np.concatenate([-q, b]))
    x, nu = z[:n], z[n:]
    dz_db = np.linalg.solve(K, np.vstack([np.zeros((n, m)), np.eye(m)]))
    dF_dA = np.vstack([np.kron(np.eye(n), nu[None, :]), np.kron(x[None, :], np.eye(m))])
    dz_dA = -np.linalg.solve(K, dF_dA)
    dl_dz = np.random.default_rng(seed + 1).standard_normal(n + m)
    omega = np.linalg.solve(K.T, dl_dz)
    grads = model.backward({"x": dl_dz[:n]}, dual={"eq": dl_dz[n:]})
    pairs = {
        "x  of K z = (-q, b)": (sol.primal["x"], x),
        "nu of K z = (-q, b)": (sol.dual["eq"], nu),
        "(a) dx/db": (model.jacobian("x", "theta_b"), dz_db[:n]),
        "(a) dnu/db": (model.jacobian("eq", "theta_b"), dz_db[n:]),
        "(b) dx/dA": (model.jacobian("x", "theta_A"), dz_dA[:n]),
        "(b) dnu/dA": (model.jacobian("eq", "theta_A"), dz_dA[n:]),
        "(c) dl/db = omega_nu": (grads["theta_b"], omega[n:]),
    }
    return {name: (float(np.max(np.abs(got - want))), max(1.0, float(np.max(np.abs(want)))))
            for name, (got, want) in pairs.items()}


def main():
    ok = True
    for n, m in [(5, 2), (8, 5)]:
        print(f"n = {n}, m = {m}")
        for name, (err, scale) in seed_checks(n, m).items():
            good = err <= TOL * scale
            ok &= good
            print(f"  {name:22s} max |diff| = {err:.1e}  {'ok' if good else 'FAIL'}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
