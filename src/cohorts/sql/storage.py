"""Customers as the SQL repository stores them: attributes as written, their shadow, and the tables.

Each customer row keeps its attributes twice: as written (``attributes``, JSON
with dates tagged) and as a *shadow* (``shadow``, JSON on SQLite, JSONB on
PostgreSQL) computed at write time with the functions of :mod:`cohorts.values`:
folded text, numbers, booleans, times as integer epoch microseconds, date parts
in the repository's time zone, E.164 phones, list elements. Conditions compare
shadow values with bound parameters, so SQL gives exactly the answers of the
in-memory evaluator without casefolding or parsing phones itself.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Container, Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..ast import DatePart
from ..model import CustomerId, Event
from ..values import (
    Kind,
    event_time,
    exact_number,
    fold_text,
    is_known,
    local_time,
    to_bool,
    to_number,
    to_phone,
    to_time,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_id(customer_id: CustomerId) -> str:
    """A customer id as every cohorts table but the customers table stores it: ``i:42``, ``s:c1``.

    The customers table holds the same in two columns: ``id`` (the text after the prefix) and
    ``int_id`` (the prefix is ``i``), so ``'i:' || id`` or ``'s:' || id`` joins the two.

    Example:
        >>> encode_id(42), encode_id("42"), decode_id(encode_id("c1"))
        ('i:42', 's:42', 'c1')
    """
    if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
        raise TypeError(f"a customer id is text or an integer, not {customer_id!r}")
    return f"i:{customer_id}" if isinstance(customer_id, int) else f"s:{customer_id}"


def decode_id(key: str) -> CustomerId:
    """The customer id a :func:`customer_key` stands for."""
    return int(key[2:]) if key.startswith("i:") else key[2:]
_MICROSECOND = dt.timedelta(microseconds=1)


def micros(value: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    return (value - EPOCH) // _MICROSECOND


def _encode(value: Any) -> Any:
    """A JSON-ready form of an attribute value; dates and odd numbers are tagged so they read back."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text holds a NUL character, which SQL databases cannot store")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, list | tuple | set | frozenset):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {"$map": {str(k): _encode(v) for k, v in value.items()}}
    raise ValueError(f"a {type(value).__name__} cannot be stored")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        match tag:
            case "$datetime":
                return dt.datetime.fromisoformat(inner)
            case "$date":
                return dt.date.fromisoformat(inner)
            case "$float":
                return float(inner)
            case "$decimal":
                return Decimal(inner)
            case "$map":
                return {k: _decode(v) for k, v in inner.items()}
        raise ValueError(f"unknown tag {tag!r} in stored attributes")
    return value


def dump(attributes: Mapping[str, Any]) -> str:
    if not attributes:
        return "{}"
    if attributes.__class__ is dict:
        for value in attributes.values():
            if value.__class__ is not str or "\x00" in value:
                break
        else:  # only text, stored as it is (what _encode would return)
            return _JSON(attributes)
    out = {}
    for name, value in attributes.items():
        try:
            out[name] = _encode(value)
        except ValueError as error:
            raise ValueError(f"attribute {name!r}: {error}") from None
    return _JSON(out)


def _json_writer() -> Callable[[Any], str]:
    """Compact JSON text (non-ASCII kept): ``JSONEncoder.encode``, with the C encoder it
    builds at every call built once instead (same text, a third less time per value)."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return encoder.encode
    chunks = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(chunks(value, 0))


_JSON = _json_writer()


def load(text: Any) -> dict[str, Any]:
    data = json.loads(text) if isinstance(text, str | bytes) else text
    return {name: _decode(value) for name, value in data.items()}


_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIGIT = re.compile(r"\d")
_SEQUENCES = (list, tuple, set, frozenset)


def shadow_key(name: str) -> str:
    """The key of attribute ``name`` in a shadow: the name, or ``~`` and its UTF-8 in hex when unusual.

    Example:
        >>> shadow_key("vehicle_model"), shadow_key("Policy #")
        ('vehicle_model', '~506f6c6963792023')
    """
    key = _SHADOW_KEYS.get(name)
    if key is None:
        key = name if _SAFE_NAME.match(name) else "~" + name.encode().hex()
        if len(_SHADOW_KEYS) < _SHADOW_KEYS_LIMIT:
            _SHADOW_KEYS[name] = key
    return key


_SHADOW_KEYS: dict[str, str] = {}  # attribute names are few: each is read once
_SHADOW_KEYS_LIMIT = 10_000


# Shadow fields: text, number, boolean, time (µs), year, month, day, weekday, phone;
# "l" + field for the elements of a list.
KIND_FIELD = {Kind.TEXT: "t", Kind.NUMBER: "n", Kind.BOOLEAN: "b", Kind.TIME: "m", Kind.PHONE: "p"}
PART_FIELD = {"year": "y", "month": "mo", "day": "d", "weekday": "w", "anniversary": "mo"}
"""The shadow field of each date part; an anniversary is read from two (:func:`part_sql`), and is known
when its month is."""


def part_sql(part: DatePart, read: Callable[[str], str]) -> str:
    """The SQL of a date part from ``read(field)``, the SQL of one shadow part field: an anniversary is
    ``month * 100 + day`` (a :class:`~cohorts.values.MonthDay`)."""
    if part is DatePart.ANNIVERSARY:
        return f"({read('mo')} * 100 + {read('d')})"
    return read(PART_FIELD[part.value])


# Characters of ASCII text that ``int``/``float`` may accept (digits, signs, point, exponent,
# underscores, inf/infinity/nan, spaces): text with any other cannot be a number.
_NOT_NUMERIC = re.compile(r"[^0-9+\-._eEiInNfFtTyYaA\s]")
_NANP_E164 = re.compile(r"\+1[2-9][0-9]{9}")
_LONGEST_BOOL_WORD = 5  # "false": to_bool reads no longer text


def _read_ascii(raw: str, tz: dt.tzinfo, out: dict[str, Any]) -> None:
    """``_read_scalar`` of ASCII text, skipping the readers that cannot succeed (same results)."""
    text = raw.strip()
    if not text:
        return
    out["t"] = text.lower()
    if _DIGIT.search(text) is None:
        if len(text) <= _LONGEST_BOOL_WORD:
            flag = to_bool(raw)
            if flag is not None:
                out["b"] = flag
        return
    if _NOT_NUMERIC.search(text) is None:
        number = to_number(raw)
        if number is not None:
            out["n"] = exact_number(number)
    if len(text) <= _LONGEST_BOOL_WORD:
        flag = to_bool(raw)
        if flag is not None:
            out["b"] = flag
    if text[:4].isdigit():  # ISO text starts with the year's four digits
        time = to_time(raw, tz)
        if time is not None:
            _read_time(time, tz, out)


def _read_time(time: dt.datetime, tz: dt.tzinfo, out: dict[str, Any]) -> None:
    """The readings of a time: epoch microseconds, and its date parts when ``tz`` can show it."""
    out["m"] = micros(time)
    local = local_time(time, tz)
    if local is not None:
        out["y"], out["mo"], out["d"], out["w"] = local.year, local.month, local.day, local.isoweekday()


def _read_scalar(raw: Any, tz: dt.tzinfo, out: dict[str, Any]) -> None:
    if raw.__class__ is str and raw.isascii():
        _read_ascii(raw, tz, out)
        return
    text = fold_text(raw)
    if text is not None:
        out["t"] = text
    # A value without a digit is neither a number nor an ISO time: skip the parsers.
    maybe = not isinstance(raw, str) or _DIGIT.search(raw) is not None
    if maybe:
        number = to_number(raw)
        if number is not None:
            out["n"] = exact_number(number)
    flag = to_bool(raw)
    if flag is not None:
        out["b"] = flag
    if maybe:
        time = to_time(raw, tz)
        if time is not None:
            _read_time(time, tz, out)


def _phone_reading(raw: Any, region: str) -> str | None:
    """``to_phone(raw, region)``; a North American number already in E.164 form is returned as is.

    phonenumbers formats ``+1`` and ten digits starting 2-9 back unchanged,
    whatever the region, so parsing it again (most of an import's time) is skipped.
    """
    if raw.__class__ is str and len(raw) == 12 and _NANP_E164.fullmatch(raw) is not None:
        return raw
    return to_phone(raw, region)


_READINGS_LIMIT = 20_000  # text values whose readings a repository keeps (cleared when full)


def shadow_of(
    attributes: Mapping[str, Any],
    tz: dt.tzinfo,
    region: str,
    phones: Container[str] = (),
    *,
    lists: bool = True,
    readings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The shadow of some attributes: for each known one, its readings by :mod:`cohorts.values`.

    ``readings`` caches the readings of text values (for ``tz``), so values
    that repeat (names, cities) are read once; the shadow then shares its
    entries with the cache (turn it into JSON, do not change it).

    Example:
        >>> import datetime as dt
        >>> shadow_of({"city": " Montréal ", "tags": ["VIP", 7], "blank": ""}, dt.UTC, "US")
        {'city': {'t': 'montréal'}, 'tags': {'lt': ['vip', '7'], 'ln': [7]}}
    """
    out: dict[str, dict[str, Any]] = {}
    keys = _SHADOW_KEYS
    entry: dict[str, Any]
    for name, raw in attributes.items():
        if raw.__class__ is str:  # the common case, with is_known and shadow_key inlined
            if not raw.strip():
                continue
            if name in phones:  # a phone number seldom repeats: read it without the cache
                entry = {}
                _read_scalar(raw, tz, entry)
                phone = _phone_reading(raw, region)
                if phone is not None:
                    entry["p"] = phone
            elif readings is None:
                entry = {}
                _read_scalar(raw, tz, entry)
            else:
                found = readings.get(raw)
                if found is None:
                    found = {}
                    _read_scalar(raw, tz, found)
                    if len(readings) >= _READINGS_LIMIT:
                        readings.clear()
                    readings[raw] = found
                entry = found
            out[keys.get(name) or shadow_key(name)] = entry
            continue
        if not is_known(raw):
            continue
        entry = {}
        if isinstance(raw, _SEQUENCES):
            if lists:
                elements: dict[str, list[Any]] = {}
                for item in raw:
                    if isinstance(item, _SEQUENCES) or not is_known(item):
                        continue
                    one: dict[str, Any] = {}
                    _read_scalar(item, tz, one)
                    for field in ("t", "n", "b", "m"):
                        if field in one:
                            elements.setdefault("l" + field, []).append(one[field])
                entry.update(elements)
        else:
            _read_scalar(raw, tz, entry)
            if name in phones:
                phone = _phone_reading(raw, region)
                if phone is not None:
                    entry["p"] = phone
        out[shadow_key(name)] = entry
    return out


def shadow_text(shadow: Mapping[str, Any]) -> str:
    return _JSON(shadow) if shadow else "{}"


_KEY_TEXTS: dict[str, str] = {}  # attribute name -> its shadow key as JSON, with the colon


def shadow_text_of(
    attributes: Mapping[str, Any],
    tz: dt.tzinfo,
    region: str,
    phones: Container[str],
    texts: dict[str, str],
    readings: dict[str, dict[str, Any]] | None = None,
) -> str:
    """``shadow_of(attributes, tz, region, phones)`` as JSON text: the same text, made piece by piece.

    Encoding a shadow's nested objects costs as much as reading the values,
    so ``texts`` caches the JSON of each text value's readings (for ``tz``):
    values that repeat (names, cities) are read and encoded once. Values other
    than text go through :func:`shadow_of` (with ``readings``) one at a time.

    Example:
        >>> import datetime as dt
        >>> shadow_text_of({"city": "Laval", "n": 7, "blank": " "}, dt.UTC, "US", (), {})
        '{"city":{"t":"laval"},"n":{"t":"7","n":7}}'
    """
    parts = []
    for name, raw in attributes.items():
        key = _KEY_TEXTS.get(name)
        if key is None:
            key = _JSON(shadow_key(name)) + ":"
            if len(_KEY_TEXTS) < _SHADOW_KEYS_LIMIT:
                _KEY_TEXTS[name] = key
        if raw.__class__ is not str:
            one = shadow_of({name: raw}, tz, region, phones, readings=readings)
            if one:
                parts.append(key + _JSON(one[shadow_key(name)]))
            continue
        if not raw.strip():
            continue
        if name in phones:  # a phone number seldom repeats: read it without the cache
            entry: dict[str, Any] = {}
            _read_scalar(raw, tz, entry)
            phone = _phone_reading(raw, region)
            if phone is not None:
                entry["p"] = phone
            text = _JSON(entry)
        else:
            found = texts.get(raw)
            if found is None:
                entry = {}
                _read_scalar(raw, tz, entry)
                found = _JSON(entry)
                if len(texts) >= _READINGS_LIMIT:
                    texts.clear()
                texts[raw] = found
            text = found
        parts.append(key + text)
    return "{" + ",".join(parts) + "}"


def event_at(at: dt.datetime | dt.date, tz: dt.tzinfo) -> tuple[int, int, int, int, int, str]:
    """An event's time columns: epoch µs, local year, month, day, weekday, and the time as written."""
    time, local = event_time(at, tz)
    return micros(time), local.year, local.month, local.day, local.isoweekday(), at.isoformat()


def event_from_row(name: str, at_raw: str, attributes: Any) -> Event:
    at: dt.datetime | dt.date = (
        dt.date.fromisoformat(at_raw) if len(at_raw) == 10 else dt.datetime.fromisoformat(at_raw)
    )
    return Event(name, at, load(attributes))


# -- tables --------------------------------------------------------------------

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
_RAW_JSON = sa.Text().with_variant(postgresql.JSON(), "postgresql")
_SHADOW_JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    customers = sa.Table(
        f"{prefix}customers",
        metadata,
        sa.Column("pk", _BIGINT, sa.Identity(), primary_key=True),
        sa.Column("id", _ID_TEXT, nullable=False),
        sa.Column("int_id", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("attributes", _RAW_JSON, nullable=False),
        sa.Column("shadow", _SHADOW_JSON, nullable=False),
        sa.Index(f"{prefix}customers_id", "id", "int_id", unique=True),
        sa.Index(
            f"{prefix}customers_shadow", "shadow", postgresql_using="gin", postgresql_ops={"shadow": "jsonb_path_ops"}
        ).ddl_if(dialect="postgresql"),
    )
    events = sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("id", _BIGINT, sa.Identity(), primary_key=True),
        sa.Column("customer_pk", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("year", sa.SmallInteger, nullable=False),
        sa.Column("month", sa.SmallInteger, nullable=False),
        sa.Column("day", sa.SmallInteger, nullable=False),
        sa.Column("weekday", sa.SmallInteger, nullable=False),
        sa.Column("at_raw", sa.Text, nullable=False),
        sa.Column("attributes", _RAW_JSON, nullable=False),
        sa.Column("shadow", _SHADOW_JSON, nullable=False),
        sa.Index(f"{prefix}events_name", "name", "customer_pk", "at"),
        sa.Index(f"{prefix}events_name_at", "name", "at"),
        sa.Index(f"{prefix}events_customer", "customer_pk"),
    )
    meta = sa.Table(
        f"{prefix}meta",
        metadata,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    return metadata, customers, events, meta, change_log(metadata, prefix)


def change_log(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """The change log: one row per customer written, in the writing transaction (``customer`` as
    :func:`encode_id` writes it)."""
    return sa.Table(
        f"{prefix}changes",
        metadata,
        sa.Column("seq", _BIGINT, sa.Identity(), primary_key=True),
        sa.Column("customer", sa.Text, nullable=False),
        sqlite_autoincrement=True,  # never reuse a seq, even after the log is trimmed
    )



