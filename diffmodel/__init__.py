"""diffmodel: exact derivatives of CVXPY quadratic programs, by name.

Build a model from CVXPY objects, solve it, and differentiate its solution
with respect to every named parameter::

    import cvxpy as cp, diffmodel as dm
    model = dm.Model(cp.Minimize(...), {"name": lhs == rhs})
    sol = model.solve(b=...)
    grads = model.backward({"x": dl_dx})

See the documentation in ``docs/`` for the mathematics and conventions.
"""

from __future__ import annotations

from .analysis import Prediction, SensitivityReport, Sweep
from .check import GradientCheck, GradientCheckRow, check_gradients
from .errors import (
    AccuracyWarning, DegenerateWarning, DerivativeError, DiffModelError, ModelError,
    NotSolvedError, SolverError,
)
from .model import Model
from .solution import BatchSolution, Solution

__all__ = [
    "Model",
    "Solution",
    "BatchSolution",
    "SensitivityReport",
    "Prediction",
    "Sweep",
    "check_gradients",
    "GradientCheck",
    "GradientCheckRow",
    "DiffModelError",
    "ModelError",
    "SolverError",
    "DerivativeError",
    "NotSolvedError",
    "AccuracyWarning",
    "DegenerateWarning",
    "__version__",
]

__version__ = "0.1.0"
