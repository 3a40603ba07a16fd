"""SQL functions SQLite calls: the readings of :mod:`cohorts.values` in host-table queries, and ``matches``.

Registered on a connection by :func:`register`, so SQLite reads a host's column
values exactly as the in-memory evaluator does; :func:`register_own` registers
what every SQLite query of cohorts may call (``cohorts_matches``).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ..pattern import compile_pattern
from ..values import (
    decimal_sum,
    exact_decimal,
    exact_product,
    fold_text,
    is_known,
    resolve_tz,
    to_bool,
    to_number,
    to_phone,
    to_time,
)
from .storage import EPOCH, micros

__all__ = ["ExactSum", "compare_exact", "matches", "register", "register_driver", "register_own"]


def read(value: Any, reading: str, tz_name: str, region: str) -> Any:
    """``cohorts_read(value, reading, tz, region)``: a column value read as values.py reads it."""
    tz = resolve_tz(tz_name)
    match reading:
        case "k":
            return 1 if is_known(value) else None
        case "t":
            return fold_text(value)
        case "n":
            return to_number(value)
        case "b":
            flag = to_bool(value)
            return None if flag is None else int(flag)
        case "p":
            return to_phone(value, region)
    time = to_time(value, tz)
    if time is None:
        return None
    if reading == "m":
        return micros(time)
    return _local_part(time, reading, tz)


def _local_part(time: dt.datetime, reading: str, tz: dt.tzinfo) -> int | None:
    try:
        local = time.astimezone(tz)
    except OverflowError:
        return None
    return {"y": local.year, "mo": local.month, "d": local.day, "w": local.isoweekday()}[reading]


def _json_value(text: Any) -> Any:
    return None if text is None else json.loads(text)


def read_json(text: Any, reading: str, tz_name: str, region: str) -> Any:
    """``cohorts_json(json_text, reading, tz, region)``: a JSON value (from ``->``) read as values.py reads it."""
    return read(_json_value(text), reading, tz_name, region)


def read_elements(text: Any, reading: str, tz_name: str, region: str) -> str | None:
    """``cohorts_json_list(json_text, ...)``: the readings of a JSON array's elements, as a JSON array (else NULL)."""
    value = _json_value(text)
    if not isinstance(value, list):
        return None
    readings = [r for item in value if (r := read(item, reading, tz_name, region)) is not None]
    return json.dumps(readings)


def part(at: Any, reading: str, tz_name: str) -> int | None:
    """``cohorts_part(micros, reading, tz)``: the year, month, day or weekday of a time in microseconds."""
    if at is None:
        return None
    tz = resolve_tz(tz_name)
    for shift in (0, 1, -1):  # an instant of year 1 or 9999 whose UTC date is out of datetime's range
        try:
            local = (EPOCH + dt.timedelta(microseconds=at, days=shift)).astimezone(tz) - dt.timedelta(days=shift)
        except OverflowError:
            continue
        return {"y": local.year, "mo": local.month, "d": local.day, "w": local.isoweekday()}[reading]
    return None


def matches(pattern: Any, text: Any) -> int | None:
    """``cohorts_matches(pattern, folded_text)``: the ``matches`` test, by the evaluator's own pattern."""
    if pattern is None or text is None:
        return None
    return int(compile_pattern(str(pattern)).search(str(text)))


class ExactSum:
    """``cohorts_sum(number)``: the exact sum of the numbers an aggregate reads, as decimal text.

    Each number is the decimal its stored text writes (:func:`cohorts.values.exact_decimal`), so
    ``0.1 + 0.2`` is ``0.3``, as in memory and in PostgreSQL's NUMERIC; NULLs are skipped.
    """

    def __init__(self) -> None:
        self.numbers: list[int | float] = []

    def step(self, number: Any) -> None:
        if number.__class__ is int or number.__class__ is float:
            self.numbers.append(number)

    def finalize(self) -> str:
        return str(decimal_sum(self.numbers))


def compare_exact(total: Any, constant: Any, times: Any) -> int | None:
    """``cohorts_compare(total, constant, times)``: -1, 0 or 1 as the decimal ``total`` is below, at or
    above ``constant`` (decimal text) times ``times`` (NULL: once): how a sum or an average compares."""
    if total is None or constant is None:
        return None
    scaled = _decimal(constant) if times is None else exact_product(_decimal(constant), int(times))
    exact = _decimal(total)
    return (exact > scaled) - (exact < scaled)


def _decimal(value: Any) -> Decimal:
    """Decimal text (a sum, a bound constant) as its decimal; a stored number as the decimal its text
    writes (:func:`cohorts.values.exact_decimal`), as a sum compared with another value reads it."""
    if isinstance(value, int | float):
        return exact_decimal(value)
    return Decimal(value)


def register_own(driver: Any) -> None:
    """Register the functions cohorts' own SQLite queries call on a sqlite3 connection."""
    driver.create_function("cohorts_matches", 2, matches, deterministic=True)
    driver.create_aggregate("cohorts_sum", 1, ExactSum)
    driver.create_function("cohorts_compare", 3, compare_exact, deterministic=True)


def register(conn: sa.Connection) -> None:
    """Register the functions on the connection's SQLite driver connection."""
    register_driver(conn.connection.driver_connection)


def register_driver(driver: Any) -> None:
    """Register the functions on a sqlite3 connection."""
    register_own(driver)
    driver.create_function("cohorts_read", 4, read, deterministic=True)
    driver.create_function("cohorts_json", 4, read_json, deterministic=True)
    driver.create_function("cohorts_json_list", 4, read_elements, deterministic=True)
    driver.create_function("cohorts_part", 3, part, deterministic=True)
