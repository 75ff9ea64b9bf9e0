"""When a number of a report counts as zero: thresholds from the solution's accuracy.

Every number of a sensitivity report is computed from the solution
z = (x, ν) or from solves with its factorization, and is known only to the
error that the solution's accuracy estimate allows. A number within that
error is not resolved: the report shows it as 0 and never ranks it.

The rule
--------
Let K̂ = S K S be the equilibrated KKT matrix (S = diag(s) from Ruiz
scaling of the data), ẑ = S⁻¹z the solution in its units, and a the
solution's accuracy estimate (:attr:`Solution.accuracy`): an estimate of a
bound on max|ẑ − ẑ*| / max|ẑ| (docs/math.md). The *resolution* is

    ρ = max(NOISE_FACTOR · a, EXTRA_TRIGGER) = max(10·a, 1e-11).

Read entry by entry, the accuracy estimate says that zᵢ is known to
ρ·sᵢ·‖ẑ‖∞. From this:

- a dual νᵢ is within its error when |νᵢ| ≤ ρ · sᵢ · ‖ẑ‖∞;
- ∂f*/∂θⱼ = ∂L/∂θⱼ at z (envelope theorem) moves by (∂F/∂θⱼ)ᵀδz when z
  moves by δz (F the KKT residual, whose derivative in z is ∂²L/∂z∂θⱼ), so
  its error is at most ρ · ‖ẑ‖∞ · Σᵢ |∂Fᵢ/∂θⱼ| sᵢ;
- a column dz/dθⱼ of the solution Jacobian solves K dz = −∂F/∂θⱼ with the
  same factorization, refined to the same standard, so entry i is known to
  ρ · sᵢ · ‖S⁻¹ dz/dθⱼ‖∞.

One threshold per group of numbers that share units, the largest of these
bounds over the group: the duals (and prices) of one constraint; the
∂f*/∂θ of one parameter; one block ∂output/∂parameter, where
‖S⁻¹ dz/dθⱼ‖∞ is taken over the reported outputs (all of z when ``of=`` is
not given) and its largest over the parameter's entries. A number at or
below the threshold of its group counts as zero.

Why these constants. The solution and every derivative solve are refined
until the estimated error 2·cond∞(K̂)·max(ω, ε) is below REFINE_GOAL = 1e-12
or the backward error ω is at 4ε; a solve whose estimate is still above
EXTRA_TRIGGER = 1e-11 is refined further with extra-precise residuals. The
derivative solves are accepted at an estimate up to EXTRA_TRIGGER and their
estimates are not kept, so no derivative is credited with less error than
that: hence the floor. The condition estimate behind a may fall short of
the true condition number by a factor of about 3 (Higham's estimator),
which NOISE_FACTOR = 10 covers.

What the threshold is not. It is first order, and it bounds what the solves
certify, normwise per column: an entry above it is resolved, not
necessarily large enough to matter (compare entries of different units
with the elasticities). The scale of a block's columns is taken over the
reported outputs only, so with a narrow ``of=`` the threshold can be lower
than the bound over all of z: an entry shown as 0 is then still within its
error, but an entry shown as nonzero may not be resolved. A parameter that
moves nothing but noise gives a threshold at the noise's own scale, and its
noise stays visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..diff import _dF_times
from ..point import Point
from ..tolerances import EXTRA_TRIGGER
from ._common import FloatArray, IntArray

__all__ = ["NOISE_FACTOR", "RULE", "Resolution", "resolution", "group_threshold",
           "objective_thresholds", "block_thresholds", "significant"]

#: Safety factor on the accuracy estimate (the condition estimate behind it can
#: be low by a factor of about 3).
NOISE_FACTOR = 10.0

#: The rule in one sentence, for reports and data files.
RULE = ("a number counts as zero (shown as 0, never ranked) when it is within the error "
        "that the solution's accuracy estimate allows: |v| ≤ threshold, where threshold = "
        "resolution × the scale of its group (a constraint's duals, one parameter's "
        "∂f*/∂θ, one block ∂output/∂parameter) in the solver's equilibrated units, and "
        "resolution = max(10 × accuracy, 1e-11)")


@dataclass(frozen=True, eq=False)
class Resolution:
    """What the accuracy estimate of one solution allows, entry by entry.

    Attributes
    ----------
    accuracy : float
        The solution's accuracy estimate a.
    relative : float
        ρ = max(NOISE_FACTOR · a, EXTRA_TRIGGER).
    weights : ndarray
        sᵢ for every entry of the stacked (x, y over all rows of M); 0 for
        rows outside the KKT system (their duals and derivatives are exactly 0).
    size : float
        ‖ẑ‖∞ = maxᵢ |zᵢ| / sᵢ.
    """

    accuracy: float
    relative: float
    weights: FloatArray
    size: float

    def error(self, index: IntArray) -> FloatArray:
        """ρ·sᵢ·‖ẑ‖∞: how far entries ``index`` of the stacked (x, y) are known."""
        return np.asarray(self.relative * self.size * self.weights[index], dtype=np.float64)

    def inverse_weights(self, index: IntArray) -> FloatArray:
        """1/sᵢ for entries ``index`` (0 outside the KKT system)."""
        w = self.weights[index]
        return np.asarray(np.divide(1.0, w, out=np.zeros_like(w), where=w > 0),
                          dtype=np.float64)


def resolution(point: Point, accuracy: float) -> Resolution:
    """The :class:`Resolution` of a verified point whose accuracy estimate is ``accuracy``."""
    problem, rows = point.problem, point.rows
    n = problem.n
    s = np.asarray(point.factorization.scale, dtype=np.float64)
    weights = np.zeros(n + problem.layout.rows)
    weights[:n] = s[:n]
    weights[n + rows] = s[n:]
    z = np.concatenate([point.x, point.y])
    live = weights > 0
    size = float(np.max(np.abs(z[live]) / weights[live], initial=0.0))
    relative = max(NOISE_FACTOR * float(accuracy), EXTRA_TRIGGER)
    return Resolution(float(accuracy), relative, weights, size)


def group_threshold(errors: FloatArray) -> float:
    """One threshold for a group: the largest error bound of its entries (0 if none)."""
    return float(np.max(errors, initial=0.0))


def objective_thresholds(point: Point, res: Resolution, columns: Mapping[str, IntArray],
                         budget: int) -> dict[str, float]:
    """The threshold of ∂f*/∂θ for each parameter: ρ·‖ẑ‖∞·maxⱼ Σᵢ |∂Fᵢ/∂θⱼ| sᵢ.

    Parameters
    ----------
    point : Point
    res : Resolution
    columns : dict of str to ndarray of int
        Each parameter's entries in θ̃.
    budget : int
        Entries of one working block (columns of ∂F/∂θ̃ are formed in chunks).
    """
    problem = point.problem
    dim = problem.n + problem.layout.rows
    chunk = max(1, budget // max(dim, 1))
    wx, wy = res.weights[:problem.n], res.weights[problem.n:]
    out = {}
    for name, cols in columns.items():
        worst = 0.0
        for start in range(0, cols.shape[0], chunk):
            c = cols[start: start + chunk]
            X = np.broadcast_to(point.x[:, None], (point.x.shape[0], c.shape[0]))
            Y = np.broadcast_to(point.y[:, None], (point.y.shape[0], c.shape[0]))
            gx, gr = _dF_times(problem, X, Y, None, c)
            terms = wx @ np.abs(gx) + wy @ np.abs(gr)
            worst = max(worst, float(np.max(terms, initial=0.0)))
        out[name] = res.relative * res.size * worst
    return out


def block_thresholds(res: Resolution, out_rows: Mapping[str, IntArray],
                     column_scales: Mapping[str, FloatArray],
                     pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """The threshold of each block ∂o/∂p: ρ · maxᵢ∈o sᵢ · maxⱼ∈p ‖S⁻¹ dz/dθⱼ‖∞.

    Parameters
    ----------
    res : Resolution
    out_rows : dict of str to ndarray of int
        Each reported output's entries in the stacked (x, y).
    column_scales : dict of str to ndarray
        Per parameter, ‖S⁻¹ dz/dθⱼ‖∞ over the reported outputs, one per entry.
    pairs : sequence of (output, parameter)
    """
    out = {}
    for o, p in pairs:
        s_max = float(np.max(res.weights[out_rows[o]], initial=0.0))
        col = float(np.max(column_scales[p], initial=0.0))
        out[o, p] = res.relative * s_max * col
    return out


def significant(values: FloatArray, threshold: float) -> FloatArray:
    """``values`` with every entry at or below ``threshold`` in magnitude set to 0
    (a fresh array; −0.0 reads 0.0)."""
    out = np.where(np.abs(values) <= threshold, 0.0, values) + 0.0
    return np.asarray(out, dtype=np.float64)
