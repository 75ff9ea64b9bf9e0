"""Seeded generators of well-posed random equality QPs written in CVXPY.

Every generator has the signature ``gen(rng, n, m) -> QP``: ``n`` is the size
of the main variable and ``m < n`` the number of parameterized equality rows
(some generators add a few constant rows of their own, documented there).
Every returned problem has a unique, well-conditioned primal-dual solution:
the objective is strongly convex in all variables (random SPD matrices have
eigenvalues in [1, 4]) and the constraint rows are linearly independent
(random constraint matrices have singular values in [1, 2]), so the KKT
matrix is nonsingular and the solution is a smooth function of every
parameter near the given values.

Together the generators cover every kind of parameter diffmodel accepts:
linear terms q, right-hand sides b, constraint matrices A, quadratic forms
``quad_form(x, Q)`` with Q declared ``PSD=True`` or ``symmetric=True``,
scalar parameters scaling a quadratic or a constant vector, parameters inside
larger expressions (sums, transposes, slices, lifted ``sum_squares`` terms),
matrix variables with stacking and reshaping atoms, several variables,
``cp.Maximize`` of a concave objective, and constants mixed with parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

import diffmodel as dm

__all__ = ["QP", "GENERATORS", "make", "spd", "full_row_rank", "orthogonal"]


@dataclass
class QP:
    """A random test problem: CVXPY objective, named constraints, parameter values.

    ``dcp`` is False when CVXPY itself cannot solve the problem (a
    ``quad_form`` with a parameter declared only ``symmetric=True``), so a
    reference solve with Clarabel is impossible. ``extra`` holds constant data
    a test needs to rebuild the problem densely.
    """

    name: str
    objective: cp.Minimize | cp.Maximize
    constraints: dict[str, cp.Constraint]
    values: dict[str, np.ndarray]
    dcp: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    def model(self, **kwargs: object) -> dm.Model:
        """A fresh diffmodel Model of the problem (kwargs go to dm.Model)."""
        return dm.Model(self.objective, self.constraints, **kwargs)

    def problem(self) -> cp.Problem:
        """The same problem as a cp.Problem, parameter values assigned."""
        prob = cp.Problem(self.objective, list(self.constraints.values()))
        for par in prob.parameters():
            par.value = self.values[par.name()]
        return prob


# ---------------------------------------------------------------- random data


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Haar-random orthogonal matrix."""
    if n == 0:
        return np.zeros((0, 0))
    Z = rng.standard_normal((n, n))
    Qm, R = np.linalg.qr(Z)
    return Qm * np.sign(np.diag(R))


def spd(rng: np.random.Generator, n: int, lo: float = 1.0, hi: float = 4.0) -> np.ndarray:
    """A random symmetric positive definite matrix with eigenvalues in [lo, hi]."""
    U = orthogonal(rng, n)
    M = (U * rng.uniform(lo, hi, n)) @ U.T
    return 0.5 * (M + M.T)


def full_row_rank(rng: np.random.Generator, m: int, n: int,
                  lo: float = 1.0, hi: float = 2.0) -> np.ndarray:
    """A random (m, n) matrix, m <= n, with singular values in [lo, hi]."""
    if m == 0:
        return np.zeros((0, n))
    U = orthogonal(rng, m)
    V = orthogonal(rng, n)[:m]
    return (U * rng.uniform(lo, hi, m)) @ V


def _var(shape: int | tuple[int, ...], name: str) -> cp.Variable:
    return cp.Variable(shape, name=name)


# ---------------------------------------------------------------- generators


def canonical(rng: np.random.Generator, n: int, m: int, *, symmetric: bool = False) -> QP:
    """minimize ½ xᵀQx + qᵀx  s.t.  A x = b, with Q, q, A, b all parameters.

    ``½ quad_form(x, Q)`` gives exactly P = Q for symmetric Q. With m == 0
    there are no constraints (and no A, b parameters).
    """
    x = _var(n, "x")
    attr = {"symmetric": True} if symmetric else {"PSD": True}
    Q = cp.Parameter((n, n), name="Q", **attr)
    q = cp.Parameter(n, name="q")
    values = {"Q": spd(rng, n), "q": rng.standard_normal(n)}
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        A = cp.Parameter((m, n), name="A")
        b = cp.Parameter(m, name="b")
        constraints["balance"] = A @ x == b
        values["A"] = full_row_rank(rng, m, n)
        values["b"] = rng.standard_normal(m)
    objective = cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x)
    return QP("canonical_sym" if symmetric else "canonical", objective, constraints,
              values, dcp=not symmetric)


def canonical_symmetric(rng: np.random.Generator, n: int, m: int) -> QP:
    """:func:`canonical` with Q declared ``symmetric=True`` instead of PSD."""
    return canonical(rng, n, m, symmetric=True)


def scalars(rng: np.random.Generator, n: int, m: int) -> QP:
    """Scalar parameters: ``gamma * quad_form(x, Q0) + eta * sum(x)`` s.t. ``A0 x = s * b0``
    (gamma declared nonneg so the objective is DCP)."""
    x = _var(n, "x")
    gamma = cp.Parameter(name="gamma", nonneg=True)
    eta = cp.Parameter(name="eta")
    s = cp.Parameter(name="s")
    Q0 = spd(rng, n)
    objective = cp.Minimize(gamma * cp.quad_form(x, Q0) + eta * cp.sum(x)
                            + rng.standard_normal(n) @ x)
    values = {"gamma": np.array(rng.uniform(0.5, 2.0)), "eta": np.array(rng.standard_normal()),
              "s": np.array(rng.uniform(0.5, 2.0))}
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        A0 = full_row_rank(rng, m, n)
        b0 = rng.standard_normal(m)
        constraints["scaled"] = A0 @ x == s * b0
    else:
        # No constraints: s scales a constant vector in the linear term instead.
        objective = cp.Minimize(objective.args[0] + s * rng.standard_normal(n) @ x)
    return QP("scalars", objective, constraints, values)


def expressions(rng: np.random.Generator, n: int, m: int) -> QP:
    """Parameters inside larger expressions.

    ``(A + 2*A) @ x == b``, a linear term through ``A.T``, slices and single
    entries of parameters, and ``sum_squares(x - t)`` with t a parameter
    (which diffmodel lifts). Needs m < n.
    """
    x = _var(n, "x")
    A = cp.Parameter((max(m, 1), n), name="A")
    b = cp.Parameter(max(m, 1), name="b")
    t = cp.Parameter(n, name="t")
    w = cp.Parameter(n + 2, name="w")
    r0 = rng.standard_normal(n)
    obj = (cp.sum_squares(x - t) + 0.5 * cp.sum_squares(x)
           + w[:n] @ x + w[n] * x[0] - w[n + 1] * x[n - 1])
    values = {"t": rng.standard_normal(n), "w": rng.standard_normal(n + 2)}
    values["A"] = full_row_rank(rng, max(m, 1), n) / 3.0
    values["b"] = rng.standard_normal(max(m, 1))
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        constraints["tripled"] = (A + 2 * A) @ x == b
        # A linear term through the transpose of A, and an entry of b.
        obj = obj + r0 @ (A.T @ x[:m]) + b[0] * cp.sum(x)
    else:
        # m == 0: use A and b (shape (1, n), (1,)) in the objective only.
        obj = obj + x[0] * (A.T[:, 0] @ r0) + b[0] * x[0]
    return QP("expressions", cp.Minimize(obj), constraints, values)


def slices(rng: np.random.Generator, n: int, m: int) -> QP:
    """Slices and transposes of parameters multiplying the variable.

    A parameter ``B`` of shape (n, m + 1) enters as ``B[:, :m].T @ x == b[1:]``;
    its last column is a linear term. Needs m < n.
    """
    x = _var(n, "x")
    B = cp.Parameter((n, m + 1), name="B")
    b = cp.Parameter(m + 1, name="b")
    Bv = np.zeros((n, m + 1))
    Bv[:, :m] = full_row_rank(rng, m, n).T
    Bv[:, m] = rng.standard_normal(n)
    values = {"B": Bv, "b": rng.standard_normal(m + 1)}
    Q0 = spd(rng, n)
    obj = 0.5 * cp.quad_form(x, Q0) + B[:, m] @ x + b[0] * x[n - 1]
    constraints = {"sliced": B[:, :m].T @ x == b[1:]} if m > 0 else {}
    return QP("slices", cp.Minimize(obj), constraints, values)


def least_squares(rng: np.random.Generator, n: int, m: int) -> QP:
    """``sum_squares(F @ x - g) + ½ sum_squares(x)`` with F, g parameters (lifted)
    s.t. ``E x = e`` with E constant (``extra["E"]``) and e a parameter."""
    x = _var(n, "x")
    k = n + 2
    F = cp.Parameter((k, n), name="F")
    g = cp.Parameter(k, name="g")
    values = {"F": rng.standard_normal((k, n)) / np.sqrt(k), "g": rng.standard_normal(k)}
    obj = cp.sum_squares(F @ x - g) + 0.5 * cp.sum_squares(x)
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        e = cp.Parameter(m, name="e")
        E = full_row_rank(rng, m, n)
        constraints["fixed"] = E @ x == e
        values["e"] = rng.standard_normal(m)
    else:
        E = np.zeros((0, n))
    return QP("least_squares", cp.Minimize(obj), constraints, values, extra={"E": E})


def several_variables(rng: np.random.Generator, n: int, m: int) -> QP:
    """Two variables x (n) and y (2) coupled by ``A x + C y == b`` (C parameter),
    plus a constant constraint fixing ``sum(y)``; there are m + 1 rows."""
    x = _var(n, "x")
    y = _var(2, "y")
    A = cp.Parameter((m, n), name="A") if m > 0 else None
    C = cp.Parameter((max(m, 1), 2), name="C")
    b = cp.Parameter(max(m, 1), name="b")
    d = cp.Parameter(2, name="d")
    Q0 = spd(rng, n)
    obj = (0.5 * cp.quad_form(x, Q0) + cp.sum_squares(y) + d @ y
           + rng.standard_normal(n) @ x)
    values = {"C": rng.standard_normal((max(m, 1), 2)) / 2, "b": rng.standard_normal(max(m, 1)),
              "d": rng.standard_normal(2)}
    constraints: dict[str, cp.Constraint] = {"ysum": cp.sum(y) == 1.0}
    if A is not None:
        constraints["coupling"] = A @ x + C @ y == b
        values["A"] = full_row_rank(rng, m, n)
    else:
        obj = obj + (C @ y)[0] + b[0] * y[1]
    return QP("several_vars", cp.Minimize(obj), constraints, values)


def maximize(rng: np.random.Generator, n: int, m: int) -> QP:
    """``Maximize(-quad_form(x, Q) + q @ x + c)`` s.t. ``A x == b``."""
    x = _var(n, "x")
    Q = cp.Parameter((n, n), name="Q", PSD=True)
    q = cp.Parameter(n, name="q")
    values = {"Q": spd(rng, n) / 2, "q": rng.standard_normal(n)}
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        A = cp.Parameter((m, n), name="A")
        b = cp.Parameter(m, name="b")
        constraints["balance"] = A @ x == b
        values["A"] = full_row_rank(rng, m, n)
        values["b"] = rng.standard_normal(m)
    objective = cp.Maximize(-cp.quad_form(x, Q) + q @ x + 1.5)
    return QP("maximize", objective, constraints, values)


def mixed_constants(rng: np.random.Generator, n: int, m: int) -> QP:
    """Constants added to parameters: ``(A0 + A) @ x == b + b0``, ``(q + q0) @ x``,
    ``quad_form(x, Q0 + Q)`` and a constant offset in the objective."""
    x = _var(n, "x")
    Q = cp.Parameter((n, n), name="Q", PSD=True)
    q = cp.Parameter(n, name="q")
    Q0 = spd(rng, n, 0.5, 2.0)
    q0 = rng.standard_normal(n)
    values = {"Q": spd(rng, n, 0.5, 2.0) / 2, "q": rng.standard_normal(n)}
    obj = 0.5 * cp.quad_form(x, Q0 + Q) + (q + q0) @ x + 3.0
    constraints: dict[str, cp.Constraint] = {}
    if m > 0:
        A = cp.Parameter((m, n), name="A")
        b = cp.Parameter(m, name="b")
        Afull = full_row_rank(rng, m, n)
        A0 = rng.uniform(0.5, 1.0) * Afull
        values["A"] = Afull - A0
        values["b"] = rng.standard_normal(m)
        constraints["shifted"] = (A0 + A) @ x == b + rng.standard_normal(m)
    return QP("mixed_constants", cp.Minimize(obj), constraints, values)


def matrix_variable(rng: np.random.Generator, n: int, m: int) -> QP:
    """A (3, 2) matrix variable X and a vector v (n) with hstack, vstack,
    reshape, transpose, sum(axis) and indexing.

    Constraints (m + 3 rows, independent for generic data):

    - ``sum(X, axis=0) == s``                 (2 rows, s parameter)
    - ``X.T[1, 2] + v[0] == h``              (1 row, h parameter scalar)
    - ``A @ v + G0 @ vec(X) == b``           (m rows, G0 constant)
    """
    X = _var((3, 2), "X")
    v = _var(n, "v")
    T = cp.Parameter((3, 2), name="T")
    L = cp.Parameter((2, 3), name="L")
    s = cp.Parameter(2, name="s")
    h = cp.Parameter(name="h")
    values = {"T": rng.standard_normal((3, 2)), "L": rng.standard_normal((2, 3)) / 3,
              "s": rng.standard_normal(2), "h": np.array(rng.standard_normal())}
    W0 = spd(rng, 6)
    vecX = cp.reshape(X, (6,), order="F")
    stacked = cp.vstack([cp.hstack([X[0, 0], X[2, 1]]), cp.hstack([v[0], X[1, 0]])])
    obj = (cp.sum_squares(X - T) + 0.5 * cp.quad_form(vecX, W0) + cp.sum_squares(v)
           + cp.sum(cp.multiply(L, X.T)) + cp.sum(stacked) + cp.trace(L @ X))
    constraints: dict[str, cp.Constraint] = {
        "colsum": cp.sum(X, axis=0) == s,
        "entry": X.T[1, 2] + v[0] == h,
    }
    if m > 0:
        A = cp.Parameter((m, n), name="A")
        b = cp.Parameter(m, name="b")
        values["A"] = full_row_rank(rng, m, n)
        values["b"] = rng.standard_normal(m)
        # A has full row rank in v, which the other rows touch only through
        # v[0], so the m + 3 rows are independent for generic data.
        G0 = rng.standard_normal((m, 6)) / 4
        constraints["mixed"] = A @ v + G0 @ vecX == b
    return QP("matrix_var", cp.Minimize(obj), constraints, values)


def reshaped(rng: np.random.Generator, n: int, m: int) -> QP:
    """A (2, k) matrix variable reshaped in C order, a parameter reshaped in F
    order, and a transposed parameter multiplied elementwise with the variable.

    Constraint ``M @ reshape(Y, (2k,), order='C') == b`` with min(m, 2k - 1)
    rows; ``n`` only sets k = max(2, ceil(n / 2)).
    """
    k = max(2, (n + 1) // 2)
    mm = min(m, 2 * k - 1)
    Y = _var((2, k), "Y")
    c = cp.Parameter((k, 2), name="c")
    values = {"c": rng.standard_normal((k, 2))}
    obj = (0.5 * cp.sum_squares(Y) + cp.sum(cp.multiply(c.T, Y))
           + cp.reshape(c, (2 * k,), order="F") @ cp.reshape(Y, (2 * k,), order="C"))
    constraints: dict[str, cp.Constraint] = {}
    if mm > 0:
        M = cp.Parameter((mm, 2 * k), name="M")
        b = cp.Parameter(mm, name="b")
        values["M"] = full_row_rank(rng, mm, 2 * k)
        values["b"] = rng.standard_normal(mm)
        constraints["flat"] = M @ cp.reshape(Y, (2 * k,), order="C") == b
    return QP("reshaped", cp.Minimize(obj), constraints, values)


#: All generators by name, used by the parametrized tests.
GENERATORS: dict[str, Callable[[np.random.Generator, int, int], QP]] = {
    "canonical": canonical,
    "canonical_sym": canonical_symmetric,
    "scalars": scalars,
    "expressions": expressions,
    "slices": slices,
    "least_squares": least_squares,
    "several_vars": several_variables,
    "maximize": maximize,
    "mixed_constants": mixed_constants,
    "matrix_var": matrix_variable,
    "reshaped": reshaped,
}


def make(name: str, n: int, m: int, seed: int) -> QP:
    """Build generator ``name`` with a fresh seeded RNG."""
    return GENERATORS[name](np.random.default_rng(seed), n, m)
