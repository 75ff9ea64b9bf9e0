"""Shared test configuration.

Two policies live here.

**Where the Maros–Mészáros data are.** They sit beside the repository in
``../shared`` (never copied into it); ``DIFFMODEL_MAROS_MESZAROS`` points
``diffmodel.testing`` at them however the package was installed.

**Skips.** On a lean install (``pip install -e ".[test]"``) the tests that
need PyTorch or a benchmark peer skip with a reason. CI installs everything
and sets ``DIFFMODEL_NO_SKIP=1``: the session then fails if anything was
skipped, with two exceptions, both listed at the end of the run:

- tests marked ``@pytest.mark.browser`` (a headless browser may be missing
  even where everything else installs). The marker must be on the test
  function or class, and the skip must happen at setup or in the test (a
  ``skipif`` mark, ``pytest.importorskip`` in the test or a fixture): a module
  that skips while it is being imported is never exempt, since pytest has
  not read its marks yet;
- a peer's own failure at run time (an inaccurate or failed solve reported
  by SCS, diffcp, Clarabel, OSQP, ...), skipped through the
  ``skip_peer_failure`` fixture. That is the peer's luck, not ours, and it
  never reddens CI. A peer that is not installed is a missing install step,
  not a peer failure: it is not exempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

# ---------------------------------------------------------------------------
# Maros–Mészáros data
# ---------------------------------------------------------------------------

_MM = Path(__file__).resolve().parents[2] / "shared" / "data" / "maros-meszaros"
if _MM.is_dir():
    os.environ.setdefault("DIFFMODEL_MAROS_MESZAROS", str(_MM))

# ---------------------------------------------------------------------------
# Skips: peer failures and the no-skip mode of CI
# ---------------------------------------------------------------------------

#: Environment variable that turns the no-skip mode on (``.ci/run`` sets it to 1).
NO_SKIP_ENV = "DIFFMODEL_NO_SKIP"
#: Tests with this marker may skip even in no-skip mode.
BROWSER_MARKER = "browser"
#: ``user_properties`` key with which ``skip_peer_failure`` tags its skips.
PEER_FAILURE = "peer_failure"

SkipPeerFailure = Callable[[str, str], NoReturn]


def _no_skip_mode() -> bool:
    """True when ``$DIFFMODEL_NO_SKIP`` is set, to anything but "", 0, false or no."""
    return os.environ.get(NO_SKIP_ENV, "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def skip_peer_failure(request: pytest.FixtureRequest) -> SkipPeerFailure:
    """Skip the running test because a peer failed on its own.

    Returns
    -------
    callable
        ``skip_peer_failure(peer, reported)`` skips the test with the reason
        ``"peer failure, not diffmodel's: {peer} reported {reported}"`` and
        tags it so that the no-skip mode of CI lets it pass. Call it only
        for a failure of the peer's own computation: a warning it raised, a
        solver error, a status other than solved, or (in the benchmark) a
        disagreement with the exact reference that diffmodel matches. Never
        call it for a peer that is not installed (use ``pytest.importorskip``
        with a reason), nor when diffmodel disagrees with a peer that said it
        succeeded: that is a test failure.
    """

    def skip(peer: str, reported: str) -> NoReturn:
        request.node.user_properties.append((PEER_FAILURE, f"{peer}: {reported}"))
        pytest.skip(f"peer failure, not diffmodel's: {peer} reported {reported}")

    return skip


@dataclass
class _Skips:
    """Skips seen in this session, by kind: reason by node id (pytest may
    report a module that skips at import more than once)."""

    forbidden: dict[str, str] = field(default_factory=dict)
    browser: dict[str, str] = field(default_factory=dict)
    peer_failures: dict[str, str] = field(default_factory=dict)


_SKIPS = _Skips()


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """The reason of a skip report (its longrepr is ``(path, line, reason)``)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module or class skipped while collected: never exempt."""
    if report.skipped:
        _SKIPS.forbidden[report.nodeid] = _skip_reason(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sort each skipped test: browser-marked, peer failure, or forbidden."""
    if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is not a skip
        return
    if BROWSER_MARKER in report.keywords:
        kind = _SKIPS.browser
    elif any(key == PEER_FAILURE for key, _ in report.user_properties):
        kind = _SKIPS.peer_failures
    else:
        kind = _SKIPS.forbidden
    kind[report.nodeid] = _skip_reason(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In no-skip mode, a forbidden skip turns a passing session into a failing one."""
    if (_no_skip_mode() and _SKIPS.forbidden
            and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the exempt skips, and in no-skip mode the skips that failed the session."""
    write = terminalreporter.write_line
    if _SKIPS.peer_failures:
        terminalreporter.section("peer failures (skipped; allowed, also in CI)", sep="-")
        for nodeid, reason in _SKIPS.peer_failures.items():
            write(f"{nodeid}: {reason}")
    if _no_skip_mode():
        if _SKIPS.browser:
            terminalreporter.section(f"browser tests skipped (allowed by {NO_SKIP_ENV})",
                                     sep="-")
            for nodeid, reason in _SKIPS.browser.items():
                write(f"{nodeid}: {reason}")
        if _SKIPS.forbidden:
            terminalreporter.section(f"skips not allowed with {NO_SKIP_ENV}=1: session failed",
                                     sep="-", red=True, bold=True)
            for nodeid, reason in _SKIPS.forbidden.items():
                write(f"{nodeid}: {reason}", red=True)
