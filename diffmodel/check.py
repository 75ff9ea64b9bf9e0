"""Finite-difference checks of a model's derivatives.

:func:`check_gradients` compares, for each parameter, three numbers along a
random direction v and a random linear loss ℓ(z) = ⟨g, z⟩ over all primal
and dual outputs:

- central finite differences of re-solves: (ℓ(θ + εv) − ℓ(θ − εv)) / 2ε;
- forward mode: ⟨g, derivative(v)⟩;
- reverse mode: ⟨backward(g), v⟩.

The central difference has truncation error O(ε²) and, for a QP, the
solution is smooth in θ wherever the KKT matrix is nonsingular, so agreement
to about 1e-7 relative is expected in float64 with ε ≈ 1e-6 (scaled to the
parameter's magnitude).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .errors import ModelError

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

    @property
    def max_error(self) -> float:
        """The largest relative error over all rows and all three comparisons."""
        return max(
            (max(r.forward_error, r.reverse_error, r.adjoint_error) for r in self.rows),
            default=0.0,
        )

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
        lines.append(f"{verdict}: max relative error {self.max_error:.1e} "
                     f"(tolerance {self.tol:.0e}, eps {self.eps:.0e})")
        return "\n".join(lines)

    __repr__ = __str__


def _rel(a: float, b: float, scale: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), scale, 1e-300)


def _direction(param: object, value: NDArray[np.float64], rng: np.random.Generator,
               eps: float) -> NDArray[np.float64]:
    """A random unit direction along which θ ± εv keeps the parameter's declared attributes."""
    v = rng.standard_normal(value.shape)
    attrs = getattr(param, "attributes", {})
    if attrs.get("diag"):
        v = np.diag(np.diag(v))
    if attrs.get("symmetric") or attrs.get("PSD") or attrs.get("NSD"):
        v = 0.5 * (v + v.T)
    if attrs.get("PSD") or attrs.get("NSD"):
        # Stay in the face of the cone: move only within the range of the value.
        w, U = np.linalg.eigh(0.5 * (value + value.T))
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        V = U[:, np.abs(w) > 1e3 * eps * scale]
        v = V @ (V.T @ v @ V) @ V.T
    if attrs.get("nonneg") or attrs.get("pos"):
        v = np.where(value > 2 * eps * max(1.0, float(np.max(np.abs(value)))), v, 0.0)
    if attrs.get("nonpos") or attrs.get("neg"):
        v = np.where(value < -2 * eps * max(1.0, float(np.max(np.abs(value)))), v, 0.0)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def check_gradients(
    model: "Model",  # noqa: F821
    wrt: str | Iterable[str] | None = None,
    eps: float = 1e-6,
    seed: int | None = 0,
    tol: float = 1e-6,
) -> GradientCheck:
    """Compare the model's derivatives with central finite differences.

    The model must have been solved; the check re-solves it at θ ± εv for
    each parameter and restores the original solution at the end.

    Parameters
    ----------
    model : Model
        A solved model.
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
    Afterwards the model holds its original solution again, but
    ``Parameter.gradient`` and ``Variable.delta`` hold the values of the
    check's random loss and directions.

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

    if not isinstance(model, Model):
        raise ModelError(f"check_gradients() needs a diffmodel.Model, got {type(model).__name__}")
    params = model.parameters
    names = list(params) if wrt is None else [wrt] if isinstance(wrt, str) else list(wrt)
    for name in names:
        if name not in params:
            raise ModelError(
                f"check_gradients(): unknown parameter name {name!r} "
                f"(the model's parameters: {', '.join(map(repr, params)) or 'none'})"
            )
    base = model._ready("check_gradients()").solution  # noqa: SLF001 - shared guard
    values = {name: np.array(p.value, dtype=float) for name, p in params.items()}
    solver = base.solver
    rng = np.random.default_rng(seed)
    g_primal = {k: rng.standard_normal(np.shape(v)) for k, v in base.primal.items()}
    g_dual = {k: rng.standard_normal(np.shape(v)) for k, v in base.dual.items()}

    def loss(primal: dict, dual: dict) -> float:
        return float(sum(np.sum(g_primal[k] * primal[k]) for k in g_primal)
                     + sum(np.sum(g_dual[k] * dual[k]) for k in g_dual))

    grads = model.backward(g_primal, dual=g_dual)
    rows = []
    try:
        for name in names:
            value = values[name]
            v = _direction(params[name], value, rng, eps)
            dz = model.derivative({name: v})
            forward = loss({k: dz[k] for k in g_primal}, {k: dz[k] for k in g_dual})
            reverse = float(np.sum(grads[name] * v))
            h = eps * max(1.0, float(np.max(np.abs(value), initial=0.0)))
            plus = model.solve(solver=solver, **{name: value + h * v})
            minus = model.solve(solver=solver, **{name: value - h * v})
            fd = (loss(plus.primal, plus.dual) - loss(minus.primal, minus.dual)) / (2 * h)
            model.solve(solver=solver, **{name: value})
            scale = 1e-8 * (1.0 + abs(loss(base.primal, base.dual)))
            rows.append(GradientCheckRow(
                name, fd, forward, reverse, _rel(forward, fd, scale),
                _rel(reverse, fd, scale), _rel(forward, reverse, scale),
            ))
    finally:
        model.solve(solver=solver, **values)
    return GradientCheck(tuple(rows), eps, tol)
