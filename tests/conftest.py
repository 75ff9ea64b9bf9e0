"""Shared test configuration."""

from __future__ import annotations

import os
from pathlib import Path

# The Maros–Mészáros data sit beside the repository in ../shared (never copied
# into it); point diffmodel.testing at them however the package was installed.
_MM = Path(__file__).resolve().parents[2] / "shared" / "data" / "maros-meszaros"
if _MM.is_dir():
    os.environ.setdefault("DIFFMODEL_MAROS_MESZAROS", str(_MM))
