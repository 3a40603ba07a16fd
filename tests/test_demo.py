"""The bundled sample, its JSON-lines form and the demo."""

from __future__ import annotations

import datetime as dt
import io
import json
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cohorts
from cohorts import demo
from cohorts.sample import (
    SAMPLE_NOW,
    SCENARIOS,
    RecordError,
    from_record,
    read_jsonl,
    sample_customers,
    sample_schema,
    to_record,
    write_jsonl,
)


@pytest.fixture(scope="module")
def sample() -> list[cohorts.Customer]:
    """The default-size sample, generated once for the module."""
    return sample_customers()


def test_sample_is_deterministic() -> None:
    """The same seed and now give equal customers; another seed gives others."""
    assert sample_customers(50) == sample_customers(50)
    assert sample_customers(50, seed=1) != sample_customers(50)
    assert [c.id for c in sample_customers(3)] == ["c0001", "c0002", "c0003"]


def test_sample_moves_with_now() -> None:
    """Every date is relative to now: a later now shifts the data, so scenario counts hold."""
    later = SAMPLE_NOW + dt.timedelta(days=400)
    rule = "claim.filed.at within last 3 months"
    base = list(cohorts.compile(rule).select(sample_customers(600), SAMPLE_NOW))
    moved = list(cohorts.compile(rule).select(sample_customers(600, now=later), later))
    assert base == moved
    assert base


def test_sample_size_and_now_are_checked() -> None:
    """A negative size or a naive now is refused with a clear message."""
    with pytest.raises(ValueError, match="size"):
        sample_customers(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        sample_customers(5, now=dt.datetime(2026, 1, 1))


def test_sample_looks_like_a_dealership(sample: list[cohorts.Customer]) -> None:
    """The sample has accented names, both provinces, messy phones and the articles' tags."""
    assert len(sample) == 3000
    names = {c.attributes.get("first_name") for c in sample}
    assert any(n and not n.isascii() for n in names)
    assert {c.attributes["region"] for c in sample} == {"QC", "ON"}
    phones = [c.attributes.get("phone") for c in sample]
    assert any(p and p.startswith("(") for p in phones) and any(p and p.startswith("+1") for p in phones)
    assert any(p == "" for p in phones) and any(p is None for p in phones)
    tags = {t for c in sample for t in c.attributes.get("tags", [])}
    assert {"cat owner", "VIP", "car insurance", "home insurance"} <= tags
    events = {e.name for c in sample for e in c.events}
    assert {"appointment", "repair_order.opened", "repair_order.closed", "message.sent", "invoice"} <= events
    assert {"claim.filed", "return", "new_vehicle.purchased", "review", "note"} <= events
    assert all(e.at <= SAMPLE_NOW for c in sample for e in c.events if e.name != "appointment")


def test_every_scenario_validates_and_matches_some_but_not_all(sample: list[cohorts.Customer]) -> None:
    """Each scenario is valid against the sample schema and selects a real subset."""
    schema = sample_schema()
    for scenario in SCENARIOS:
        ids = list(cohorts.compile(scenario.rule, schema=schema).select(sample, SAMPLE_NOW))
        assert 0 < len(ids) < len(sample), scenario


def test_cell_phone_scenarios_partition_the_sample(sample: list[cohorts.Customer]) -> None:
    """With and without a cell phone are complements: `is known` is two-valued."""
    with_phone = set(cohorts.compile("customer.phone is known").select(sample, SAMPLE_NOW))
    without = set(cohorts.compile("customer.phone is unknown").select(sample, SAMPLE_NOW))
    assert with_phone.isdisjoint(without)
    assert len(with_phone) + len(without) == len(sample)


def test_record_round_trip(sample: list[cohorts.Customer], tmp_path: Path) -> None:
    """Customers written as JSON lines read back equal, once dates are compared as instants."""
    path = tmp_path / "sample.jsonl"
    assert write_jsonl(sample[:200], path) == 200
    back = list(read_jsonl(path.read_text(encoding="utf-8").splitlines()))
    assert all(isinstance(c, cohorts.Customer) for c in back)
    for original, copy in zip(sample[:200], back, strict=True):
        assert to_record(original) == to_record(copy)  # type: ignore[arg-type]
    for scenario in SCENARIOS:
        predicate = cohorts.compile(scenario.rule)
        customers = [c for c in back if isinstance(c, cohorts.Customer)]
        assert list(predicate.select(customers, SAMPLE_NOW)) == list(predicate.select(sample[:200], SAMPLE_NOW))


def test_from_record_shapes() -> None:
    """Nested and flat records both work; flat keys join the attributes."""
    nested = from_record({"id": 1, "attributes": {"city": "Laval"}, "tags": ["VIP"], "events": None})
    assert dict(nested.attributes) == {"city": "Laval", "tags": ["VIP"]}
    event = from_record({"id": "x", "events": [{"name": "invoice", "at": "2026-01-02", "total": 12.5}]}).events[0]
    assert (event.name, event.at, dict(event.attributes)) == ("invoice", dt.datetime(2026, 1, 2), {"total": 12.5})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "a customer is a JSON object, not list"),
        ({"id": True}, '"id" is text or an integer'),
        ({"id": "  "}, '"id" is text or an integer'),
        ({"id": 1, "attributes": []}, '"attributes" is not an object'),
        ({"id": 1, "events": [3]}, "event 1 is not an object"),
        ({"id": 1, "events": [{"at": "2026-01-01"}]}, 'event 1 has no "name"'),
        ({"id": 1, "events": [{"name": "note", "at": "last week"}]}, '"at" is not an ISO date or time'),
        ({"id": 1, "events": [{"name": "note", "at": "2026-01-01", "attributes": 5}]}, '"attributes" is not an object'),
    ],
)
def test_from_record_errors(record: Any, message: str) -> None:
    """Each malformed record says what is wrong."""
    with pytest.raises(RecordError, match=message.replace("(", r"\(")):
        from_record(record)


def test_read_jsonl_numbers_lines() -> None:
    """Bad lines come back as errors with their line numbers; good ones as customers."""
    items = list(read_jsonl(['{"id": "a"}', "  ", "[", '{"id": "a"}', json.dumps({"id": "b", "city": "Lévis"})]))
    assert [type(i).__name__ for i in items] == ["Customer", "RecordError", "RecordError", "Customer"]
    errors = [i for i in items if isinstance(i, RecordError)]
    assert [e.line for e in errors] == [3, 4]
    assert str(errors[1]) == "line 4: id 'a' repeats line 1"


class _FakeRepository(cohorts.MemoryRepository):
    """A stand-in SQL repository that evaluates in memory and can be told to lose a customer."""

    lose: str | None = None

    def __init__(self, url: str, schema: cohorts.Schema | None = None) -> None:
        super().__init__(schema=schema)
        self.url = url

    def select(self, rule: Any, now: dt.datetime | None = None, **kwargs: Any) -> set[Any]:
        found = set(super().select(rule, now, **kwargs))
        found.discard(self.lose)
        return found


def _run(tmp_path: Path, **kwargs: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = demo.run(directory=tmp_path, out=out, **kwargs)
    return code, out.getvalue()


def test_demo_prints_every_scenario_with_its_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo shows each rule, its true count and an explained match."""
    monkeypatch.setattr(demo, "_sql_module", lambda: None)
    code, text = _run(tmp_path, size=400)
    assert code == 0, text
    customers = sample_customers(400)
    schema = sample_schema()
    for number, scenario in enumerate(SCENARIOS, start=1):
        count = len(list(cohorts.compile(scenario.rule, schema=schema).select(customers, SAMPLE_NOW)))
        noun = "customer" if count == 1 else "customers"
        assert f"{number:2}. {scenario.name}: {count:,} {noun}\n    {scenario.rule}\n" in text
    assert text.count("    for example ") == len(SCENARIOS)
    assert "[true] customer.phone is known" in text
    assert "Skipped: this installation has no SQL repository" in text
    assert "Install the sql extra for it: pip install 'cohorts[sql]'" in text
    assert (tmp_path / "customers.jsonl").exists()


def test_demo_checks_sql_against_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a SQL repository the demo compares id sets, and reports a disagreement with exit code 1."""
    fake = types.SimpleNamespace(SQLRepository=_FakeRepository)
    monkeypatch.setattr(demo, "_sql_module", lambda: fake)
    code, text = _run(tmp_path, size=300)
    assert code == 0, text
    assert f"SQLite database: {tmp_path.resolve() / 'customers.db'}" in text
    assert "exactly the same customers" in text

    vip = next(iter(cohorts.compile('customer.tags contains "VIP"').select(sample_customers(300), SAMPLE_NOW)))
    monkeypatch.setattr(_FakeRepository, "lose", vip)
    code, text = _run(tmp_path, size=300)
    assert code == 1
    assert "<-- DIFFERENT" in text
    assert f"PROBLEM: SQL and memory disagree on 'VIP customers': only in memory ['{vip}']" in text


def test_demo_with_db_url_replaces_its_own_customers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--db names the database (password hidden) and the demo's customers are replaced, not doubled."""
    made: list[_FakeRepository] = []

    def repository(url: str, schema: cohorts.Schema | None = None) -> _FakeRepository:
        if not made:
            made.append(_FakeRepository(url, schema))
            made[0].upsert(
                [cohorts.Customer("other", {"tags": ["VIP"]}), cohorts.Customer("c0001", {"tags": ["stale"]})]
            )
        return made[0]

    monkeypatch.setattr(demo, "_sql_module", lambda: types.SimpleNamespace(SQLRepository=repository))
    code, text = _run(tmp_path, size=50, db="postgresql+psycopg://me:secret@db.example/demo")
    assert "Database: postgresql+psycopg://me:***@db.example/demo" in text
    assert "secret" not in text
    assert made[0].get("c0001") == sample_customers(1)[0]
    assert made[0].get("other") is not None  # the host's own customer is untouched, and left out of the comparison
    assert "(1 other customers in this database are left out of the comparison)" in text
    assert code == 0, text


def test_demo_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    """A database URL that cannot be opened is a DatabaseError naming it, password hidden."""
    pytest.importorskip("sqlalchemy")
    if getattr(demo._sql_module(), "SQLRepository", None) is None:
        pytest.skip("no SQL repository in this installation")
    with pytest.raises(cohorts.DatabaseError, match=r"cannot open the database nosuchdriver://me:\*\*\*@host/db"):
        _run(tmp_path, size=5, db="nosuchdriver://me:secret@host/db")


def test_demo_memory_only_and_speed(tmp_path: Path) -> None:
    """The full-size demo without SQL finishes (its time is printed) and names its folder."""
    code, text = _run(tmp_path, sql=False)
    assert code == 0
    assert text.startswith(f"cohorts demo: folder {tmp_path.resolve()}\n")
    assert "3,000 customers of a car dealership" in text
    assert "The same scenarios in a SQL database" not in text



def test_demo_groups_import_campaign_and_report_on_sqlite(tmp_path: Path) -> None:
    """On SQLite the demo builds groups with origins, imports with one bad row, runs campaigns once, reports."""
    pytest.importorskip("sqlalchemy")
    code, text = _run(tmp_path, size=600)
    assert code == 0, text
    customers = sample_customers(600)
    schema = sample_schema()
    escape = demo.DEMO_GROUPS[0][1]
    assert escape is not None
    expected = len(list(cohorts.compile(escape, schema=schema).select(customers, SAMPLE_NOW)))
    assert f"  {expected:>8,}  {'Escape service':<18} rules {expected:,}\n" in text
    assert "excluded by hand" in text
    assert "line 7 (Cell): not a phone number: '514 555 010' (too short)" in text
    assert "Spring clinic now has 9 customers (imported 9)." in text
    rejects = (tmp_path / "rejects.csv").read_text(encoding="utf-8-sig")
    assert "too short" in rejects
    assert "Winter tires             no: not published" in text
    assert "Actions repeated: 0 (each runs exactly once per customer)." in text
    assert "unsubscribed" in text  # suppressed with the reason, not dropped
    assert "sum(invoice.total)" in text


_keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=10) | st.floats(allow_nan=False)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3))
_ids = st.integers(0, 10**9) | st.text(min_size=1, max_size=6).filter(str.strip)
_times = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1), timezones=st.none() | st.just(dt.UTC))
_events = st.builds(
    lambda name, at, attributes: cohorts.Event(name, at, attributes),
    st.sampled_from(["appointment", "repair_order.closed", "claim.filed"]),
    _times,
    st.dictionaries(_keys, _scalars, max_size=3),
)
_customers = st.builds(
    lambda ident, attributes, events: cohorts.Customer(ident, attributes, events),
    _ids,
    st.dictionaries(_keys.filter(lambda k: k not in ("id", "events", "attributes")), _json, max_size=4),
    st.lists(_events, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(_customers)
def test_records_round_trip(customer: cohorts.Customer) -> None:
    """Any customer of JSON-able values comes back equal from its JSON line."""
    line = json.dumps(to_record(customer), ensure_ascii=False)
    [back] = list(read_jsonl([line]))
    assert back == customer


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40) | st.builds(json.dumps, _json), max_size=6))
def test_read_jsonl_never_raises(lines: list[str]) -> None:
    """Whatever the lines hold, read_jsonl yields customers or numbered RecordErrors."""
    for item in read_jsonl(lines):
        assert isinstance(item, cohorts.Customer | RecordError)
        if isinstance(item, RecordError):
            assert 1 <= item.line <= len(lines)


@pytest.mark.postgres
def test_demo_on_postgresql_twice(tmp_path: Path, postgres_url: str) -> None:
    """--db runs the whole demo on PostgreSQL; a second run on the same database works and sends nothing again."""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS cohorts_demo")
        conn.exec_driver_sql("CREATE DATABASE cohorts_demo")
    url = postgres_url.rsplit("/", 1)[0] + "/cohorts_demo"
    try:
        code, text = _run(tmp_path / "first", size=400, db=url)
        assert code == 0, text
        assert "The database and memory select exactly the same customers" in text
        assert "Spring clinic now has 9 customers (imported 9)." in text
        code, text = _run(tmp_path / "second", size=400, db=url)
        assert code == 0, text
        assert "this database ran these campaigns before" in text
        assert "Actions repeated: 0" in text
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE IF EXISTS cohorts_demo WITH (FORCE)")
        admin.dispose()
