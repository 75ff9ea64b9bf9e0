"""Smoke tests: every example script and the README's code run as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README


def test_demo_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "diffmodel", "demo"], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "dℓ/dA" in result.stdout and "OK: max relative error" in result.stdout
