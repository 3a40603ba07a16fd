"""Where the documentation pages are on this machine, for ``cohorts --help`` and the demo to point at.

The wheel installs the guide's Markdown pages with the package, in ``cohorts/docs/``
(``force-include`` in pyproject.toml); a source checkout has them in ``docs/`` at its root.

Example:
    >>> page("cli.md").endswith("cli.md")
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["page"]

_PACKAGE = Path(__file__).parent
_FOLDERS = (_PACKAGE / "docs", _PACKAGE.parent.parent / "docs")  # installed; a checkout's src/cohorts


def page(name: str) -> str:
    """The path of the documentation page ``name`` (``"cli.md"``), where this installation has it."""
    for folder in _FOLDERS:
        path = folder / name
        if path.is_file():
            return str(path)
    return f"docs/{name} (in the cohorts source)"
