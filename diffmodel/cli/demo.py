"""``python -m diffmodel demo``: solve, differentiate and check a small model."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import cvxpy as cp
import numpy as np
from cvxpy.atoms.sum_squares import sum_squares  # cp.sum_squares, visible to type checkers
from numpy.typing import NDArray

import diffmodel as dm

from ._common import EXIT_FAILURE, EXIT_OK, CommandError
from ._guard import Watch

__all__ = ["run_demo"]

FloatArray = NDArray[np.float64]


def run_demo(seed: int = 0) -> int:
    """Solve a small seed-style QP, print named gradients and a finite-difference check.

    The model is minimize ½‖x‖² + qᵀx subject to A x = b (named ``balance``),
    with x ∈ ℝ⁵, two constraints and A, b, q drawn with ``seed``.

    Parameters
    ----------
    seed : int, optional
        Seed of the random data (default 0), nonnegative.

    Returns
    -------
    int
        The exit status: 0 if the gradient check passes, 1 otherwise.

    Raises
    ------
    CommandError
        If the model cannot be solved or differentiated (exit status 1).
    """
    rng = np.random.default_rng(seed)
    n, m = 5, 2
    x = cp.Variable(n, name="x")
    A = cp.Parameter((m, n), name="A")
    b = cp.Parameter(m, name="b")
    q = cp.Parameter(n, name="q")
    model = dm.Model(
        cp.Minimize(0.5 * sum_squares(x) + q @ x),
        {"balance": A @ x == b},
    )
    values: dict[str, FloatArray] = {
        "A": rng.standard_normal((m, n)),
        "b": rng.standard_normal(m),
        "q": rng.standard_normal(n),
    }
    watch = Watch()
    try:
        with watch.watching(), np.printoptions(precision=4, suppress=True):
            status = _show(model, values, seed)
    except dm.DiffModelError as exc:
        raise CommandError(str(exc), status=EXIT_FAILURE) from None
    note = watch.note()
    if note is not None:
        print(f"diffmodel demo: note: {note}", file=sys.stderr)
    return status


def _show(model: dm.Model, values: Mapping[str, FloatArray], seed: int) -> int:
    """Print the solution, the gradients and the check; return the exit status."""
    n = model.variables["x"].size
    print("diffmodel demo: minimize ½‖x‖² + qᵀx  subject to  A x = b  (balance)")
    print(f"  {model}")
    sol = model.solve(solver=None, **values)
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
    check = dm.check_gradients(model, seed=seed)
    print(_indent(check))
    return EXIT_OK if check.ok else EXIT_FAILURE


def _indent(text: object, pad: str = "    ") -> str:
    """``str(text)`` with every line indented by ``pad``."""
    return "\n".join(pad + line for line in str(text).splitlines())
