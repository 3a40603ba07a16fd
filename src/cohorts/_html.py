"""HTML for Jupyter: the ``_repr_html_`` of reports, explanations and previews.

Notebooks show an object through its ``_repr_html_`` method; a terminal uses
``str``. These helpers keep the two in step: a table of plain rows, or the
object's text in a ``<pre>`` block, every value escaped.

Example:
    >>> print(html_table([{"group": "VIP", "customers": 1200}]))
    <table>
    <thead><tr><th style="text-align:left">group</th><th style="text-align:right">customers</th></tr></thead>
    <tbody>
    <tr><td style="text-align:left">VIP</td><td style="text-align:right">1,200</td></tr>
    </tbody>
    </table>
    >>> html_text("a < b")
    '<pre>a &lt; b</pre>'
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["html_table", "html_text", "html_verdicts"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def html_table(rows: Sequence[Mapping[str, Any]], caption: str | None = None) -> str:
    """Rows of dicts as an HTML table: the union of their keys as columns, numbers to the right."""
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    align = {c: "right" if all(_numeric(row.get(c)) for row in rows) else "left" for c in columns}
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    heads = "".join(f'<th style="text-align:{align[c]}">{html.escape(str(c))}</th>' for c in columns)
    out.append(f"<thead><tr>{heads}</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td style="text-align:{align[c]}">{html.escape(_cell(row.get(c)))}</td>' for c in columns
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody>")
    out.append("</table>")
    return "\n".join(out)


def html_text(text: str) -> str:
    """Preformatted text (an explanation, a report's summary), escaped."""
    return f"<pre>{html.escape(text)}</pre>"


_VERDICT = re.compile(r"^(\s*)\[(true|false|unknown)\]", re.MULTILINE)
_COLOURS = {"true": "#1a7f37", "false": "#cf222e", "unknown": "#9a6700"}


def html_verdicts(text: str) -> str:
    r"""Preformatted text whose lines open with a verdict (``[true]``, ``[false]``, ``[unknown]``, as
    explanations do), each verdict coloured and bold; the text itself is unchanged, escaped.

    Example:
        >>> print(html_verdicts("[false] a AND b\n  [unknown] a"))
        <pre><span class="cohorts-false" style="color:#cf222e;font-weight:bold">[false]</span> a AND b
          <span class="cohorts-unknown" style="color:#9a6700;font-weight:bold">[unknown]</span> a</pre>
    """

    def mark(found: re.Match[str]) -> str:
        verdict = found.group(2)
        style = f"color:{_COLOURS[verdict]};font-weight:bold"
        return f'{found.group(1)}<span class="cohorts-{verdict}" style="{style}">[{verdict}]</span>'

    return f"<pre>{_VERDICT.sub(mark, html.escape(text))}</pre>"
