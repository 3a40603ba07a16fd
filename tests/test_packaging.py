"""What a user of the installed package and a reader of the documentation site get.

The README opens with the two set-up commands and links nothing that breaks on a
package index; the wheel carries the license and the guide's pages, which
``cohorts --help`` and the demo point to; the API reference renders every public
name with its docstring; the docs build's charts and session blocks work.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import cohorts
from cohorts._docs import page
from cohorts.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# -- installing ------------------------------------------------------------------


def test_readme_opens_with_the_two_setup_commands() -> None:
    """README.md's first block is `make demo` and `make test`, before anything else."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first is not None
    assert text[: first.start()].strip() == "# cohorts"
    commands = [line.split("#")[0].strip() for line in first[1].splitlines()]
    assert commands == ["make demo", "make test"]
    assert 'pip install "cohorts[sql]"' in text


def test_readme_links_work_on_a_package_index() -> None:
    """An index shows README.md away from the repository: every link is absolute."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.MULTILINE)
    assert all(re.match(r"https?://", target) for target in targets), targets


def test_license_is_declared_and_shipped() -> None:
    """The MIT license is a file, named by the metadata (it goes into the wheel's .dist-info)."""
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert "Typing :: Typed" in project["classifiers"]
    assert (ROOT / "src" / "cohorts" / "py.typed").exists()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"Programming Language :: Python :: {version}" in project["classifiers"]


def test_the_wheel_carries_every_page_of_the_guide() -> None:
    """Each page of docs/ (and the notebook, and the embedding example) is force-included in the wheel."""
    included = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    pages = {f"docs/{path.name}" for path in DOCS.glob("*.md")} | {"docs/notebook.ipynb"}
    assert pages <= set(included), sorted(pages - set(included))
    for source, target in included.items():
        assert (ROOT / source).is_file(), source
        assert target == "cohorts/" + source


def test_help_and_demo_point_to_pages_that_exist() -> None:
    """`cohorts --help` names the pages where this installation has them."""
    epilog = build_parser().epilog or ""
    for name in ("cli.md", "language.md"):
        assert Path(page(name)).is_file()
        assert page(name) in epilog
    assert page("nothing.md") == "docs/nothing.md (in the cohorts source)"


# -- the API reference -----------------------------------------------------------


def _directives() -> list[tuple[str, str]]:
    """Each ``::: identifier`` of the API pages, with its options block."""
    found = []
    for path in sorted((DOCS / "api").glob("*.md")):
        found += re.findall(r"^::: (\S+)\n((?:    .*\n)*)", path.read_text(encoding="utf-8"), re.MULTILINE)
    return found


def _resolve(identifier: str) -> Any:
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise LookupError(identifier)


def _rendered() -> list[tuple[str, Any]]:
    """Every object the API reference renders: the directives' objects, and the members of whole modules."""
    rendered = []
    for identifier, options in _directives():
        target = _resolve(identifier)
        rendered.append((identifier, target))
        if isinstance(target, ModuleType) and "members: false" not in options:
            rendered += [(f"{identifier}.{name}", getattr(target, name)) for name in target.__all__]
    return rendered


REQUIRED = [
    *(f"cohorts.{name}" for name in cohorts.__all__),
    *(f"cohorts.sql.{name}" for name in ("SQLRepository", "HostTable", "HostEvents", "JsonField", "to_sql")),
    *(f"cohorts.sql.dialects.{name}" for name in ("Dialect", "SQLite", "PostgreSQL", "dialect", "register")),
    *(f"cohorts.semantics.{name}" for name in importlib.import_module("cohorts.semantics").__all__),
    *(f"cohorts.testing.{name}" for name in importlib.import_module("cohorts.testing").__all__),
    *(f"cohorts.repository.{name}" for name in ("CustomerReader", "CustomerWriter", "StateStore", "Repository")),
]


@pytest.mark.parametrize("identifier", REQUIRED)
def test_api_reference_renders_every_public_name(identifier: str) -> None:
    """Every name of cohorts.__all__, cohorts.sql, the semantics, the test kit and the protocols has its entry."""
    target = _resolve(identifier)
    assert any(_same(found, target) for _, found in _rendered()), f"{identifier} is on no page of docs/api/"


def _same(found: Any, target: Any) -> bool:
    """The same object, or the same definition: a doctest run may have imported its module a second time."""
    if found is target:
        return True
    name = getattr(target, "__qualname__", None)
    same = (getattr(found, "__module__", None), getattr(found, "__qualname__", None))
    return name is not None and same == (target.__module__, name)


def test_every_rendered_name_has_a_docstring() -> None:
    """mkdocstrings leaves out what has no docstring: everything the reference names has one."""
    griffe = pytest.importorskip("griffe")
    package = griffe.load("cohorts", search_paths=[str(ROOT / "src")], resolve_aliases=True)
    missing = []
    for identifier, _ in _rendered():
        found = package[identifier.removeprefix("cohorts.")] if identifier != "cohorts" else package
        if not (found.final_target if found.is_alias else found).docstring:
            missing.append(identifier)
    assert missing == []


# -- the docs build's hooks ------------------------------------------------------


def _hook(name: str) -> ModuleType:
    """A file of docs_hooks/, loaded as MkDocs loads a hook: by path, with its folder on sys.path meanwhile."""
    folder = ROOT / "docs_hooks"
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    saved = sys.path.copy()
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_session_blocks_copy_code_only() -> None:
    """The copy button of a highlighted session copies its code lines, without prompts, output or tags."""
    hooks = _hook("hooks")
    block = (
        '<div class="highlight"><pre><span></span><code><span class="gp">&gt;&gt;&gt; </span>'
        '<span class="n">x</span> <span class="o">=</span> <span class="s2">&quot;a&lt;b&quot;</span>\n'
        '<span class="gp">... </span><span class="mi">1</span>\n'
        '<span class="go">output</span>\n</code></pre></div>'
    )
    code = block.split("<code>", 1)[1].rsplit("</code>", 1)[0]
    assert hooks.session_code(code) == 'x = "a<b"\n1\n'
    marked = hooks.copy_code_only(block)
    assert marked.startswith('<div class="highlight" data-copy="x = &quot;a&lt;b&quot;\n1\n">')
    plain = '<div class="highlight"><pre><span></span><code>make test\n</code></pre></div>'
    assert hooks.copy_code_only(plain) == plain
    markdown = "```python\n>>> 1 + 1  # doctest: +ELLIPSIS\n2\n```\n```python\nx = 1\n```\n"
    assert hooks.sessions_as_pycon(markdown) == "```pycon\n>>> 1 + 1\n2\n```\n```python\nx = 1\n```\n"


def test_benchmark_tables_become_charts() -> None:
    """Each chart marker of performance.md reads its table: one bar per figure, values as the table says."""
    hooks = _hook("hooks")
    text = (DOCS / "performance.md").read_text(encoding="utf-8")
    markers = text.count("<!-- chart ")
    assert markers >= 4
    rendered = hooks.with_charts(text, "performance.md")
    assert rendered.count('<figure class="cohorts-chart">') == markers
    assert "<!-- chart " not in rendered
    assert ">889 ms (a scan)</text>" in rendered and ">0.6 ms (GIN index)</text>" in rendered


def test_chart_figures() -> None:
    """A cell's first figure, in seconds for times, with what the parenthesis after it says."""
    charts = _hook("charts")
    assert charts.figure("**0.41 ms** (goal < 5 ms)") == (0.00041, "time", "0.41 ms (goal < 5 ms)")
    assert charts.figure("34,200 (COPY)") == (34200.0, "", "34,200 (COPY)")
    assert charts.figure("**114×** faster than a full refresh") == (114.0, "×", "114×")
    assert charts.figure("") is None
    with pytest.raises(ValueError, match="mix units"):
        charts.table_chart([["", "a", "b"], ["row", "1 s", "2×"]], "t", "", "row")


def test_campaign_funnel_comes_from_a_real_run() -> None:
    """The funnel chart runs the demo's campaigns: audiences, enrollments and outcomes as the run reported."""
    charts = _hook("charts")
    chart = charts.campaign_funnel()
    names = [group.title for group in chart.groups]
    assert names == ["Escape service reminder", "Spring clinic welcome"]  # the unpublished one is not eligible
    for group in chart.groups:
        audience, enrolled, actions = group.bars
        assert audience.segments[0].value == enrolled.segments[0].value > 0
        assert actions.total == pytest.approx(audience.total)
    assert "<svg" in charts.svg(chart)


def test_group_sizes_chart_comes_from_the_history() -> None:
    """The sizes chart replays the history of real reads: one bar per moment, the sizes groups.sizes gave,
    the time-based group shrinking as repair orders age, the group of groups within it."""
    charts = _hook("charts")
    chart = charts.group_sizes()
    service, mailing = ([bar.total for bar in group.bars] for group in chart.groups)
    assert len(service) == len(mailing) == 7
    assert service[0] > service[-1] > 0 and service == sorted(service, reverse=True)
    assert all(m <= s for m, s in zip(mailing, service, strict=True))
    assert [group.title for group in chart.groups] == ["Escape service", "Escape mailing"]
    assert "<svg" in charts.svg(chart)
