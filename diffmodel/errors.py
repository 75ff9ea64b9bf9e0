"""Exceptions raised by diffmodel.

Every exception derives from :class:`DiffModelError`, so ``except
dm.DiffModelError`` catches anything the library raises on purpose. Errors
caused by the caller's input (a model that is not a supported QP, a parameter
value of the wrong shape) also derive from :class:`ValueError`, so generic
handlers written for NumPy or SciPy keep working.
"""

from __future__ import annotations

__all__ = [
    "DiffModelError",
    "ModelError",
    "SolverError",
    "DerivativeError",
    "NotSolvedError",
    "AccuracyWarning",
    "DegenerateWarning",
]


class DiffModelError(Exception):
    """Base class of every error raised by diffmodel."""


class ModelError(DiffModelError, ValueError):
    """The model or an input value is not acceptable.

    Raised at construction for a problem diffmodel cannot canonicalize (not a
    quadratic program, not convex, unnamed or duplicate names, unsupported
    constraints), and at call time for bad input values (wrong shape, NaN or
    inf, unknown names).
    """


class SolverError(DiffModelError):
    """The problem has no (unique) optimal solution or the solver failed.

    Attributes
    ----------
    status : str
        One of ``"infeasible"``, ``"unbounded"``, ``"nonconvex"``,
        ``"inaccurate"`` (no solution could be verified to working accuracy),
        ``"solver_error"``.
    """

    def __init__(self, message: str, status: str = "solver_error") -> None:
        super().__init__(message)
        self.status = status


class DerivativeError(DiffModelError):
    """The derivative asked for does not exist or cannot be computed.

    Raised when the KKT matrix is singular at the current solution (redundant
    or dependent constraints, a solution that is not unique), so the solution
    map is not differentiable there.
    """


class NotSolvedError(DerivativeError):
    """A derivative or report was requested before a successful solve."""


class AccuracyWarning(UserWarning):
    """A solution was accepted, but its estimated error exceeds 1e-8.

    The KKT system is ill-conditioned even after equilibration; the
    solution's ``accuracy`` attribute holds the estimate.
    """


class DegenerateWarning(UserWarning):
    """The solution is at a degenerate point of an inequality-constrained QP.

    Some binding rows have a zero multiplier (weakly active) or depend
    linearly on other binding rows. The solution is optimal, but only
    directionally differentiable there: forward mode returns the one-sided
    derivative along the direction given, reverse mode a documented element
    of the generalized Jacobian (see docs/math.md). ``sol.degenerate`` names
    the rows.
    """
