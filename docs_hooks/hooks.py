"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

* Sessions: a fenced block whose first line is a ``>>>`` prompt is highlighted
  as a Python session (``pycon``), whatever its fence says, so output is not
  coloured as code; ``# doctest:`` directives are left out of the page (as
  mkdocstrings leaves them out of docstrings); and the copy button of every session block (the pages'
  and the API reference's examples) copies the code alone, without prompts
  or output, ready to paste into a REPL or a file.
* Charts: ``<!-- chart by="row" title="..." note="..." -->`` above a Markdown
  table adds, under the table, an SVG bar chart of its figures
  (:func:`charts.table_chart`); ``<!-- chart group-sizes -->`` adds the sizes of
  two demo groups over time (:func:`charts.group_sizes`); ``<!-- chart campaign-funnel -->`` adds the
  funnel of the demo's campaign run, which the build runs on the bundled
  sample (under a second). The table stays: it is the chart's text.
"""

from __future__ import annotations

import html
import re
from typing import Any

import charts  # beside this file: MkDocs puts the hook's folder on sys.path while it loads it

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?=(?P=indent)>>> )", re.MULTILINE)
_MARKER = re.compile(r"^<!-- chart (?P<attributes>.*?) -->[ \t]*\n", re.MULTILINE)
_ATTRIBUTE = re.compile(r'(?P<name>[\w-]+)(?:="(?P<value>[^"]*)")?')
_SESSION = re.compile(r'<div class="highlight"><pre><span></span><code>(?P<code>.*?)</code></pre></div>', re.DOTALL)
_PROMPT = re.compile(r'^<span class="gp">(?:&gt;&gt;&gt;|\.\.\.)(?: |</span> ?)(?:</span>)?')
_TAG = re.compile(r"<[^>]+>")
_DIRECTIVE = re.compile(r"^(?P<code>[ \t]*(?:>>>|\.\.\.) .*?)[ \t]+# doctest:[^\n]*$", re.MULTILINE)


def sessions_as_pycon(markdown: str) -> str:
    """``python`` fences that hold a ``>>>`` session become ``pycon`` fences; doctest directives are not shown.

    (The directives stay in the source, which pytest reads: only the rendered page loses them.)
    """
    markdown = _DIRECTIVE.sub(r"\g<code>", markdown)
    return _FENCE.sub(lambda match: f"{match['indent']}```pycon\n", markdown)


def session_code(code_html: str) -> str | None:
    """The code of a highlighted session, prompts and output left out; None when the block is no session."""
    if '<span class="gp">' not in code_html:
        return None
    lines = []
    for line in code_html.split("\n"):
        prompt = _PROMPT.match(line)
        if prompt is not None:
            lines.append(html.unescape(_TAG.sub("", line[prompt.end():])))
    return "\n".join(lines).rstrip() + "\n"


def copy_code_only(page_html: str) -> str:
    """Each session block carries ``data-copy``, the text Material's copy button copies instead of the block's."""

    def mark(match: re.Match[str]) -> str:
        code = session_code(match["code"])
        if code is None:
            return match.group(0)
        return match.group(0).replace(
            '<div class="highlight">', f'<div class="highlight" data-copy="{html.escape(code, quote=True)}">', 1
        )

    return _SESSION.sub(mark, page_html)


def _attributes(text: str) -> dict[str, str]:
    return {match["name"]: match["value"] or "" for match in _ATTRIBUTE.finditer(text)}


_drawn: dict[str, str] = {}  # the charts drawn from runs, once per build
_FROM_RUNS = {"campaign-funnel": charts.campaign_funnel, "group-sizes": charts.group_sizes}


def _chart(attributes: dict[str, str], table: list[str], where: str) -> str:
    for name, draw in _FROM_RUNS.items():
        if name in attributes:
            if name not in _drawn:
                _drawn[name] = charts.svg(draw())
            return _drawn[name]
    if not table:
        raise ValueError(f"{where}: a chart marker stands right above a Markdown table")
    chart = charts.table_chart(
        charts.read_table(table), attributes.get("title", ""), attributes.get("note", ""), attributes.get("by", "row")
    )
    return charts.svg(chart)


def with_charts(markdown: str, where: str) -> str:
    """The page with each chart marker replaced by its table (if any) and the chart under it."""
    out: list[str] = []
    position = 0
    for match in _MARKER.finditer(markdown):
        out.append(markdown[position:match.start()])
        rest = markdown[match.end():].split("\n")
        table = []
        for line in rest:
            if not line.startswith("|"):
                break
            table.append(line)
        attributes = _attributes(match["attributes"])
        table_text = "\n".join(table)
        out.append(f"{table_text}\n\n" if table else "")
        out.append(_chart(attributes, table, where) + "\n")
        position = match.end() + len(table_text)
    out.append(markdown[position:])
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return with_charts(sessions_as_pycon(markdown), page.file.src_uri)


def on_page_content(html_text: str, **kwargs: Any) -> str:
    return copy_code_only(html_text)
