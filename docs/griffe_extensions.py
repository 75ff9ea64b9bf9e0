"""Griffe extensions for the API reference of the documentation site.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).

``SphinxRoles``: diffmodel's docstrings are numpydoc with Sphinx roles
(``:class:`~diffmodel.Model```, ``:meth:`backward```, ``:mod:`.labels```) and
reStructuredText literal blocks (a paragraph ending in ``::``). mkdocstrings
renders docstrings as Markdown, where a role would show as ``:class:``
followed by code. Once the package is loaded, this extension rewrites each
role as an *optional* cross-reference of mkdocs-autorefs: a link where the
target is documented on the site, plain code (with the full name as its
tooltip) where it is not, never a warning. The target is resolved as Sphinx
would: absolute, relative to the enclosing package (a leading dot), or a name
in the scope of the documented object. The text shown is the target as
written, its last component only after a ``~``, with ``()`` after a function
or method. A ``::`` that opens a literal block becomes ``:`` (the indented
block is already code in Markdown).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?P<role>class|meth|func|mod|attr|data|exc|obj|const):"
                  r"`(?P<tilde>~?)(?P<target>[^`<>]+)`")
LITERAL_BLOCK = re.compile(r"(?m)(\S)::$|^[ \t]*::[ \t]*\n")
CALLABLE_ROLES = {"func", "meth"}


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined in it (aliases, which are imports, left out)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def _get(pkg: griffe.Module, path: str) -> Any:
    """The object at ``path`` in ``pkg`` (KeyError or an alias error if there is none)."""
    if path == pkg.path:
        return pkg
    if path.startswith(f"{pkg.path}."):
        return pkg[path[len(pkg.path) + 1:]]
    return pkg.modules_collection[path]


def _exists(pkg: griffe.Module, path: str) -> bool:
    try:
        _get(pkg, path)
    except Exception:  # KeyError, or an alias that does not resolve
        return False
    return True


def _is_module(pkg: griffe.Module, path: str) -> bool:
    try:
        return bool(_get(pkg, path).is_module)
    except Exception:
        return False


def _module(obj: griffe.Object) -> griffe.Module:
    while not obj.is_module:
        obj = obj.parent  # type: ignore[assignment]
    return obj  # type: ignore[return-value]


def _resolve(pkg: griffe.Module, obj: griffe.Object, target: str, paths: list[str]) -> str:
    """The full path of ``target`` written in ``obj``'s docstring (``target`` itself if unknown)."""
    if target.startswith("."):
        module = _module(obj)
        base = module.path if module.is_init_module else module.parent.path  # type: ignore[union-attr]
        rest = target.lstrip(".")
        for _ in range(len(target) - len(rest) - 1):  # ``..x`` goes one package up
            base = base.rpartition(".")[0]
        if _exists(pkg, f"{base}.{rest}"):
            return f"{base}.{rest}"
        matches = [p for p in paths if p.endswith(f".{rest}")]
        return matches[0] if len(matches) == 1 else rest
    if _exists(pkg, target):
        return target
    first, _, tail = target.partition(".")
    try:
        resolved = obj.resolve(first)
    except Exception:  # NameResolutionError: a builtin, or not in scope
        return target
    return f"{resolved}.{tail}" if tail else resolved


def _rewrite(pkg: griffe.Module, obj: griffe.Object, text: str, paths: list[str]) -> str:
    def role(match: re.Match[str]) -> str:
        target = match["target"].strip()
        identifier = _resolve(pkg, obj, target, paths)
        # ``from .ranging import ranging`` in a package: the function, not the module.
        last = identifier.rpartition(".")[2]
        if match["role"] != "mod" and _is_module(pkg, identifier) and \
                _exists(pkg, f"{identifier}.{last}"):
            identifier = f"{identifier}.{last}"
        shown = target.rpartition(".")[2] if match["tilde"] else target.lstrip(".")
        if match["role"] in CALLABLE_ROLES:
            shown += "()"
        return (f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    text = ROLE.sub(role, text)
    return LITERAL_BLOCK.sub(lambda m: f"{m[1]}:" if m[1] else "", text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` literal blocks in every docstring of a package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        objects = list(_objects(pkg))
        paths = [o.path for o in objects]
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(pkg, obj, obj.docstring.value, paths)

    on_package_loaded = on_package  # the name of this event before Griffe 2
