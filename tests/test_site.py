"""The documentation site builds with ``mkdocs build --strict``, and has its parts.

``--strict`` turns every warning into a failure: a broken link or anchor in
a page, a page missing from the nav, an object of the API reference that
cannot be found. The test then checks what a reader would look for: the home
page, a reference page per docs/reference/*.md with the objects it names, a
gallery page per example with its source (and its report where
docs/reports.md has one), and that every local link and image of the built
site points to a file. Needs the ``docs`` extra (``pip install -e ".[docs]"``);
skips with that reason without it, which CI's no-skip mode forbids.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
REFERENCE = sorted((ROOT / "docs" / "reference").glob("*.md"))
REASON = 'the documentation site needs the docs extra: pip install -e ".[docs]"'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=REASON)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # a banner of the theme, not a warning
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def _page(site: Path, path: str) -> str:
    page = site / path / "index.html" if path else site / "index.html"
    assert page.is_file(), f"the site has no {page.relative_to(site)}"
    return page.read_text(encoding="utf-8")


def test_home_page(site: Path) -> None:
    html = _page(site, "")
    assert "Exact derivatives of CVXPY quadratic programs" in html
    for page in ("getting-started", "math", "api", "reports", "layers", "performance",
                 "architecture", "reference", "gallery"):
        _page(site, page)


def test_reference_pages_show_the_objects_they_name(site: Path) -> None:
    assert REFERENCE, "docs/reference/ has no pages"
    for source in REFERENCE:
        name = "reference" if source.stem == "index" else f"reference/{source.stem}"
        html = _page(site, name)
        for target in re.findall(r"^::: (\S+)$", source.read_text(encoding="utf-8"), flags=re.M):
            assert f'id="{target}"' in html, f"{name}: {target} is not documented"
        # Sphinx roles in the docstrings are rendered, not shown as markup.
        leftover = re.findall(r":(?:class|meth|func|mod|attr|data|exc|obj):", html)
        assert not leftover, f"{name}: {len(leftover)} Sphinx roles left as text"
    layers = _page(site, "reference/layers")
    for target in ("diffmodel.torch.Layer", "diffmodel.jax.layer"):
        assert f'id="{target}"' in layers, f"reference/layers: {target} is not documented"


def _exports(path: Path) -> list[str]:
    """The names in a module's ``__all__``, read from its source."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [str(ast.literal_eval(e)) for e in node.value.elts]  # type: ignore[attr-defined]
    return []


def test_reference_covers_every_public_name(site: Path) -> None:
    ids = set()
    for page in (site / "reference").rglob("index.html"):
        ids |= set(re.findall(r'id="(diffmodel[\w.]*)"', page.read_text(encoding="utf-8")))
    package = ROOT / "diffmodel"
    modules = {"diffmodel": package / "__init__.py",
               "diffmodel.analysis": package / "analysis" / "__init__.py"}
    modules |= {f"diffmodel.{p.stem}": p for p in
                (package / f"{name}.py" for name in ("testing", "parallel", "torch", "jax"))
                if p.is_file()}
    missing = []
    for module, path in modules.items():
        for name in _exports(path):
            if name.startswith("__"):
                continue
            # Documented where it is defined (diffmodel.SensitivityReport under
            # diffmodel.analysis, a function beside its module of the same name).
            if not any(i == f"{module}.{name}" or i.endswith(f".{name}") for i in ids):
                missing.append(f"{module}.{name}")
    assert not missing, f"not in the API reference (docs/reference/): {', '.join(missing)}"


def test_gallery_has_every_example_with_its_source_and_report(site: Path) -> None:
    index = _page(site, "gallery")
    reports = (ROOT / "docs" / "reports.md").read_text(encoding="utf-8")
    for example in EXAMPLES:
        assert f'href="{example.stem}/"' in index, f"the gallery index misses {example.name}"
        html = _page(site, f"gallery/{example.stem}")
        source = example.read_text(encoding="utf-8")
        summary = (ast.get_docstring(ast.parse(source)) or "").split()[:4]
        text = re.sub(r"<[^>]+>", "", html)
        assert " ".join(summary) in text, f"{example.name}: docstring missing"
        last = next(line for line in reversed(source.splitlines()) if line.strip())
        assert last.strip() in text.replace("&quot;", '"').replace("&#39;", "'"), \
            f"{example.name}: source missing"
        if f"<!-- BEGIN GENERATED: {example.stem} -->" in reports:
            assert 'id="report"' in html and "Objective sensitivity" in html, \
                f"{example.name}: report missing"
            assert f"img/{example.stem}-" in html, f"{example.name}: report plots missing"


def test_links_to_repository_files_go_to_their_pages(site: Path) -> None:
    assert 'href="../benchmarks/results/"' in _page(site, "performance")
    reports = _page(site, "reports")
    assert 'href="../gallery/portfolio/"' in reports
    assert "../examples/" not in reports
    _page(site, "benchmarks/results")


def test_every_local_link_and_image_points_to_a_file(site: Path) -> None:
    broken = []
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        for target in re.findall(r'(?:href|src)="([^"]*)"', html):
            parts = urlsplit(target)
            # Absolute paths (404.html's) depend on where the site is served.
            if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
                continue
            path = (page.parent / unquote(parts.path)).resolve()
            if target.endswith("/") or path.is_dir():
                path = path / "index.html"
            if not path.exists():
                broken.append(f"{page.relative_to(site)}: {target}")
    assert not broken, "\n".join(broken[:20])
