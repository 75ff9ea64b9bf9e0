"""The benchmark's quick mode: every installed tool agrees with an exact solve.

Timings are printed by the script, never asserted. ``benchmarks/run.py
--quick`` runs once for this module. diffmodel's tools and the bare limits
must run and agree in every family. Each peer has its own test: it passes
when the peer ran and agreed everywhere, skips with a reason when the peer
is not installed (PyTorch, cvxpylayers and qpth are not in the test extra),
and skips as the peer's failure when the peer itself failed, did not finish,
or disagreed with the exact reference beyond its tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("dense n=10", "banded n=1000", "matrix parameter A 40x200")
#: How to install the peers that the test extra leaves out (see pyproject.toml).
BENCH_INSTALL = ('pip install -e ".[bench]" && pip install --no-deps qpth '
                 "(install a CPU build of PyTorch first to avoid the CUDA one)")

#: ``skip_peer_failure(peer, reported)``, the fixture of conftest.py.
SkipPeerFailure = Callable[[str, str], NoReturn]


def _load_tools() -> ModuleType:
    """benchmarks/tools.py, under a name of its own (it is not a package)."""
    spec = importlib.util.spec_from_file_location("diffmodel_benchmark_tools",
                                                  ROOT / "benchmarks" / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS = _load_tools().TOOLS
PEERS = [name for name, cls in TOOLS.items() if cls.peer]
OURS = [name for name, cls in TOOLS.items() if not cls.peer]


@dataclass(frozen=True)
class QuickRun:
    """One run of ``benchmarks/run.py --quick``."""

    result: subprocess.CompletedProcess[str]
    table: str
    families: list[dict[str, Any]]

    def output(self) -> str:
        return self.result.stdout[-4000:] + self.result.stderr[-4000:]

    def rows(self, tool: str) -> list[tuple[str, dict[str, Any]]]:
        """(family, row) for every family in which ``tool`` was meant to run."""
        return [(fam["family"], row) for fam in self.families for row in fam["rows"]
                if row["tool"] == tool and not row["status"].startswith("not run")]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    out = tmp_path_factory.mktemp("benchmark")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    if not (out / "results.json").exists():
        pytest.fail("benchmarks/run.py --quick wrote no results.json:\n"
                    + result.stdout[-4000:] + result.stderr[-4000:])
    families = json.loads((out / "results.json").read_text())["families"]
    return QuickRun(result, (out / "results.md").read_text(), families)


def _error(row: dict[str, Any]) -> float:
    return max(row["x_err"], row["grad_err"], row.get("forward_err", 0.0))


def test_quick_benchmark_agrees(quick: QuickRun) -> None:
    """diffmodel and the limits run and agree everywhere; only peers may disagree."""
    for family in FAMILIES:
        assert family in quick.table
    assert "| diffmodel |" in quick.table and "| limit: qdldl |" in quick.table
    for tool in OURS:
        rows = quick.rows(tool)
        assert len(rows) == len(quick.families), (tool, quick.output())
        for family, row in rows:
            assert row["status"] == "ok", (family, tool, row["status"], quick.output())
            assert row["agrees"], (family, tool, f"error {_error(row):.1e} > "
                                   f"{row['tolerance']:.0e}")
    # run.py exits 1 on any disagreement, a peer's included (that is the
    # peer's test below); anything else is a crash of the script.
    disagree = [row["tool"] for fam in quick.families for row in fam["rows"]
                if row.get("agrees") is False]
    assert quick.result.returncode == (1 if disagree else 0), quick.output()
    if not disagree:
        assert "all tools agree" in quick.result.stdout


@pytest.mark.parametrize("peer", PEERS, ids=[re.sub(r"\W+", "-", p).strip("-").lower()
                                              for p in PEERS])
def test_quick_benchmark_peer(quick: QuickRun, peer: str,
                              skip_peer_failure: SkipPeerFailure) -> None:
    """The peer ran and agreed with the exact reference in every family it runs in."""
    rows = quick.rows(peer)
    assert rows, f"{peer} was not run in any family"
    missing = [row["status"] for _, row in rows if row["status"].startswith("not installed")]
    if missing:
        pytest.skip(f"benchmark peer {peer!r} is {missing[0]}; to install the peers: "
                    f"{BENCH_INSTALL}")
    failures = [f"{family}: {row['status']}" for family, row in rows if row["status"] != "ok"]
    failures += [f"{family}: error {_error(row):.1e} > tolerance {row['tolerance']:.0e}"
                 for family, row in rows if row["status"] == "ok" and not row["agrees"]]
    if failures:
        skip_peer_failure(f"benchmark peer {peer!r}", "; ".join(failures))
