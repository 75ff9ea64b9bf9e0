"""The demo behind ``python -m diffmodel demo``: solve, differentiate, check."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .check import check_gradients
from .model import Model

__all__ = ["run_demo"]


def run_demo(seed: int = 0) -> int:
    """Solve a small seed-style QP, print named gradients and a finite-difference check.

    Returns the process exit code: 0 if the gradient check passes.
    """
    rng = np.random.default_rng(seed)
    n, m = 5, 2
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    q = cp.Parameter(n, name="q")
    model = Model(
        cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
        {"balance": A @ x == b},
    )
    values = {
        "A": rng.standard_normal((m, n)),
        "b": rng.standard_normal(m),
        "q": rng.standard_normal(n),
    }
    with np.printoptions(precision=4, suppress=True):
        return _report(model, values, seed)


def _report(model: Model, values: dict[str, np.ndarray], seed: int) -> int:
    n = model.variables["x"].size
    print("diffmodel demo: minimize ½‖x‖² + qᵀx  subject to  A x = b  (balance)")
    print(f"  {model}")
    sol = model.solve(**values)
    print(f"\nsolve: status {sol.status}, optimal value {sol.value:.6f}")
    print(f"  x             = {sol.primal['x']}")
    print(f"  dual[balance] = {sol.dual['balance']}")

    target = np.ones(n)
    dl_dx = sol.primal["x"] - target
    print("\nloss ℓ(x) = ½‖x − 1‖²; reverse mode, dℓ/dθ by parameter name:")
    grads = model.backward({"x": dl_dx})
    for name, grad in grads.items():
        print(f"  dℓ/d{name} {grad.shape}:\n{_indent(grad)}")

    dz = model.derivative({"b": np.array([1.0, 0.0])})
    print(f"\nforward mode, direction db = (1, 0):\n  dx = {dz['x']}")
    print(f"\nJacobian dx/dA has shape {model.jacobian('x', 'A').shape} "
          "(columns follow vec(A), column-major)")

    print("\nfinite-difference check (central differences of re-solves):")
    check = check_gradients(model, seed=seed)
    print(_indent(str(check)))
    return 0 if check.ok else 1


def _indent(text: object, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in str(text).splitlines())
