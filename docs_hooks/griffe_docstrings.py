"""A griffe extension: the package's docstrings, as written, read well by mkdocstrings.

The docstrings are Google style with a few reStructuredText habits, which the
API reference renders as they are meant without touching the source:

* ``Example:`` (singular) is an examples section, so its ``>>>`` lines show as
  a highlighted session; griffe would otherwise make it an admonition of
  plain text.
* Sphinx roles (``:class:`Groups```, ``:func:`~cohorts.sql.to_sql```,
  ``:mod:`.rules```) become links to the object when the reference shows it,
  and plain code when it does not: each target is looked up from where the
  docstring is (its class, its module, its package, ``cohorts``), and the link
  is an *optional* cross-reference, so a target the site does not render never
  fails the strict build.
* A paragraph ending in ``::`` (a literal block follows) ends in ``:``.
* ``.. versionadded:: 0.1`` and ``.. versionchanged:: 0.2`` (with its text)
  become a line of their own: *Added in version 0.1.*

Loaded by mkdocs.yml (``extensions:`` of the python handler).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>mod|class|func|meth|attr|data|exc|obj|const):`(?P<target>[^`]+)`")
_EXAMPLE = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)
_VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. version(?P<what>added|changed|removed|deprecated)::[ \t]*(?P<version>\S+)[ \t]*\n"
    r"(?P<body>(?:(?P=indent)[ \t]+\S.*\n?)*)",
    re.MULTILINE,
)
_VERSION_WORDS = {"added": "Added", "changed": "Changed", "removed": "Removed", "deprecated": "Deprecated"}
_ROOT = "cohorts"


def _exists(collection: griffe.ModulesCollection, path: str) -> bool:
    try:
        collection[path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _candidates(obj: griffe.Object, target: str) -> list[str]:
    """Where ``target`` may be, from ``obj``'s docstring: the nearest scope first."""
    module = obj.module
    package = module if module.is_package else (module.parent or module)
    if target.startswith("."):
        relative = target.lstrip(".")
        return [f"{module.path}.{relative}", f"{package.path}.{relative}"]
    scopes = []
    if obj.is_class:
        scopes.append(obj.path)
    if obj.parent is not None and obj.parent.is_class:
        scopes.append(obj.parent.path)
    scopes += [module.path, package.path, _ROOT]
    return [target, *(f"{scope}.{target}" for scope in scopes)]


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    target = match["target"].strip()
    title = target
    if target.startswith("~"):
        target = target[1:]
        title = target.rsplit(".", 1)[-1]
    if title.startswith("."):
        title = title.lstrip(".")
    if match["role"] in ("func", "meth"):
        title += "()"
    code = f"<code>{html.escape(title)}</code>"
    collection = obj.modules_collection
    for path in _candidates(obj, target):
        if _exists(collection, path):
            return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'
    return code


def _version(match: re.Match[str]) -> str:
    """``.. versionchanged:: 0.2`` and its indented text: a paragraph of its own."""
    body = " ".join(line.strip() for line in match["body"].splitlines() if line.strip())
    words = f"{_VERSION_WORDS[match['what']]} in version {match['version']}"
    text = f"*{words}:* {body}" if body else f"*{words}.*"
    return f"\n{match['indent']}{text}\n\n"


def rewrite(obj: griffe.Object, text: str) -> str:
    """``obj``'s docstring ``text`` as the reference renders it."""
    if not text.endswith("\n"):
        text += "\n"
    text = _VERSION.sub(_version, text)
    text = _EXAMPLE.sub(r"\g<indent>Examples:", text)
    text = _LITERAL.sub(":", text)
    return _ROLE.sub(lambda match: _role(obj, match), text).rstrip("\n")


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


class ReadableDocstrings(griffe.Extension):
    """Rewrites each docstring of the loaded package once it is loaded whole (targets need the whole package)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
