"""Reports by customer group: measures, date ranges, rows and tables, and the ``cohorts report`` command."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event
from cohorts.groups import Groups
from cohorts.reports import Measure, format_table, report

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


def _customers() -> list[Customer]:
    return [
        Customer(
            1,
            {"city": "Laval"},
            [
                Event("invoice", dt.datetime(2026, 10, 1, 0, 0, tzinfo=dt.UTC), {"total": 100}),
                Event("invoice", dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.UTC), {"total": "50.5"}),
                Event("invoice", dt.datetime(2026, 11, 1, tzinfo=dt.UTC), {"total": 1000}),
                Event("time_entry", dt.datetime(2026, 10, 5, tzinfo=dt.UTC), {"minutes": 30}),
            ],
        ),
        Customer(
            2,
            {"city": "Laval"},
            [
                Event("invoice", dt.datetime(2026, 9, 30, 23, 59, tzinfo=dt.UTC), {"total": 7}),
                Event("invoice", dt.datetime(2026, 10, 15, tzinfo=dt.UTC), {"total": None}),
            ],
        ),
        Customer(3, {"city": "Lévis"}, [Event("time_entry", dt.datetime(2026, 10, 6, tzinfo=dt.UTC), {"minutes": 90})]),
    ]


@pytest.fixture
def groups(make_repository: Callable[..., Any]) -> Groups:
    """Two groups over three customers, on each backend; customer 1 is in both."""
    repo = make_repository()
    repo.upsert(_customers())
    found = Groups(repo)
    found.create("Laval", 'customer.city = "Laval"')
    found.create("VIP")
    found.add("VIP", 1, 3, now=NOW)
    return found


def test_customer_counts_count_a_customer_in_each_group(groups: Groups) -> None:
    """The default measure counts members; a customer in two groups counts in both."""
    rows = report(groups, now=NOW)
    assert rows == [{"group": "Laval", "customers": 2}, {"group": "VIP", "customers": 2}]


def test_sum_count_and_average_within_a_date_range(groups: Groups) -> None:
    """Event measures take events with start <= at < end; unknown values are left out of sums and averages."""
    october = {"start": dt.date(2026, 10, 1), "end": dt.date(2026, 11, 1), "now": NOW}
    sums = report(groups, "sum(invoice.total)", **october)
    assert sums == [
        {"group": "Laval", "customers": 2, "sum(invoice.total)": 150.5},
        {"group": "VIP", "customers": 2, "sum(invoice.total)": 150.5},
    ]
    counts = report(groups, "count(invoice)", **october)
    assert [r["count(invoice)"] for r in counts] == [3, 2]
    averages = report(groups, "average(time_entry.minutes)", names=["vip"], **october)
    assert averages == [{"group": "VIP", "customers": 2, "average(time_entry.minutes)": 60.0}]
    everything = report(groups, "sum(invoice.total)", names=["Laval"], now=NOW)
    assert everything[0]["sum(invoice.total)"] == 1157.5
    empty = report(groups, "average(invoice.total)", start="2027-01-01", now=NOW)
    assert [r["average(invoice.total)"] for r in empty] == [None, None]


def test_rows_by_origin(groups: Groups) -> None:
    """by="origin" gives one row per group and origin."""
    rows = report(groups, by="origin", names=["VIP"], now=NOW)
    assert rows == [
        {"group": "VIP", "origin": "manual", "customers": 2},
        {"group": "VIP", "origin": "imported", "customers": 0},
        {"group": "VIP", "origin": "rules", "customers": 0},
    ]


def test_reports_print_as_tables(groups: Groups) -> None:
    """str(report) is an aligned table with a header."""
    text = str(report(groups, "sum(invoice.total)", now=NOW))
    assert text.splitlines() == [
        "group  customers  sum(invoice.total)",
        "-----  ---------  ------------------",
        "Laval          2            1,157.50",
        "VIP            2            1,150.50",
    ]
    assert format_table([]) == "(no rows)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customers", Measure("customers")),
        (" Count( invoice ) ", Measure("count", "invoice")),
        ("sum(repair_order.closed.amount)", Measure("sum", "repair_order.closed", "amount")),
        ("avg(invoice.total)", Measure("average", "invoice", "total")),
    ],
)
def test_measures_read_from_text(text: str, expected: Measure) -> None:
    """Measures are read case-insensitively; dotted event names keep all but the last name."""
    assert Measure.parse(text) == expected
    assert Measure.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["total", "sum(invoice)", "median(invoice.total)", "sum()", ""])
def test_bad_measures_are_clear_errors(text: str) -> None:
    """An unknown measure says what measures exist."""
    with pytest.raises(ValueError, match=r"measure|needs an event and a field"):
        Measure.parse(text)


def test_bad_arguments(groups: Groups) -> None:
    """Unknown groupings, reversed ranges and unknown groups are errors."""
    with pytest.raises(ValueError, match="by is"):
        report(groups, by="city", now=NOW)
    with pytest.raises(ValueError, match="end is before start"):
        report(groups, "count(invoice)", start="2026-10-02", end="2026-10-01", now=NOW)
    with pytest.raises(ValueError, match="start is a date"):
        report(groups, "count(invoice)", start="October", now=NOW)
    from cohorts import UnknownGroupError

    with pytest.raises(UnknownGroupError):
        report(groups, names=["Nope"], now=NOW)


@settings(max_examples=30, deadline=None)
@given(
    totals=st.lists(st.tuples(st.integers(0, 3), st.integers(-40, 40), st.integers(0, 500)), max_size=15),
    start_day=st.integers(-20, 20),
    days=st.integers(0, 30),
)
def test_sums_equal_a_direct_computation(totals: list[tuple[int, int, int]], start_day: int, days: int) -> None:
    """The sum per group equals summing the members' events in the range by hand."""
    from cohorts.repository import MemoryRepository

    base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    customers = [
        Customer(
            i, {"n": i}, [Event("invoice", base + dt.timedelta(days=d), {"total": t}) for c, d, t in totals if c == i]
        )
        for i in range(4)
    ]
    groups = Groups(MemoryRepository(customers))
    groups.create("Even", "customer.n in [0, 2]")
    start, end = base + dt.timedelta(days=start_day), base + dt.timedelta(days=start_day + days)
    rows = report(groups, "sum(invoice.total)", start=start, end=end, now=NOW)
    expected = sum(t for c, d, t in totals if c in (0, 2) and start <= base + dt.timedelta(days=d) < end)
    assert rows[0]["sum(invoice.total)"] == expected


def test_report_command(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """cohorts report prints the table, or JSON rows with --json."""
    from cohorts.cli import main
    from cohorts.sql import SQLRepository

    path = str(tmp_path / "r.db")
    repo = SQLRepository(path)
    repo.upsert(_customers())
    Groups(repo).create("Laval", 'customer.city = "Laval"')
    assert (
        main(["report", "--db", path, "--measure", "count(invoice)", "--start", "2026-10-01", "--now", "2026-11-22"])
        == 0
    )
    assert "Laval          2               4" in capsys.readouterr().out
    assert main(["report", "--db", path, "--json", "--by", "origin", "--now", "2026-11-22"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"group": "Laval", "origin": "rules", "customers": 2} in rows
    assert main(["report", "--db", path, "--measure", "median(x.y)"]) == 2
    assert "unknown measure" in capsys.readouterr().err


def test_money_sums_are_exact() -> None:
    """Ten invoices of 0.10 add up to 1.00, not 0.9999999999999999."""
    from cohorts.repository import MemoryRepository

    customer = Customer(1, {}, [Event("invoice", NOW - dt.timedelta(days=d), {"total": 0.1}) for d in range(1, 11)])
    groups = Groups(MemoryRepository([customer]))
    groups.create("All")
    groups.add("All", 1, now=NOW)
    rows = report(groups, "sum(invoice.total)", now=NOW)
    assert rows[0]["sum(invoice.total)"] == 1.0
    assert report(groups, "average(invoice.total)", now=NOW)[0]["average(invoice.total)"] == 0.1


def test_measures_are_checked_like_rules() -> None:
    """A misspelt field of an event the schema knows is an error naming the nearest field, on the API as on
    the CLI; a declared schema checks every measure; events of the host's own pass without one."""
    import cohorts
    from cohorts import MemoryRepository, Schema, UnknownAttributeError

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    events = (Event("invoice", "2026-10-01", {"total": 12}), Event("visit", "2026-10-02", {"minutes": 3}))
    repo = MemoryRepository([Customer(1, {}, events)])
    groups = Groups(repo)
    groups.create("All", "invoice.count >= 1")
    with pytest.raises(UnknownAttributeError, match=r"did you mean 'invoice\.total'"):
        cohorts.report(groups, "sum(invoice.totl)", now=now)
    assert cohorts.report(groups, "sum(visit.minutes)", now=now)[0]["sum(visit.minutes)"] == 3
    own = cohorts.default_schema().add("invoice", "discount", "number")  # a field of the host's own
    assert cohorts.report(groups, "sum(invoice.discount)", now=now, schema=own)[0]["sum(invoice.discount)"] == 0
    with pytest.raises(UnknownAttributeError):
        cohorts.report(groups, "sum(invoice.discount)", now=now)
    repo.declare(Schema({"customer": {}, "invoice": {"total": "number", "note": "text"}}))
    with pytest.raises(UnknownAttributeError, match="unknown event 'visit'"):
        cohorts.report(groups, "sum(visit.minutes)", now=now)
    with pytest.raises(ValueError, match=r"sum\(invoice.note\) needs a number, and invoice.note is text"):
        cohorts.report(groups, "sum(invoice.note)", now=now)
    assert cohorts.report(groups, "sum(invoice.total)", now=now)[0]["sum(invoice.total)"] == 12
