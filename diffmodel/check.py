"""Finite-difference checks of a solution's derivatives, against an independent solver.

:func:`check_gradients` compares, for each parameter, three numbers along a
random direction v and a random linear loss ℓ(z) = ⟨g, z⟩ over all primal
and dual outputs:

- central finite differences of re-solves through an independent exact
  path (dense LAPACK or SciPy LU, refined in extended precision; none of
  diffmodel's own solver code): (ℓ(θ + εv) − ℓ(θ − εv)) / 2ε;
- forward mode: ⟨g, derivative(v)⟩;
- reverse mode: ⟨backward(g), v⟩.

The central difference has truncation error O(ε²) and, for a QP, the
solution is smooth in θ wherever the KKT matrix is nonsingular, so agreement
to about 1e-7 relative is expected in float64 with ε ≈ 1e-6 (scaled to the
parameter's magnitude).

With inequalities, the reference re-solves hold the solution's active set
fixed (its binding rows as equalities, the others left out): the
derivative of a QP with inequalities at a non-degenerate point is the
derivative of that equality QP. The check is therefore meaningful only
when the active set does not change within ±ε, which holds away from
degenerate points (``Solution.degenerate``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._typing import FloatArray, IntArray
from ._validation import ParamSpec
from .compiled import CompiledProblem
from .errors import ModelError
from .solution import Solution

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

__all__ = ["GradientCheck", "GradientCheckRow", "check_gradients"]



@dataclass(frozen=True)
class GradientCheckRow:
    """The check of one parameter.

    Attributes
    ----------
    parameter : str
        Parameter name.
    finite_difference, forward, reverse : float
        The directional derivative of the random loss, three ways.
    forward_error, reverse_error : float
        Relative errors of forward and reverse mode against finite differences.
    adjoint_error : float
        Relative difference between forward and reverse mode.
    """

    parameter: str
    finite_difference: float
    forward: float
    reverse: float
    forward_error: float
    reverse_error: float
    adjoint_error: float


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradients`: one row per parameter.

    ``print(check)`` shows a table; ``check.ok`` is True when every error is
    within ``tol``.
    """

    rows: tuple[GradientCheckRow, ...]
    eps: float
    tol: float
    solution_error: float = 0.0

    @property
    def max_error(self) -> float:
        """The largest relative error: of the solution against the reference
        solve, and over all rows and all three comparisons."""
        errors = [max(r.forward_error, r.reverse_error, r.adjoint_error) for r in self.rows]
        return max([self.solution_error, *errors])

    @property
    def ok(self) -> bool:
        """True when :attr:`max_error` is within the tolerance ``tol``."""
        return self.max_error <= self.tol

    def __getitem__(self, name: str) -> GradientCheckRow:
        for row in self.rows:
            if row.parameter == name:
                return row
        raise KeyError(name)

    def __str__(self) -> str:
        head = ("parameter", "finite diff.", "forward", "reverse",
                "fwd err", "rev err", "adj err")
        body = [
            (r.parameter, f"{r.finite_difference:.9g}", f"{r.forward:.9g}",
             f"{r.reverse:.9g}", f"{r.forward_error:.1e}", f"{r.reverse_error:.1e}",
             f"{r.adjoint_error:.1e}")
            for r in self.rows
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(cells, widths)))
                 for cells in (head, *body)]
        lines.insert(1, "  ".join("-" * w for w in widths))
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"solution vs independent reference solve: relative error "
                     f"{self.solution_error:.1e}")
        lines.append(f"{verdict}: max relative error {self.max_error:.1e} "
                     f"(tolerance {self.tol:.0e}, eps {self.eps:.0e})")
        return "\n".join(lines)

    __repr__ = __str__


def _rel(a: float, b: float, scale: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), scale, 1e-300)


def _direction(spec: ParamSpec, value: FloatArray, rng: np.random.Generator,
               eps: float) -> FloatArray:
    """A random unit direction along which θ ± εv keeps the parameter's declared attributes."""
    v = rng.standard_normal(value.shape)
    attr = spec.attribute
    if attr("diag"):
        v = np.diag(np.diag(v))
    if attr("symmetric") or attr("PSD") or attr("NSD"):
        v = 0.5 * (v + v.T)
    if attr("PSD") or attr("NSD"):
        # Stay in the face of the cone: move only within the range of the value.
        w, U = np.linalg.eigh(0.5 * (value + value.T))
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        V = U[:, np.abs(w) > 1e3 * eps * scale]
        v = V @ (V.T @ v @ V) @ V.T
    limit = 2 * eps * max(1.0, float(np.max(np.abs(value), initial=0.0)))
    if attr("nonneg") or attr("pos"):
        v = np.where(value > limit, v, 0.0)
    if attr("nonpos") or attr("neg"):
        v = np.where(value < -limit, v, 0.0)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def check_gradients(
    model: Model | Solution,
    wrt: str | Iterable[str] | None = None,
    eps: float = 1e-6,
    seed: int | None = 0,
    tol: float = 1e-6,
) -> GradientCheck:
    """Compare a solution's derivatives with finite differences of an independent solver.

    The reference solves the KKT system of the compiled problem at θ ± εv
    with a dense LU (LAPACK, partial pivoting, after a simple diagonal
    scaling) refined with residuals in extended precision, or with SciPy's
    sparse LU for large systems: none of diffmodel's factorization,
    equilibration or refinement code. The solution itself is compared with
    the reference solve at θ too (``solution_error``), so a biased solve is
    caught even where the derivatives do not depend on the solution.

    Parameters
    ----------
    model : Model or Solution
        A solved model (its latest solution is checked) or a solution.
    wrt : str or iterable of str, optional
        Parameter name(s) to check (default: all).
    eps : float, default 1e-6
        Step, relative to max(1, max |θ|) of each parameter.
    seed : int or None, default 0
        Seed of the random directions and loss weights.
    tol : float, default 1e-6
        Relative error below which :attr:`GradientCheck.ok` is True.

    Returns
    -------
    GradientCheck
        A per-parameter table of the three estimates and their errors.

    Raises
    ------
    NotSolvedError
        If the model has not been solved.
    ModelError
        For an unknown parameter name.

    Notes
    -----
    Nothing is re-solved with the model, and no CVXPY object is changed.

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(3, name="x")
    >>> b = cp.Parameter(name="b", value=1.0)
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"sum": cp.sum(x) == b})
    >>> _ = model.solve()
    >>> dm.check_gradients(model).ok
    True
    """
    from .model import Model

    if isinstance(model, Model):
        sol = model._require_latest("check_gradients()")  # noqa: SLF001 - the shared guard
    elif isinstance(model, Solution):
        sol = model
    else:
        raise ModelError("check_gradients() needs a diffmodel.Model or Solution, got "
                         f"{type(model).__name__}")
    point, packer = sol._parts()  # noqa: SLF001
    layout = packer.layout
    names = (list(layout.parameters) if wrt is None else [wrt] if isinstance(wrt, str)
             else list(wrt))
    for name in names:
        if name not in layout.parameters:
            raise ModelError(
                f"check_gradients(): unknown parameter name {name!r} "
                f"(the model's parameters: {', '.join(map(repr, layout.parameters)) or 'none'})")
    rng = np.random.default_rng(seed)
    g_primal = {k: rng.standard_normal(np.shape(v)) for k, v in sol.primal.items()}
    g_dual = {k: rng.standard_normal(np.shape(v)) for k, v in sol.dual.items()}
    gx, gy = packer.outputs(g_primal, g_dual, "check_gradients()")
    reference = _Reference(point.problem, point.rows)
    base = reference.solve(point.theta)
    solution_error = _solution_error(base, point.x, point.y[point.rows])

    def loss(z: tuple[FloatArray, FloatArray]) -> float:
        y = np.zeros(layout.rows)
        y[point.rows] = z[1]
        return float(gx @ z[0] + gy @ y)

    grads = sol.backward(g_primal, dual=g_dual)
    rows = []
    for name in names:
        block = layout.parameters[name]
        value = block.take(point.theta, 1)
        v = _direction(packer.specs[name], value, rng, eps)
        dz = sol.derivative({name: v})
        forward = float(sum(np.sum(g_primal[k] * dz[k]) for k in g_primal)
                        + sum(np.sum(g_dual[k] * dz[k]) for k in g_dual))
        reverse = float(np.sum(grads[name] * v))
        h = eps * max(1.0, float(np.max(np.abs(value), initial=0.0)))
        dtheta = np.zeros_like(point.theta)
        block.put(dtheta, v, 1)
        fd = (loss(reference.solve(point.theta + h * dtheta))
              - loss(reference.solve(point.theta - h * dtheta))) / (2 * h)
        scale = 1e-8 * (1.0 + abs(loss(base)))
        rows.append(GradientCheckRow(name, fd, forward, reverse, _rel(forward, fd, scale),
                                     _rel(reverse, fd, scale), _rel(forward, reverse, scale)))
    return GradientCheck(tuple(rows), eps, tol, solution_error)


def _solution_error(ref: tuple[FloatArray, FloatArray], x: FloatArray, y: FloatArray) -> float:
    z_ref = np.concatenate(ref)
    z = np.concatenate([x, y])
    return float(np.max(np.abs(z - z_ref), initial=0.0)
                 / max(float(np.max(np.abs(z_ref), initial=0.0)), 1e-300))


class _Reference:
    """Solves K z = (−q, c_R) at any θ̃ with LAPACK or SuperLU, refined in extended precision."""

    #: Dense LU up to this dimension, SciPy's sparse LU above.
    DENSE = 2000

    def __init__(self, problem: CompiledProblem, rows: IntArray) -> None:
        self.problem, self.rows = problem, rows

    def solve(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        problem, rows, n = self.problem, self.rows, self.problem.n
        data = problem.data(theta)
        C = problem.M_matrix(data)[rows]
        K = sp.csr_matrix(sp.bmat([[problem.P_matrix(data), C.T], [C, None]]))
        rhs = np.concatenate([data.rhs[:n], data.rhs[n + rows]])
        # A simple symmetric diagonal scaling (one Jacobi step, not equilibration).
        row_max = np.asarray(abs(K).max(axis=1).toarray(), dtype=np.float64).ravel()
        d = 1.0 / np.sqrt(np.where(row_max > 0, row_max, 1.0))
        Ks = sp.csr_matrix(sp.diags(d) @ K @ sp.diags(d))
        # Residuals in extended precision, corrections with the factored matrix.
        exact = sp.csr_matrix((Ks.data.astype(np.longdouble), Ks.indices, Ks.indptr),
                              shape=Ks.shape)
        solve: Callable[[FloatArray], FloatArray]
        if K.shape[0] <= self.DENSE:
            lu = scipy.linalg.lu_factor(Ks.toarray())
            solve = functools.partial(scipy.linalg.lu_solve, lu)
        else:
            solve = spla.splu(sp.csc_matrix(Ks)).solve
        rs = rhs * d
        z = np.asarray(solve(rs), dtype=np.float64)
        for _ in range(3):
            res = np.asarray(rs.astype(np.longdouble) - exact @ z.astype(np.longdouble),
                             dtype=np.float64)
            z = z + np.asarray(solve(res), dtype=np.float64)
        z = z * d
        return z[:n], z[n:]
