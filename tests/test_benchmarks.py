"""The benchmark's quick mode: every installed tool agrees with an exact solve.

Timings are printed by the script, never asserted. Peers that are not
installed show up as skipped rows; diffmodel and the bare limit always run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_agrees(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = (tmp_path / "results.md").read_text()
    for family in ("dense n=10", "banded n=1000", "matrix parameter A 40x200"):
        assert family in table
    assert "| diffmodel |" in table and "| limit: qdldl |" in table
    assert "all tools agree" in result.stdout
