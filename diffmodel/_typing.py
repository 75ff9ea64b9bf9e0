"""Array type aliases shared by the package."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FloatArray", "IntArray", "BoolArray"]

#: Float64 arrays: data, solutions, gradients.
FloatArray = NDArray[np.float64]
#: Integer arrays of any width: indices and patterns (int32 where they fit).
IntArray = NDArray[np.integer[Any]]
#: Boolean masks.
BoolArray = NDArray[np.bool_]
