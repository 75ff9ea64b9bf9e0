"""MkDocs hooks of the documentation site (mkdocs.yml, ``hooks:``).

Two things the pages in docs/ cannot do by themselves:

- **The examples gallery.** One page per ``examples/*.py``, made at build
  time from the file itself: its module docstring as the text, the sensitivity
  report that docs/make_report_docs.py generated for it in docs/reports.md
  (between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``)
  where there is one, and its full source. Plus ``gallery/index.md``, which
  lists them. A new example gets its page, and its entry in the nav (after
  the examples that mkdocs.yml lists), without any change here.
- **Links to files outside docs/.** The pages link to the repository's files
  with paths that work when browsing the repository (``../examples/portfolio.py``,
  ``../benchmarks/results.md``, ``../README.md``). On the site such a link
  is rewritten to the page that shows the file: the example's gallery page,
  the benchmark results page (made from benchmarks/results.md here), the
  home page. A link to any other file outside docs/ is left alone, and
  ``--strict`` reports it as broken.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
REPORTS = DOCS / "reports.md"

#: Markdown files of the repository shown as site pages: repository path -> page.
INCLUDED = {f"benchmarks/{name}.md": f"benchmarks/{name}.md"
            for name in ("results", "layers", "sweeps", "inequalities")}

#: An inline Markdown link or image target: ``](target)`` or ``](target "title")``.
LINK = re.compile(r"(?P<open>\]\()(?P<target>[^()\s]+)(?P<close>(?:\s+\"[^\"]*\")?\))")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def _page_for(repo_path: str) -> str | None:
    """The site page (path under docs/) that shows a repository file, if any."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path in ("examples", "examples/"):
        return "gallery/index.md"
    if repo_path in INCLUDED:
        return INCLUDED[repo_path]
    match = re.fullmatch(r"examples/([^/]+)\.py", repo_path)
    if match and (EXAMPLES / f"{match[1]}.py").is_file():
        return f"gallery/{match[1]}.md"
    return None


def _relink(markdown: str, origin: str, page: str) -> str:
    """Point the links of ``markdown`` (written at repository path ``origin``) from ``page``.

    ``page`` is where the text now sits, as a path under docs/. Links that
    stay inside docs/ are rebased onto ``page``; links to a repository file
    that a page shows go to that page; other links are left alone.
    """
    origin_dir = posixpath.dirname(origin)
    page_dir = posixpath.dirname(page)

    def relink(match: re.Match[str]) -> str:
        target = match["target"]
        if target.startswith(("#", "/")) or SCHEME.match(target):
            return match[0]
        path, hash_, fragment = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(origin_dir, path))
        if repo_path.startswith("docs/"):
            if origin == f"docs/{page}":  # a docs/ page in place: its links are right
                return match[0]
            new = repo_path[len("docs/"):]
        else:
            shown = _page_for(repo_path)
            if shown is None:
                return match[0]
            new = shown
        rel = posixpath.relpath(new, page_dir or ".")
        return f"{match['open']}{rel}{hash_}{fragment}{match['close']}"

    return LINK.sub(relink, markdown)


def _fence(code: str) -> str:
    """A code fence longer than any run of backticks in ``code``."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _docstring_markdown(text: str) -> str:
    """A module docstring (reStructuredText-flavoured prose) as Markdown.

    A paragraph that opens a literal block ends in ``:`` rather than ``::``
    (the indented block is code in Markdown too), and an asterisk glued to a
    word on its left (∂cost*/∂d) is escaped, so that two of them in a
    paragraph do not turn the text between them into emphasis. Indented
    blocks and code spans are left as they are.
    """
    lines = []
    for line in text.splitlines():
        if not line.startswith("    "):
            line = re.sub(r"(\S)::$", r"\1:", line)
            pieces = re.split(r"(`+[^`]*`+)", line)
            line = "".join(piece if piece.startswith("`")
                           else re.sub(r"(?<=[^\s*\\])\*(?=[^\s*.,;:!?)\]])", r"\\*", piece)
                           for piece in pieces)
        lines.append(line)
    return "\n".join(lines)


def _generated_report(name: str) -> str | None:
    """The report of example ``name`` in docs/reports.md, with links from docs/."""
    if not REPORTS.is_file():
        return None
    page = REPORTS.read_text(encoding="utf-8")
    match = re.search(rf"<!-- BEGIN GENERATED: {re.escape(name)} -->\n(.*?)"
                      rf"<!-- END GENERATED: {re.escape(name)} -->", page, flags=re.S)
    return match[1].strip() if match else None


def _pages_mentioning(repo_path: str) -> list[tuple[str, str]]:
    """(title, page) of the docs/ pages that mention ``repo_path``."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        if repo_path in text:
            title = re.search(r"^# (.+)$", text, flags=re.M)
            found.append((title[1].strip() if title else page.stem, page.name))
    return found


def _example_page(path: Path) -> str:
    source = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    summary, _, body = doc.partition("\n\n")
    name = path.stem
    repo_path = f"examples/{path.name}"
    parts = [f"# {path.name}", "", f"**{' '.join(summary.split())}**", "",
             _docstring_markdown(body).strip(), ""]
    mentions = _pages_mentioning(repo_path)
    if mentions:
        links = ", ".join(f"[{title}](../{page})" for title, page in mentions)
        parts += [f"Discussed in: {links}.", ""]
    report = _generated_report(name)
    if report is not None:
        parts += [
            "## Report", "",
            f"The sensitivity report of this example, as `python -m diffmodel report "
            f"{repo_path}` prints it in Markdown; [Sensitivity reports](../reports.md) "
            f"explains each section.", "",
            _relink(report, "docs/reports.md", f"gallery/{name}.md"), "",
        ]
    fence = _fence(source)
    parts += ["## Source", "",
              f'{fence}python title="{repo_path}" linenums="1"', source.rstrip("\n"), fence, ""]
    return "\n".join(parts)


def _gallery_index(examples: list[Path]) -> str:
    lines = [
        "# Examples", "",
        "Each page shows one script of the repository's `examples/` folder: what it",
        "models and checks (its docstring), the sensitivity report where it has one,",
        "and its full source. Run one with `python examples/NAME.py` from a clone of",
        "the repository; each exits with a nonzero status if one of its checks fails.", "",
    ]
    for path in examples:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        summary = " ".join(doc.partition("\n\n")[0].split())
        lines.append(f"- [`{path.name}`]({path.stem}.md): {_docstring_markdown(summary)}")
    return "\n".join(lines) + "\n"


def _gallery_section(nav: Any) -> list[Any] | None:
    """The list of mkdocs.yml's nav that holds ``gallery/index.md``, if any."""
    if isinstance(nav, dict):
        nav = list(nav.values())
    if not isinstance(nav, list):
        return None
    if any(entry == "gallery/index.md" or (isinstance(entry, dict)
                                           and "gallery/index.md" in entry.values())
           for entry in nav):
        return nav
    for entry in nav:
        found = _gallery_section(entry)
        if found is not None:
            return found
    return None


def on_files(files: Files, config: Any) -> Files:
    """Add the gallery pages and the pages made from repository files.

    An example that the nav does not list yet is added to the section of
    ``gallery/index.md``, after the ones it lists.
    """
    examples = _examples()
    section = _gallery_section(config.nav)
    if section is not None:
        listed = {v for entry in section if isinstance(entry, dict) for v in entry.values()}
        listed |= {entry for entry in section if isinstance(entry, str)}
        section += [{path.name: f"gallery/{path.stem}.md"} for path in examples
                    if f"gallery/{path.stem}.md" not in listed]
    files.append(File.generated(config, "gallery/index.md", content=_gallery_index(examples)))
    for path in examples:
        files.append(File.generated(config, f"gallery/{path.stem}.md",
                                    content=_example_page(path)))
    for repo_path, page in INCLUDED.items():
        text = (ROOT / repo_path).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=_relink(text, repo_path, page)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Send the links of docs/ pages to repository files to the pages that show them."""
    if page.file.generated_by is not None:  # made above, links already set
        return markdown
    return _relink(markdown, f"docs/{page.file.src_uri}", page.file.src_uri)
