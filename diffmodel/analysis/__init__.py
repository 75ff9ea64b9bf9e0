"""Sensitivity reports, first-order predictions and sweeps at a solution.

Every analysis is a function of a :class:`~diffmodel.Solution` and uses that
solution's own factorization (``Solution.sensitivity``, ``.predict`` and
``.sweep``, and the ``Model`` shortcuts for the latest solution, call these):

- :func:`sensitivity`: a :class:`SensitivityReport` with the objective
  sensitivity ∂f*/∂θ and its elasticities, the shadow price of every
  constraint, blocks of the solution Jacobian dz/dθ computed in chunks with
  capped storage, and rankings of the most influential parameter entries;
- :func:`predict`: the first-order :class:`Prediction` of the solution for a
  parameter change;
- :func:`sweep`: a :class:`Sweep` comparing first-order predictions with
  re-solves along a path of one parameter;
- :func:`ranging`: a :class:`ParameterRange` per parameter, the interval
  over which each entry can move before the active set changes, with the
  :class:`RangeLimit` (the row that enters or leaves) at each end.

The modules read one way: :mod:`.labels` (entry labels and constraint
sides) and :mod:`.results` (the frozen result classes, whose rendering
methods call :mod:`.render`) are used by :mod:`.whatif`, :mod:`.blocks`
(the Jacobian blocks), :mod:`.ranging` (with its numbers in :mod:`._ratio`)
and :mod:`.sensitivity`, which calls the others. Plots and DataFrames need the ``report`` extra
(``pip install "diffmodel[report]"``); importing this package does not
import matplotlib or pandas.
"""

from __future__ import annotations

from .results import (
    BlockSensitivity, Entry, Influence, ObjectiveSensitivity, Prediction, Ranking,
    SensitivityReport, ShadowPrice, Sweep,
)
from .ranging import ParameterRange, RangeLimit, ranging
from .scenarios import QUANTILES, ScenarioReport, scenario_frame, scenario_sensitivity
from .sensitivity import sensitivity
from .whatif import predict, sweep

__all__ = [
    "sensitivity",
    "predict",
    "sweep",
    "ranging",
    "SensitivityReport",
    "ObjectiveSensitivity",
    "ShadowPrice",
    "BlockSensitivity",
    "Entry",
    "Influence",
    "Ranking",
    "Prediction",
    "Sweep",
    "ParameterRange",
    "RangeLimit",
    "scenario_sensitivity",
    "scenario_frame",
    "ScenarioReport",
    "QUANTILES",
]
