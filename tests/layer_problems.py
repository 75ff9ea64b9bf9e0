"""The small QPs of the layer tests (tests/test_torch.py, tests/test_jax.py).

minimize ½xᵀPx + qᵀx s.t. Ax = b [, Gx ≤ h] with every piece a parameter,
values built from a chosen optimum so that the active set is known and
strictly complementary.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

import diffmodel as dm

N, M_EQ, M_INEQ = 4, 1, 3


def qp_model(*, inequalities: bool = True, p_parameter: bool = True,
             P0: np.ndarray | None = None) -> dm.Model:
    """minimize ½xᵀPx + qᵀx s.t. Ax = b ("eq") [, Gx ≤ h ("ineq")]: every piece a
    parameter (P through quad_form with a PSD parameter), or P constant."""
    x = cp.Variable(N, name="x")
    q = cp.Parameter(N, name="q")
    A = cp.Parameter((M_EQ, N), name="A")
    b = cp.Parameter(M_EQ, name="b")
    if p_parameter:
        quad = cp.quad_form(x, cp.Parameter((N, N), name="P", PSD=True))
    else:
        quad = cp.quad_form(x, np.eye(N) if P0 is None else P0)
    cons: dict[str, cp.Constraint] = {"eq": A @ x == b}
    if inequalities:
        G = cp.Parameter((M_INEQ, N), name="G")
        h = cp.Parameter(M_INEQ, name="h")
        cons["ineq"] = G @ x <= h
    return dm.Model(cp.Minimize(0.5 * quad + q @ x), cons)


def qp_values(seed: int, *, inequalities: bool = True, P: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
    """Values built from a chosen optimum: rows 0 and 1 of G binding with
    multipliers in [0.5, 1.5], row 2 slack by [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((N, N)))
    P = (U * rng.uniform(1.0, 3.0, N)) @ U.T if P is None else P
    P = 0.5 * (P + P.T)
    A = rng.standard_normal((M_EQ, N)) + np.eye(M_EQ, N)
    x, nu = rng.standard_normal(N), rng.standard_normal(M_EQ)
    values = {"P": P, "A": A, "b": A @ x}
    grad = P @ x + A.T @ nu
    if inequalities:
        G = rng.standard_normal((M_INEQ, N))
        lam = np.array([rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), 0.0])
        slack = np.array([0.0, 0.0, rng.uniform(0.5, 1.5)])
        values |= {"G": G, "h": G @ x + slack}
        grad = grad + G.T @ lam
    values["q"] = -grad
    return values


def batch_values(seed: int, size: int, batched: tuple[str, ...], *,
                 inequalities: bool = True) -> dict[str, np.ndarray]:
    """Base values, with the parameters in ``batched`` perturbed per item by 0.03·noise
    (small against the margins, so every item has the base's active set)."""
    base = qp_values(seed, inequalities=inequalities)
    rng = np.random.default_rng(seed + 1000)
    out = {}
    for name, value in base.items():
        if name in batched:
            noise = 0.03 * rng.standard_normal((size, *value.shape))
            if name == "P":
                noise = 0.5 * (noise + np.swapaxes(noise, 1, 2))
            out[name] = value + noise
        else:
            out[name] = value
    return out
