"""The architecture's promises: typed repository protocols, one semantics, dialect objects, rules of any depth."""

from __future__ import annotations

import datetime as dt
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import cohorts
from cohorts import Customer, Event
from cohorts.ast import And, Condition, InGroup, Node, Not, Op, Or, Path
from cohorts.repository import CustomerReader, CustomerWriter, MemoryRepository, StateStore
from cohorts.semantics import kleene, polar_fold

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SRC = pathlib.Path(cohorts.__file__).parent


def _condition(name: str, value: object) -> Condition:
    return Condition(Path("customer", name), Op.EQ, value)


def _not_chain(depth: int) -> Node:
    node: Node = _condition("city", "laval")
    for _ in range(depth):
        node = Not(node)
    return node


def _alternating(depth: int) -> Node:
    node: Node = _condition("city", "laval")
    for level in range(depth):
        other = _condition(f"tag{level % 3}", "x")
        node = And([node, other]) if level % 2 else Or([node, other])
    return node


PEOPLE = [
    Customer(1, {"city": "Laval"}),
    Customer(2, {"city": "Lévis", "tag0": "x", "tag1": "x", "tag2": "x"}),
    Customer("c3", {"tag1": "x"}),
    Customer(4, {"city": "laval", "tag0": "x", "tag1": "x", "tag2": "x"}, [Event("visit", "2026-11-01")]),
]


@pytest.mark.parametrize("rule", [_not_chain(10_000), _not_chain(9_999), _alternating(10_000), _alternating(333)])
def test_deep_rules_select_on_every_backend(make_repository: Callable[..., Any], rule: Node) -> None:
    """A 10,000-deep chain of NOT, or of alternating AND/OR, selects the reference's ids on every backend."""
    repository = make_repository()
    repository.upsert(PEOPLE)
    assert repository.select(rule, NOW) == MemoryRepository(PEOPLE).select(rule, NOW)


def test_deep_rules_answers() -> None:
    """The reference itself answers deep rules as their meaning says."""
    memory = MemoryRepository(PEOPLE)
    assert memory.select(_not_chain(10_000), NOW) == {1, 4}
    assert memory.select(_not_chain(9_999), NOW) == {2}  # known and not laval; c3's city is unknown


def test_deep_rules_to_sql_is_one_statement() -> None:
    """``to_sql`` of a deep rule is one statement: deep groups become common table expressions."""
    sql, params = cohorts.to_sql(_alternating(200), "sqlite", now=NOW)
    assert sql.startswith("WITH ") and sql.count(" AS MATERIALIZED (") > 1
    assert isinstance(params, list)


def test_polar_fold_flattens_what_means_the_same() -> None:
    """NOT chains vanish into polarities, and nested groups of one connective into one group."""
    a, b, c = (_condition(n, "x") for n in "abc")
    rule = And([a, Not(Or([b, Not(c)]))])  # a AND NOT b AND c

    def leaf(node: Condition | InGroup, holds: bool) -> str:
        assert isinstance(node, Condition)
        return node.path.attribute if holds else f"!{node.path.attribute}"

    def join(connective: str, parts: list[str]) -> str:
        return f"{connective}({', '.join(parts)})"

    assert polar_fold(rule, True, leaf, join) == "and(a, !b, c)"
    assert polar_fold(rule, False, leaf, join) == "or(!a, b, !c)"
    assert polar_fold(_not_chain(10_001), True, leaf, join) == "!city"


@pytest.mark.parametrize(
    ("node", "results", "expected"),
    [
        (And([_condition("a", 1), _condition("b", 1)]), [True, None], None),
        (And([_condition("a", 1), _condition("b", 1)]), [False, None], False),
        (Or([_condition("a", 1), _condition("b", 1)]), [True, None], True),
        (Or([_condition("a", 1), _condition("b", 1)]), [False, None], None),
        (Not(_condition("a", 1)), [None], None),
        (Not(_condition("a", 1)), [False], True),
    ],
)
def test_kleene(node: Node, results: list[bool | None], expected: bool | None) -> None:
    """Three-valued AND, OR and NOT, as explain reports them."""
    assert kleene(node, results) is expected


# -- typed protocols ------------------------------------------------------------------


def test_both_repositories_satisfy_the_protocols() -> None:
    """MemoryRepository and SQLRepository are Repository, CustomerReader, CustomerWriter and StateStore."""
    for repository in (MemoryRepository(), cohorts.SQLRepository("sqlite://")):
        assert isinstance(repository, cohorts.Repository)
        for protocol in (CustomerReader, CustomerWriter, StateStore):
            assert all(hasattr(repository, name) for name in vars(protocol) if not name.startswith("_"))


@pytest.mark.parametrize(
    "call",
    [
        lambda thing: cohorts.Groups(thing),
        lambda thing: cohorts.import_file("x.csv", thing),
        lambda thing: cohorts.audience(cohorts.Campaign("c"), thing, None, NOW),
        lambda thing: cohorts.run_campaigns([], thing, None, {}, NOW),
        lambda thing: cohorts.report(thing),
    ],
    ids=["Groups", "import_file", "audience", "run_campaigns", "report"],
)
@pytest.mark.parametrize("thing", [object(), "sqlite://"], ids=["object", "url"])
def test_not_a_repository_is_a_type_error_naming_what_is_missing(call: Callable[[Any], Any], thing: object) -> None:
    """Passing an engine, a URL or anything that is not a repository fails at once, naming what it lacks."""
    with pytest.raises(TypeError, match=r"needs a cohorts\.\w+|is a cohorts\.Groups") as caught:
        call(thing)
    assert type(thing).__name__ in str(caught.value)


def test_an_engine_or_a_host_table_is_refused_by_groups() -> None:
    """``Groups(engine)`` and ``Groups(HostTable)`` are TypeErrors, not a later AttributeError."""
    import sqlalchemy as sa

    with pytest.raises(TypeError, match="Engine lacks"):
        cohorts.Groups(sa.create_engine("sqlite://"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HostTable lacks"):
        cohorts.Groups(cohorts.HostTable("t", id="id", columns={}))  # type: ignore[arg-type]


class Delegating:
    """A third-party repository: everything delegated to a MemoryRepository, nothing inherited."""

    def __init__(self, **options: Any) -> None:
        self._inner = MemoryRepository(**options)

    schema = property(lambda self: self._inner.schema)
    declared_schema = property(lambda self: self._inner.declared_schema)
    tz = property(lambda self: self._inner.tz)
    region = property(lambda self: self._inner.region)

    def get(self, customer_id: Any) -> Customer | None:
        return self._inner.get(customer_id)

    def __iter__(self) -> Iterator[Customer]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)

    def ids(self) -> set[Any]:
        return self._inner.ids()

    def existing(self, customer_ids: Iterable[Any]) -> set[Any]:
        return self._inner.existing(customer_ids)

    def get_many(self, customer_ids: Iterable[Any]) -> dict[Any, Customer]:
        return self._inner.get_many(customer_ids)

    def change_position(self) -> str:
        return self._inner.change_position()

    def changes_since(self, position: str) -> tuple[list[Any], str]:
        return self._inner.changes_since(position)

    def forget_changes(self, position: str) -> None:
        self._inner.forget_changes(position)

    def select(self, rule: Any, now: dt.datetime | None = None, *, groups: Any = None) -> set[Any]:
        return self._inner.select(rule, now, groups=groups)

    def upsert(self, customers: Iterable[Customer]) -> None:
        self._inner.upsert(customers)

    def add_events(self, customer_id: Any, events: Iterable[Event]) -> None:
        self._inner.add_events(customer_id, events)

    def delete(self, *customer_ids: Any) -> int:
        return self._inner.delete(*customer_ids)

    def unsubscribe(self, customer_id: Any) -> None:
        self._inner.unsubscribe(customer_id)

    def declare(self, schema: cohorts.Schema) -> None:
        self._inner.declare(schema)

    def transaction(self) -> Any:
        return self._inner.transaction()

    def group_store(self) -> Any:
        return self._inner.group_store()

    def ledger(self) -> Any:
        return self._inner.ledger()


def test_a_third_party_repository_passes_the_kit_and_keeps_groups() -> None:
    """A backend written against the protocols passes cohorts.testing, and groups persist in its store."""
    from cohorts.testing import check_repository

    check_repository(Delegating, examples=10, zones=("UTC",))
    repository = Delegating()
    repository.upsert(PEOPLE)
    cohorts.Groups(repository).create("Laval", 'customer.city = "laval"')
    assert set(cohorts.Groups(repository).members("Laval", NOW)) == {1, 4}  # a new Groups sees the same store


def test_the_kit_catches_a_wrong_backend() -> None:
    """The kit fails a backend whose select disagrees with the reference."""
    from cohorts.testing import check_repository

    class Wrong(Delegating):
        def select(self, rule: Any, now: dt.datetime | None = None, *, groups: Any = None) -> set[Any]:
            return set(self._inner.ids())  # everyone, whatever the rule

    with pytest.raises(AssertionError, match="memory"):
        check_repository(Wrong, examples=50, zones=("UTC",), deep=False, shrink=False)


# -- one meaning, dialect objects ----------------------------------------------------------------


def test_no_backend_branches_on_the_database_name() -> None:
    """What differs between databases is in the dialect objects: no module outside them compares dialect names."""
    pattern = re.compile(r"""dialect(\.name)?\s*[!=]=\s*["'](sqlite|postgresql)["']|\bself\.pg\b""")
    offenders = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        if path.name != "dialects.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_no_module_imports_private_names_of_another() -> None:
    """Backends render cohorts.semantics; none imports another module's private (underscored) names."""
    pattern = re.compile(r"^from \.+[\w.]* import .*\b_[a-z]\w*", re.MULTILINE)
    offenders = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []


def test_dialects_are_registered_objects() -> None:
    """Each dialect is one object found by name, engine or connection; an unknown name says which exist."""
    import sqlalchemy as sa

    from cohorts.sql import PostgreSQL, SQLite, dialect

    assert isinstance(dialect("sqlite"), SQLite) and isinstance(dialect("postgresql"), PostgreSQL)
    assert dialect(sa.create_engine("sqlite://")) is dialect("sqlite")
    with pytest.raises(ValueError, match="'postgresql' or 'sqlite', not 'oracle'"):
        dialect("oracle")
