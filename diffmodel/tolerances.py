"""Every numerical tolerance of diffmodel, in one place, with its meaning.

All of them are relative: either to the equilibrated KKT matrix, whose rows
have largest entry about 1 (see :mod:`diffmodel.linalg.scaling`), or to the
magnitudes of the terms of the quantity they bound, so that no decision
depends on the units of the data. ``EPS`` is the unit roundoff of float64.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS", "RUIZ_MAX_ITER", "RUIZ_TOL", "REGULARIZATION", "DENSE_MAX_DIM",
    "DENSE_MIN_DENSITY", "DENSE_LARGE_MAX_DIM", "DENSE_LARGE_MIN_DENSITY", "MAX_REFINE", "REFINE_TARGET", "REFINE_GOAL", "REFINE_STALL",
    "BACKWARD_TOL", "EXTRA_TRIGGER", "SINGULAR_COND", "ACCURACY_TOL", "ACCURACY_WARN",
    "CERTIFICATE_TOL", "NULL_ITERATIONS", "ACTIVE_TOL", "DEGENERATE_TOL",
    "MAX_ACTIVE_SET_STEPS", "WARM_ACTIVE_SET_STEPS",
]

#: Unit roundoff of float64 (2⁻⁵³ is half of this; LAPACK's convention is eps).
EPS = float(np.finfo(np.float64).eps)

# ------------------------------------------------------------ equilibration
#: At most this many Ruiz sweeps per factorization (each is O(nnz)).
RUIZ_MAX_ITER = 20
#: Ruiz stops once every row's largest entry lies within [1/(1+tol), 1+tol]
#: of 1 (the scale factors are powers of two, so 1 is reachable only to a
#: factor of about √2; balancing rows to within a factor of 2 is what matters).
RUIZ_TOL = 1.0

# ------------------------------------------------------------ factorization
#: Static regularization δ of the quasi-definite LDLᵀ of the *equilibrated*
#: matrix, K̂ + δ·diag(I, −I). Iterative refinement against the exact K̂
#: removes it; its contraction factor is about δ‖K̂⁻¹‖.
REGULARIZATION = 1e-9
#: KKT systems up to this dimension are factored densely (LAPACK's
#: Bunch–Kaufman LDLᵀ), which is exact (no regularization) and, for small
#: systems, much faster than a sparse factorization.
DENSE_MAX_DIM = 400
#: ... provided at least this fraction of the entries is structurally nonzero,
#: or the system is tiny (at most 64 rows).
DENSE_MIN_DENSITY = 0.05
#: Larger systems up to this dimension are factored densely too when at least
#: DENSE_LARGE_MIN_DENSITY of their entries are nonzero: LAPACK's LDLᵀ of a
#: mostly dense 750 × 750 K took a third of QDLDL's time (21 against 55 ms on
#: one core), and its memory (3 d² doubles) stays below 60 MB.
DENSE_LARGE_MAX_DIM = 1500
DENSE_LARGE_MIN_DENSITY = 0.25

# --------------------------------------------------------------- refinement
#: Refinement steps per right-hand side before the exact fallback is tried.
MAX_REFINE = 12
#: Refinement stops once the componentwise backward error is below this
#: (a small multiple of the roundoff: nothing smaller is meaningful).
REFINE_TARGET = 4 * EPS
#: ... or once the estimated forward error 2·cond(K̂)·ω is below this: a
#: further step, a full solve, would only refine digits beyond the twelfth.
REFINE_GOAL = 1e-12
#: Refinement has stalled when a step reduces the backward error by less
#: than this factor.
REFINE_STALL = 0.5
#: When the estimated forward error after refinement in working precision
#: exceeds this, refinement continues with exact residuals, which recovers
#: the correctly rounded solution for condition numbers up to about 1e15.
EXTRA_TRIGGER = 1e-11
#: A solve is accepted only if its componentwise backward error (Arioli,
#: Demmel and Duff, SIAM J. Matrix Anal. Appl. 10, 1989) is at most this:
#: the computed point is then the exact solution of a problem whose data
#: differ from the user's by at most this much, entry by entry.
BACKWARD_TOL = 1e-12

# ---------------------------------------------------------------- accuracy
#: The equilibrated KKT matrix is treated as singular (the solution is not a
#: unique, differentiable function of the data) when its estimated condition
#: number exceeds this: beyond it double precision cannot tell a singular
#: matrix from a nonsingular one.
SINGULAR_COND = 1e14
#: A solution whose estimated relative forward error exceeds this is refused
#: (status ``"inaccurate"``). In working precision, with a backward error at
#: the roundoff, the estimate reaches it near an equilibrated condition
#: number of 2·10¹³; refinement in extra precision usually brings it back to
#: about ε below :data:`SINGULAR_COND`.
ACCURACY_TOL = 1e-2
#: Above this estimated forward error a solution is returned with an
#: :class:`~diffmodel.AccuracyWarning`.
ACCURACY_WARN = 1e-8

# --------------------------------------------------------------- inequalities
#: Feasibility and dual sign are checked to this relative tolerance, or to
#: ten times the solution's estimated error if larger: a slack may not be
#: below −tol·(|G_i||x| + |h_i|), a multiplier not below −tol·‖ẑ‖∞ in the
#: equilibrated units.
ACTIVE_TOL = 1e-9
#: A binding row whose multiplier is below this (relative, as above, or a
#: hundred times the estimated error) is weakly active (degenerate); so is a
#: row outside the active set whose slack is below it.
DEGENERATE_TOL = 1e-8
#: Primal-dual active-set corrections after OSQP's guess, and after a
#: re-solve that starts from the previous active set.
MAX_ACTIVE_SET_STEPS = 25
WARM_ACTIVE_SET_STEPS = 3

# ------------------------------------------------------------- certificates
#: A direction certifies infeasibility or unboundedness when each entry of
#: its residual is at most this fraction of the magnitudes of its terms, and
#: its right-hand-side (or objective) product is at least this fraction of
#: the magnitude of its terms.
CERTIFICATE_TOL = 1e-6
#: Inverse-iteration steps used to extract a null direction of a singular K̂.
NULL_ITERATIONS = 3
