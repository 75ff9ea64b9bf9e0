"""What-if analyses at a solution: first-order predictions and sweeps.

:func:`predict` extrapolates the solution linearly, z + (dz/dθ) δ and
f* + ∇f*·δ, with the solution's own factorization (no solve).
:func:`sweep` compares that extrapolation with re-solves along a path of one
parameter. Re-solves go through the engine that produced the solution: no
CVXPY object and no model state is touched, so the model's latest solution
and its parameters' values are what they were. Their results are
:class:`Prediction` and :class:`Sweep`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .._packing import Packer
from .._validation import check_array, check_names, check_parameter_value
from ..compiled import Block
from ..diff import check_differentiable, objective_gradient, tangent
from ..errors import AccuracyWarning, ModelError, SolverError
from ..point import Point
from ..tolerances import ACCURACY_WARN
from ._common import FloatArray, check_progress, progress_bar, solution_engine, solution_parts
from .render import text

if TYPE_CHECKING:  # pragma: no cover - the analysis sits below the solution
    from ..solution import Solution

__all__ = ["predict", "sweep", "Prediction", "Sweep"]


# ---------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class Prediction:
    """First-order prediction of the solution for a parameter change δ.

    Attributes
    ----------
    delta : dict of str to ndarray
        The change δ by parameter name (copies; parameters not given: 0).
    value : float
        f* + ∇f*·δ (in the sense of the model).
    primal : dict of str to ndarray
        x + (dx/dθ) δ, by variable name.
    dual : dict of str to ndarray
        ν + (dν/dθ) δ, by constraint name (CVXPY's sign convention).
    base_value : float
        f* at the solution.
    """

    delta: Mapping[str, FloatArray]
    value: float
    primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    base_value: float

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {np.shape(v)}" for k, v in {**self.primal, **self.dual}.items())
        return (f"Prediction(value={self.value:.6g}, base_value={self.base_value:.6g}, "
                f"delta=[{', '.join(self.delta)}], solution={{{shapes}}})")


@dataclass(frozen=True, eq=False)
class Sweep:
    """First-order predictions against re-solves along a path of one parameter.

    Attributes
    ----------
    parameter : str
        The parameter moved; every other parameter keeps its value.
    steps : ndarray of shape (k,)
        The path's coordinate: multipliers t (θ = t·θ₀), scalar values, or
        step numbers 0, 1, ... for a path of arbitrary values.
    step_kind : {"multiplier", "value", "index"}
    thetas : ndarray of shape (k, *parameter.shape)
        The parameter's value at each step.
    value, predicted_value : ndarray of shape (k,)
        Re-solved optimal value and f* + ∇f*·(θₖ − θ₀); ``value`` is NaN
        at a step whose solve failed.
    value_error : ndarray of shape (k,)
        |predicted_value − value|.
    primal, predicted_primal : dict of str to ndarray
        By variable name, shape (k, *variable.shape).
    dual, predicted_dual : dict of str to ndarray
        By constraint name, shape (k, *constraint.shape).
    error : ndarray of shape (k,)
        Largest absolute error of the predicted primal and dual entries.
    failures : tuple of (int, str)
        Steps whose re-solve failed, with the error message.
    """

    parameter: str
    steps: FloatArray
    step_kind: str
    thetas: FloatArray
    value: FloatArray
    predicted_value: FloatArray
    value_error: FloatArray
    primal: Mapping[str, FloatArray]
    predicted_primal: Mapping[str, FloatArray]
    dual: Mapping[str, FloatArray]
    predicted_dual: Mapping[str, FloatArray]
    error: FloatArray
    failures: tuple[tuple[int, str], ...] = ()

    def __str__(self) -> str:
        return text.sweep_text(self)

    def __repr__(self) -> str:
        return (f"Sweep(parameter={self.parameter!r}, steps={self.steps.shape[0]}, "
                f"step_kind={self.step_kind!r}, max value_error="
                f"{np.nanmax(self.value_error, initial=0.0):.3g}, max error="
                f"{np.nanmax(self.error, initial=0.0):.3g})")


# ---------------------------------------------------------------- predict


def _delta_vector(packer: Packer, delta: Mapping[str, ArrayLike], call: str
                  ) -> tuple[FloatArray, dict[str, FloatArray]]:
    """dθ̃ for a change by parameter name, and validated copies of the changes."""
    if not isinstance(delta, Mapping):
        raise ModelError(f"{call}: delta must be a dict of parameter name to change")
    parameters = packer.layout.parameters
    check_names(delta, parameters, "parameter", call)
    dtheta = np.zeros(packer.layout.n_theta + 1)
    copies: dict[str, FloatArray] = {}
    for name, value in delta.items():
        block = parameters[name]
        arr = np.array(check_array(value, block.shape, f"{call}: change of parameter '{name}'"))
        block.put(dtheta, arr, 1)
        copies[name] = arr
    return dtheta, copies


def predict(solution: Solution, delta: Mapping[str, ArrayLike]) -> Prediction:
    """First-order prediction of the solution for a change δ of parameters.

    Parameters
    ----------
    solution : Solution
        A solution returned by :meth:`Model.solve`.
    delta : dict of str to array_like
        The change of any subset of parameters, by name, shaped like each.

    Returns
    -------
    Prediction
        z + (dz/dθ) δ for the primal and dual solution (one forward solve
        with the solution's factorization) and f* + ∇f*·δ for the optimal
        value (∇f* by the envelope theorem, no solve).

    Raises
    ------
    ModelError
        For an unknown name, a wrong shape, NaN or inf, or if ``solution`` is
        not a :class:`~diffmodel.Solution`.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> sol = model.solve(b=2.0)
    >>> guess = predict(sol, {"b": 0.5})    # f* = b²/2: 2 + 2·0.5
    >>> guess.value, guess.primal["x"]
    (3.0, array([1.25, 1.25]))
    """
    call = "predict()"
    point, packer = solution_parts(solution, call)
    dtheta, copies = _delta_vector(packer, delta, call)
    check_differentiable(point, call)
    dx, dy = tangent(point, dtheta, call)
    grad = packer.layout.sign * objective_gradient(point)
    primal, dual = packer.solution(point.x + dx, point.y + dy)
    base = float(solution.value)
    return Prediction(delta=copies, value=base + float(grad[1:] @ dtheta[1:]),
                      primal={k: v.copy() for k, v in primal.items()},
                      dual={k: v.copy() for k, v in dual.items()}, base_value=base)


# ---------------------------------------------------------------- sweep


@dataclass(frozen=True, eq=False)
class _Path:
    """The steps of a sweep: their coordinate, its kind, and θₖ for each."""

    kind: str
    steps: FloatArray
    thetas: FloatArray


def _path(packer: Packer, name: str, values: ArrayLike, scale: bool | None,
          p0: FloatArray) -> _Path:
    """Read ``values`` as multipliers, scalar values or a path of values; validate."""
    shape = packer.layout.parameters[name].shape
    try:
        raw = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"sweep(): values for parameter '{name}' must be numeric: {exc}"
                         ) from None
    if raw.ndim == 0:
        raw = raw.reshape(1)
    if raw.shape[0] == 0:
        raise ModelError(f"sweep(): values for parameter '{name}' are empty")
    if not np.isfinite(raw).all():
        raise ModelError(f"sweep(): values for parameter '{name}' contain NaN or inf")
    if raw.ndim == 1 and (scale is True or (scale is None and shape != ())):
        path = _Path("multiplier", raw.copy(), raw.reshape((-1,) + (1,) * len(shape)) * p0)
    elif raw.ndim == 1 and shape == ():
        path = _Path("value", raw.copy(), raw.copy())
    elif raw.shape[1:] == shape and raw.ndim == 1 + len(shape):
        if scale is True:
            raise ModelError(f"sweep(): scale=True needs a 1-D array of multipliers, got "
                             f"shape {raw.shape}")
        path = _Path("index", np.arange(raw.shape[0], dtype=np.float64), raw.copy())
    else:
        raise ModelError(
            f"sweep(): values for parameter '{name}' must have shape (k,) or "
            f"(k, *{shape}), got {raw.shape}" + (
                "; for a scalar parameter scale=False reads (k,) as values" if shape else ""))
    spec = packer.specs[name]
    for i, theta in enumerate(path.thetas):
        check_parameter_value(spec, theta, f"sweep(): parameter '{name}' (step {i})")
    return path


def _predictions(point: Point, packer: Packer, block: Block, p0: FloatArray, path: _Path
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """First-order predictions at every step, with the derivatives at θ₀.

    Returns the predicted x and y (all rows of M) as columns per step, and the
    predicted values.
    """
    size = path.thetas.shape[0]
    # θₖ − θ₀ in θ̃ coordinates, one column per step.
    DT = np.zeros((packer.layout.n_theta + 1, size))
    DT[1 + block.offset: 1 + block.stop, :] = (path.thetas - p0).reshape(
        size, block.size, order="F").T
    if path.kind == "multiplier":  # one direction, scaled: θₖ − θ₀ = (tₖ − 1) θ₀
        direction = np.zeros(packer.layout.n_theta + 1)
        block.put(direction, p0, 1)
        dx, dy = tangent(point, direction, "sweep()")
        DX, DY = np.outer(dx, path.steps - 1.0), np.outer(dy, path.steps - 1.0)
    else:
        DX = np.empty((point.x.shape[0], size))
        DY = np.empty((point.y.shape[0], size))
        for i in range(size):
            DX[:, i], DY[:, i] = tangent(point, DT[:, i], "sweep()")
    grad = packer.layout.sign * objective_gradient(point)
    value = packer.layout.sign * point.value + grad[1:] @ DT[1:]
    return point.x[:, None] + DX, point.y[:, None] + DY, value


def _in_model_terms(exc: SolverError, sign: float) -> str:
    """The message of a failed re-solve, for the model's sense (it may maximize)."""
    message = str(exc)
    if sign < 0 and exc.status == "unbounded":
        message = message.replace("unbounded below", "unbounded above").replace(
            "decreases", "increases")
    return message


@dataclass
class _Resolves:
    """Re-solved points per step (NaN columns for failed steps)."""

    X: FloatArray
    Y: FloatArray
    value: FloatArray
    failures: list[tuple[int, str]]


def _resolve(solution: Solution, point: Point, packer: Packer, block: Block, path: _Path,
             name: str, progress: bool | None) -> _Resolves:
    """Re-solve at every step through the solution's engine; record failures."""
    engine, sign = solution_engine(solution), packer.layout.sign
    size = path.thetas.shape[0]
    out = _Resolves(np.full((point.x.shape[0], size), np.nan),
                    np.full((point.y.shape[0], size), np.nan), np.full(size, np.nan), [])
    inaccurate: list[tuple[int, float]] = []
    bar = progress_bar(size, f"sweep of {name!r}", progress)
    try:
        for i in range(size):
            theta = np.array(point.theta)
            block.put(theta, path.thetas[i], 1)
            try:
                new = engine.solve(theta, solution.solver)
            except SolverError as exc:
                out.failures.append((i, _in_model_terms(exc, sign)))
            else:
                out.X[:, i], out.Y[:, i], out.value[i] = new.x, new.y, sign * new.value
                if new.raw.accuracy > ACCURACY_WARN and new.raw.unique:
                    inaccurate.append((i, new.raw.accuracy))
            bar.update(1)
    finally:
        bar.close()
    if inaccurate:
        steps = ", ".join(str(i) for i, _ in inaccurate)
        worst = max(a for _, a in inaccurate)
        warnings.warn(AccuracyWarning(
            f"sweep of {name!r}: the re-solves at steps {steps} have an estimated relative "
            f"error up to {worst:.1e}: the KKT system is ill-conditioned there"), stacklevel=3)
    return out


def sweep(solution: Solution, name: str, values: ArrayLike, *, scale: bool | None = None,
          progress: bool | None = None) -> Sweep:
    """Compare the first-order prediction with re-solves along a path.

    Parameters
    ----------
    solution : Solution
        A solution returned by :meth:`Model.solve`; the path starts from its
        parameter values θ₀.
    name : str
        The parameter to move (all others keep their values at the solution).
    values : array_like
        The path: shape (k,) of values for a scalar parameter, or of
        multipliers t (θ = t·θ₀) for any other parameter; or shape
        (k, *parameter.shape) of values.
    scale : bool, optional
        Force the reading of a (k,) array as multipliers (True) or, for a
        scalar parameter only, as values (False).
    progress : bool or None, default None
        Progress bar on stderr, as in :func:`~diffmodel.analysis.sensitivity`.

    Returns
    -------
    Sweep
        For each step the re-solved and the predicted optimal value and
        solution, and their errors. Predictions use the derivatives at θ₀:
        z₀ + (dz/dθ)(θₖ − θ₀) and f₀ + ∇f*·(θₖ − θ₀).

    Raises
    ------
    ModelError
        For an unknown name, a path of the wrong shape or with values the
        parameter does not accept, or if ``solution`` is not a
        :class:`~diffmodel.Solution`.
    DerivativeError
        If the KKT matrix is singular at the solution.

    Warns
    -----
    AccuracyWarning
        If a re-solve's estimated error exceeds 1e-8 (one warning per sweep).

    Notes
    -----
    Each step is one solve with the solver of ``solution``, through the
    engine that produced it; a failed step is recorded (NaN values,
    ``failures``) instead of raised. Nothing else changes: the model's
    CVXPY objects, its latest solution and its parameters' values are left
    as they were.

    Examples
    --------
    >>> import cvxpy as cp, diffmodel as dm
    >>> x = cp.Variable(2, name="x")
    >>> b = cp.Parameter(name="b")
    >>> model = dm.Model(cp.Minimize(cp.sum_squares(x)), {"total": cp.sum(x) == b})
    >>> path = sweep(model.solve(b=2.0), "b", [2.0, 3.0])  # f* = b²/2, guess 2 + 2(b − 2)
    >>> path.value, path.predicted_value, path.value_error
    (array([2. , 4.5]), array([2., 4.]), array([0. , 0.5]))
    """
    point, packer = solution_parts(solution, "sweep()")
    check_names([name], packer.layout.parameters, "parameter", "sweep()")
    check_progress(progress, "sweep()")
    block = packer.layout.parameters[name]
    p0 = block.take(point.theta, 1).copy()
    path = _path(packer, name, values, scale, p0)
    check_differentiable(point, "sweep()")
    PX, PY, predicted_value = _predictions(point, packer, block, p0, path)
    actual = _resolve(solution, point, packer, block, path, name, progress)
    primal, dual = packer.solution_batch(actual.X, actual.Y)
    ppred, dpred = packer.solution_batch(PX, PY)
    size = path.thetas.shape[0]
    error = np.zeros(size)
    for key, arr in {**primal, **dual}.items():
        guess = ppred[key] if key in ppred else dpred[key]
        error = np.maximum(error, np.abs(guess - arr).reshape(size, -1).max(axis=1, initial=0.0))
    error = np.where(np.isnan(actual.value), np.nan, error)
    return Sweep(parameter=name, steps=path.steps, step_kind=path.kind, thetas=path.thetas,
                 value=actual.value, predicted_value=predicted_value,
                 value_error=np.abs(predicted_value - actual.value), primal=primal,
                 predicted_primal=ppred, dual=dual, predicted_dual=dpred, error=error,
                 failures=tuple(actual.failures))
