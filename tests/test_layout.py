"""The package's layout: imports between cohorts' own modules flow one way."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cohorts"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not ``__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], lazy: bool) -> Iterator[ast.stmt]:
    """The statements run when the module is imported (and, if ``lazy``, those of its functions too).

    Blocks under ``if TYPE_CHECKING:`` never run.
    """
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and not lazy:
            continue
        if isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _statements(statement.orelse, lazy)
            continue
        yield statement
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(statement, field, None)
            if isinstance(block, list):
                yield from _statements(block, lazy)


def _dynamic_imports(statement: ast.stmt) -> Iterator[str]:
    """The names given as text to ``importlib.import_module("cohorts....")`` in a statement."""
    for node in ast.walk(statement):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    """Which of cohorts' modules each module imports.

    By default only the imports run when a module is imported: module level, not in
    functions, not under ``if TYPE_CHECKING:``. With ``lazy``, those in functions too,
    and ``importlib.import_module`` calls with a literal name.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for statement in _statements(ast.parse(path.read_text(encoding="utf-8")).body, lazy):
            if isinstance(statement, ast.Import):
                targets.update(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom):
                if statement.level:
                    base = package.split(".")[: len(package.split(".")) - statement.level + 1]
                    source = ".".join([*base, *([statement.module] if statement.module else [])])
                else:
                    source = statement.module or ""
                # `from cohorts.cli import groups` imports the module cohorts.cli.groups.
                targets.update(
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in statement.names
                )
            if lazy:
                targets.update(_dynamic_imports(statement))
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: Mapping[str, set[str]], starts: list[str]) -> list[str] | None:
    """A path of imports from one of ``starts`` back to itself, or None."""
    for start in starts:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for target in sorted(graph.get(node, ())):
                if target == start:
                    return [*path, start]
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    return None


def test_the_graph_sees_the_imports() -> None:
    """The graph finds static, relative, lazy and importlib imports, and skips TYPE_CHECKING ones."""
    graph = import_graph()
    assert {"cohorts.cli.rules", "cohorts.cli._common", "cohorts.cli.demo"} <= graph["cohorts.cli"]
    assert "cohorts.demo" in graph["cohorts.cli.demo"]
    assert "cohorts.sql" not in graph["cohorts.cli._database"]  # only in a function and under TYPE_CHECKING
    assert "cohorts.sql" in import_graph(lazy=True)["cohorts.cli._database"]
    assert "cohorts.sql" in import_graph(lazy=True)["cohorts.demo"]  # importlib.import_module("cohorts.sql")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a"]) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}, ["a", "b", "c"]) is None


def test_no_import_cycles_in_the_package() -> None:
    """No module imports, at import time, a module that imports it back (directly or not)."""
    graph = import_graph()
    cycle = find_cycle(graph, sorted(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycles_even_lazily() -> None:
    """No module is in a cycle, even counting imports in functions and importlib."""
    graph = import_graph(lazy=True)
    assert "cohorts.cli.groups" in graph and "cohorts.sql.groups" in graph
    cycle = find_cycle(graph, sorted(graph))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cli_package_is_imported_one_way() -> None:
    """Command modules never import cohorts.cli itself, and cohorts' other modules never import the CLI."""
    graph = import_graph(lazy=True)
    for name, targets in graph.items():
        if name.startswith("cohorts.cli."):
            assert "cohorts.cli" not in targets, f"{name} imports cohorts.cli"
        elif name not in ("cohorts.cli", "cohorts.__main__"):
            cli = sorted(t for t in targets if t == "cohorts.cli" or t.startswith("cohorts.cli."))
            assert not cli, f"{name} imports {cli}"
