"""The documentation's code runs: each page's Python blocks, in order, as one script.

A page whose code needs an optional package says so in a comment line of its
own, ``<!-- requires: torch, jax -->``; the page then skips, with a reason,
where one of them is not installed (a lean test install). CI installs them
all and forbids that skip (tests/conftest.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)
REQUIRES = re.compile(r"^<!-- requires: (.*?) -->$", flags=re.M)
PAGES = sorted(p for p in (ROOT / "docs").glob("*.md") if BLOCK.search(p.read_text("utf-8")))


def test_the_main_pages_have_code() -> None:
    names = {p.name for p in PAGES}
    assert {"getting-started.md", "api.md", "math.md", "reports.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for line in REQUIRES.findall(text):
        for module in (m.strip() for m in line.split(",")):
            pytest.importorskip(module, reason=f"{page.name} needs {module}: pip install "
                                               f'"diffmodel[{module}]"')
    blocks = BLOCK.findall(text)
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    result = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
