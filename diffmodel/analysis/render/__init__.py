"""Renderings of the analysis results.

Every rendering of a :class:`~diffmodel.analysis.SensitivityReport` shows the
same content, built once by :mod:`.content` as sections of paragraphs,
tables and plots, and written by :mod:`.text` (terminal), :mod:`.markdown`,
:mod:`.html` (one self-contained page) and :mod:`.plots` (matplotlib
figures, PNG); :mod:`.frames` gives the numbers as a pandas DataFrame or
JSON. These modules take the result objects and never import
:mod:`diffmodel.analysis.results` at run time (the results' methods call
them). matplotlib and pandas are imported only when a plot or a DataFrame is
made, through :func:`require`: they belong to the ``report`` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRA_HINT", "require"]

#: How to install the optional dependencies of plots, HTML and DataFrames.
EXTRA_HINT = 'pip install "diffmodel[report]"'


def require(module: str, what: str) -> ModuleType:
    """Import an optional dependency.

    Parameters
    ----------
    module : str
        The module to import (``"matplotlib"``, ``"pandas"``).
    what : str
        What needs it, for the error message.

    Returns
    -------
    module

    Raises
    ------
    ImportError
        If it is not installed, naming the ``report`` extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, which is not installed: "
            f"install the report extra with {EXTRA_HINT}") from exc
