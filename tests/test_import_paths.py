"""The bulk paths an import takes: shadow readings, id lookups, imported group members (issue 5)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import Customer
from cohorts.groups import Groups, Origin
from cohorts.importers import import_file
from cohorts.sql.storage import _DIGIT, _phone_reading, _read_scalar, micros, shadow_of
from cohorts.values import exact_number, fold_text, local_time, to_bool, to_number, to_phone, to_time

TORONTO = zoneinfo.ZoneInfo("America/Toronto")


def _readings_by_definition(raw: Any, tz: dt.tzinfo) -> dict[str, Any]:
    """The readings of a value as the shadow defines them: every reader of cohorts.values, in order."""
    out: dict[str, Any] = {}
    text = fold_text(raw)
    if text is not None:
        out["t"] = text
    maybe = not isinstance(raw, str) or _DIGIT.search(raw) is not None
    number = to_number(raw) if maybe else None
    if number is not None:
        out["n"] = exact_number(number)  # a float of 2**53 and more: the integer it is
    flag = to_bool(raw)
    if flag is not None:
        out["b"] = flag
    time = to_time(raw, tz) if maybe else None
    if time is not None:
        out["m"] = micros(time)
        local = local_time(time, tz)  # None: the date parts are unknown
        if local is not None:
            out["y"], out["mo"], out["d"], out["w"] = local.year, local.month, local.day, local.isoweekday()
    return out


_NUMERIC_CHARS = list("0123456789+-._eEinfatyINFATYxoOuUrRsSlLTZ:W, \t\n\x1c\u00a0é@/")
_SPECIAL = [
    "2026-01-02", " 2026-01-02T10:00+01:00 ", "20260102", "2026-W01-2", "2026-01-02x10:00", "1_000", "1e5",
    " inf", "NaN", "-0", "+5", "1.", ".5", "infinity", "oui", "FALSE ", " 1 ", "+15145550101", "client7@example.com",
]


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(st.text(st.sampled_from(_NUMERIC_CHARS), max_size=25), st.text(max_size=12), st.sampled_from(_SPECIAL))
)
def test_text_readings_skip_only_readers_that_cannot_succeed(raw: str) -> None:
    """The shortcuts for ASCII text give the same readings, of the same types, in the same order."""
    ours: dict[str, Any] = {}
    _read_scalar(raw, TORONTO, ours)
    expected = _readings_by_definition(raw, TORONTO)
    assert list(ours.items()) == list(expected.items())
    assert [type(v) for v in ours.values()] == [type(v) for v in expected.values()]


@settings(max_examples=500, deadline=None)
@given(
    digits=st.text(st.sampled_from("0123456789"), min_size=9, max_size=12),
    prefix=st.sampled_from(["+1", "+1 ", "1", "+33", "+12", "+10", "+19", " +1"]),
    region=st.sampled_from(["US", "CA", "FR", "GB"]),
)
def test_phones_already_in_e164_are_not_parsed_again_but_read_the_same(digits: str, prefix: str, region: str) -> None:
    raw = prefix + digits
    assert _phone_reading(raw, region) == to_phone(raw, region)


def test_repeated_values_share_their_readings_and_keep_phones_apart() -> None:
    readings: dict[str, dict[str, Any]] = {}
    first = shadow_of({"city": "Laval", "phone": "+15145550101"}, dt.UTC, "CA", {"phone"}, readings=readings)
    second = shadow_of({"city": "Laval", "note": "+15145550101"}, dt.UTC, "CA", {"phone"}, readings=readings)
    assert first == shadow_of({"city": "Laval", "phone": "+15145550101"}, dt.UTC, "CA", {"phone"})
    assert first["phone"]["p"] == "+15145550101" and "p" not in second["note"]
    assert "Laval" in readings


def test_existing_ids_are_found_in_bulk(make_repository: Any) -> None:
    """Groups check ids against the repository at the cost of the ids asked about, for every backend."""
    repository = make_repository()
    repository.upsert([Customer(i, {"n": i}) for i in range(700)] + [Customer(f"c{i}", {}) for i in range(700)])
    asked = [*range(0, 1400, 2), *(f"c{i}" for i in range(0, 1400, 2)), "7", "nobody", 10**12]
    expected = set(range(0, 700, 2)) | {f"c{i}" for i in range(0, 700, 2)}
    assert Groups(repository)._existing(asked) == expected


def test_upserting_many_ids_again_updates_them(make_repository: Any) -> None:
    repository = make_repository()
    customers = [Customer(i, {"n": i}) for i in range(600)] + [Customer(str(i), {"n": -i}) for i in range(600)]
    repository.upsert(customers)
    repository.upsert([Customer(c.id, {"n": 0}) for c in customers])
    assert len(repository) == 1200
    assert repository.get(599).attributes == {"n": 0} and repository.get("599").attributes == {"n": 0}


def test_imported_members_join_once_and_keep_their_other_origins(make_repository: Any) -> None:
    repository = make_repository()
    repository.upsert([Customer(i) for i in range(3)])
    groups = Groups(repository)
    groups.create("Imported")
    groups.add("Imported", 0)
    seen: list[Any] = []
    groups.subscribe(seen.append)
    groups.add_imported("Imported", [0, 1, 1])
    groups.add_imported("Imported", [1, 2])
    assert groups.members("Imported") == {
        0: frozenset({Origin.MANUAL, Origin.IMPORTED}),
        1: frozenset({Origin.IMPORTED}),
        2: frozenset({Origin.IMPORTED}),
    }
    assert [(c.customer_id, c.kind) for c in seen] == [(1, "joined"), (2, "joined")]


def test_a_large_import_puts_every_customer_in_the_group(tmp_path: Path, make_repository: Any) -> None:
    """Several batches: each batch's customers join the group, none is looked up by scanning every id."""
    rows = "".join(f"P{i},514 555 {i:04}\n" for i in range(1200))
    path = tmp_path / "clients.csv"
    path.write_text("Prénom,Cell\n" + rows, encoding="utf-8")
    repository = make_repository()

    def no_scan() -> None:
        raise AssertionError("ids() scans the whole repository")

    repository.ids = no_scan
    report = import_file(path, repository, group="Imported", region="CA", batch_size=500)
    members = Groups(repository).members("Imported")
    assert report.created == 1200 and len(members) == 1200
    assert set(members.values()) == {frozenset({Origin.IMPORTED})}


@pytest.mark.parametrize("size", [1, 20_000])
def test_a_long_in_list_of_the_wrong_kind_is_refused(size: int) -> None:
    """The type error names the value; checking a long list does not format the rule per value."""
    from cohorts.errors import RuleTypeError
    from cohorts.evaluate import validate

    values = ", ".join(str(i) for i in range(size))
    with pytest.raises(RuleTypeError, match="is not"):
        validate(f'customer.city in [{values}, "x"] and customer.vehicle_year in ["x"]')
