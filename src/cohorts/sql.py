"""Customers in SQL (SQLite or PostgreSQL), with rules compiled to one SQL query.

Each customer row keeps its attributes twice: as written (``attributes``, JSON
with dates tagged) and as a *shadow* (``shadow``, JSON on SQLite, JSONB on
PostgreSQL) computed at write time with the functions of :mod:`cohorts.values`:
folded text, numbers, booleans, times as integer epoch microseconds, date parts
in the repository's time zone, E.164 phones, list elements. Conditions compare
shadow values with bound parameters, so SQL gives exactly the answers of the
in-memory evaluator without casefolding or parsing phones itself. Events live in
their own table, indexed on ``(name, customer_pk, at)``; event conditions become
semi-joins and grouped aggregates. ``docs/repositories.md`` describes the tables.

Rule values and JSON paths are always bound parameters: :func:`to_sql` returns
the SQL text and its parameters for users who run rules in their own warehouse.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path as FilePath
from typing import Any, ClassVar, Literal, TypeAlias

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .ast import Aggregate, And, Condition, DatePart, InGroup, Node, Not, Op, Or
from .errors import RuleError, RuleTypeError
from .evaluate import Spec, _as_rule, _now, _plain_test, _Shape, _shape, _spec_function, _time_test, window_spec
from .model import Customer, CustomerId, Event
from .repository import (
    CustomerDataError,
    UnknownCustomerError,
    check_customer,
    check_events,
    members_of,
    new_events,
)
from .schema import AttributeType, Schema, default_schema
from .values import DEFAULT_REGION, Kind, fold_text, is_known, resolve_tz, to_bool, to_number, to_phone, to_time

__all__ = ["SCHEMA_VERSION", "HostEvents", "HostTable", "JsonField", "SQLRepository", "to_sql"]

RuleLike: TypeAlias = Node | str
GroupLookup: TypeAlias = Callable[[str], Container[CustomerId]]
Dialect: TypeAlias = Literal["sqlite", "postgresql"]

SCHEMA_VERSION = 1
"""The version of the tables this module creates, recorded in ``cohorts_meta``."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


# -- values as stored ----------------------------------------------------------


def micros(value: dt.datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    return (value - _EPOCH) // _MICROSECOND


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


def _dump(attributes: Mapping[str, Any]) -> str:
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


def _load(text: Any) -> dict[str, Any]:
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
_KIND_FIELD = {Kind.TEXT: "t", Kind.NUMBER: "n", Kind.BOOLEAN: "b", Kind.TIME: "m", Kind.PHONE: "p"}
_PART_FIELD = {"year": "y", "month": "mo", "day": "d", "weekday": "w"}


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
            out["n"] = number
    if len(text) <= _LONGEST_BOOL_WORD:
        flag = to_bool(raw)
        if flag is not None:
            out["b"] = flag
    if text[:4].isdigit():  # ISO text starts with the year's four digits
        time = to_time(raw, tz)
        if time is not None:
            out["m"] = micros(time)
            local = time.astimezone(tz)
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
            out["n"] = number
    flag = to_bool(raw)
    if flag is not None:
        out["b"] = flag
    if maybe:
        time = to_time(raw, tz)
        if time is not None:
            out["m"] = micros(time)
            local = time.astimezone(tz)
            out["y"], out["mo"], out["d"], out["w"] = local.year, local.month, local.day, local.isoweekday()


def _phone_reading(raw: Any, region: str) -> str | None:
    """``to_phone(raw, region)``; a North American number already in E.164 form is returned as is.

    phonenumbers formats ``+1`` and ten digits starting 2-9 back unchanged,
    whatever the region, so parsing it again (most of an import's time) is skipped.
    """
    if raw.__class__ is str and len(raw) == 12 and _NANP_E164.fullmatch(raw) is not None:
        return raw  # type: ignore[no-any-return]
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


def _shadow_text(shadow: Mapping[str, Any]) -> str:
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


def _event_at(at: dt.datetime | dt.date, tz: dt.tzinfo) -> tuple[int, int, int, int, int, str]:
    time = to_time(at, tz)
    if time is None:
        raise ValueError(f"an event's time is a date or datetime, not {at!r}")
    local = time.astimezone(tz)
    return micros(time), local.year, local.month, local.day, local.isoweekday(), at.isoformat()


def _event_from_row(name: str, at_raw: str, attributes: Any) -> Event:
    at: dt.datetime | dt.date = (
        dt.date.fromisoformat(at_raw) if len(at_raw) == 10 else dt.datetime.fromisoformat(at_raw)
    )
    return Event(name, at, _load(attributes))


# -- tables --------------------------------------------------------------------

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ID_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
_RAW_JSON = sa.Text().with_variant(postgresql.JSON(), "postgresql")
_SHADOW_JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def _tables(prefix: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
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
    return metadata, customers, events, meta


# -- compiling rules -------------------------------------------------------------

_PG_TYPES = {
    Kind.TEXT: "TEXT",
    Kind.PHONE: "TEXT",
    Kind.NUMBER: "NUMERIC",
    Kind.BOOLEAN: "BOOLEAN",
    Kind.TIME: "BIGINT",
}
_COMPARISONS = {"==": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_MARK = re.compile("\x00([0-9]+)\x00")
ParamStyle: TypeAlias = Literal["qmark", "pyformat", "named"]


class _Params:
    """Bound parameters, written into SQL text as markers and rendered in a driver's style."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str | None = None) -> str:
        self.values.append(value)
        mark = f"\x00{len(self.values) - 1}\x00"
        if cast is not None and self.dialect == "postgresql":
            return f"CAST({mark} AS {cast})"
        return mark

    def render(self, sql: str, style: ParamStyle) -> tuple[str, dict[str, Any] | list[Any]]:
        if style == "qmark":
            ordered: list[Any] = []

            def qmark(match: re.Match[str]) -> str:
                ordered.append(self.values[int(match.group(1))])
                return "?"

            return _MARK.sub(qmark, sql), ordered
        template = "%(p{})s" if style == "pyformat" else ":p{}"
        text = _MARK.sub(lambda m: template.format(m.group(1)), sql)
        used = sorted({int(m.group(1)) for m in _MARK.finditer(sql)})  # parameters of dropped fragments are left out
        return text, {f"p{i}": self.values[i] for i in used}


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def _constant(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return micros(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # Month and Weekday are IntEnums
    return value


@attrs.frozen
class _Layout:
    """Where the compiled SQL reads customers and events."""

    customers: str = "cohorts_customers"
    events: str = "cohorts_events"


class _Compiler:
    """Turns a rule into the WHERE clause of a query over the customers table (alias ``c``).

    Every node compiles with a polarity: ``holds`` gives SQL that is true
    exactly when the node is true, otherwise SQL true exactly when it is false
    (so unknown is neither). NOT flips the polarity, as in the evaluator.
    """

    def __init__(
        self,
        dialect: Dialect,
        schema: Schema | None,
        tz: dt.tzinfo,
        now: dt.datetime,
        groups: GroupLookup | None,
        layout: _Layout = _Layout(),
    ) -> None:
        self.dialect = dialect
        self.pg = dialect == "postgresql"
        self.schema = schema
        self.tz = tz
        self.now = now
        self.groups = groups
        self.layout = layout
        self.param = _Params(dialect)
        self.aliases = itertools.count(1)

    def select(self, rule: Node) -> str:
        where = self.node(rule, True)
        return f"SELECT c.id, c.int_id FROM {self.layout.customers} AS c WHERE {where}"  # noqa: S608 - names are ours; values are bound

    # -- boolean structure

    def node(self, node: Node, holds: bool) -> str:
        match node:
            case And(items):
                joiner = " AND " if holds else " OR "
                return "(" + joiner.join(self.node(item, holds) for item in items) + ")"
            case Or(items):
                joiner = " OR " if holds else " AND "
                return "(" + joiner.join(self.node(item, holds) for item in items) + ")"
            case Not(operand):
                return self.node(operand, not holds)
            case InGroup(group, negated):
                member = self.membership(group)
                return member if holds != negated else f"NOT {member}"
            case Condition():
                shape = _shape(node, self.schema)
                positive = holds != shape.negated
                if shape.condition.path.is_customer:
                    return self.customer_condition(shape, positive)
                return self.event_condition(shape, positive)
        raise TypeError(f"not a rule node: {node!r}")

    def membership(self, group: str) -> str:
        if self.groups is None:
            raise RuleError(f'the rule refers to group "{group}"; evaluate it with groups=...')
        members = members_of(self.groups, group)
        ints = sorted(str(m) for m in members if isinstance(m, int) and not isinstance(m, bool))
        texts = sorted(m for m in members if isinstance(m, str))
        parts = []
        for ids, flag in ((ints, True), (texts, False)):
            if not ids:
                continue
            is_int = "c.int_id" if flag else "NOT c.int_id"
            if self.pg:
                parts.append(f"({is_int} AND c.id = ANY({self.param(ids, 'TEXT[]')}))")
            else:
                parts.append(
                    f"(c.int_id = {int(flag)} AND c.id IN (SELECT value FROM json_each({self.param(json.dumps(ids))})))"  # noqa: S608 - names are ours; values are bound
                )
        return "(" + " OR ".join(parts) + ")" if parts else "(1 = 0)"

    # -- tests of values

    def spec(self, shape: _Shape) -> Spec:
        """The condition's test at ``now``, exactly as the evaluator binds it."""
        op, kind = shape.op, shape.kind
        if kind is Kind.TIME:
            try:
                spec, _ = _time_test(Op.EQ if op is Op.CONTAINS else op, shape.value, self.now, self.tz)
            except (OverflowError, ValueError):
                raise RuleTypeError(
                    str(shape.condition), f"the time is out of range at {self.now.isoformat()}"
                ) from None
            return spec
        equality = op is Op.CONTAINS and kind is not Kind.TEXT and kind is not Kind.PHONE
        return _plain_test(Op.EQ if equality else op, shape.value)

    def window(self, shape: _Shape) -> Spec:
        """The test of an event time in the window of a count, exactly as the evaluator binds it."""
        window = shape.condition.path.window
        assert window is not None
        try:
            return window_spec(window, self.now, self.tz)
        except (OverflowError, ValueError):
            raise RuleTypeError(str(shape.condition), f"the window is out of range at {self.now.isoformat()}") from None

    def test(self, spec: Spec, x: str, kind: Kind | None) -> str:
        """SQL true when known value ``x`` passes ``spec`` (NULL or false when ``x`` is NULL)."""
        if not spec:
            return "(1 = 0)"
        clauses = []
        for clause in spec:
            if not clause:
                return f"({x} IS NOT NULL)"
            clauses.append(" AND ".join(self.check(x, symbol, constant, kind) for symbol, constant in clause))
        return "(" + " OR ".join(f"({c})" for c in clauses) + ")"

    def check(self, x: str, symbol: str, constant: Any, kind: Kind | None) -> str:
        cast = _PG_TYPES.get(kind, "NUMERIC") if kind is not None else "NUMERIC"
        p = self.param
        if symbol == "in":
            values = sorted((_constant(v) for v in constant), key=_sort_key)
            if not values:
                return "(1 = 0)"
            return f"{x} IN ({', '.join(p(v, cast) for v in values)})"
        if symbol in _COMPARISONS:
            collate = ' COLLATE "C"' if self.pg and cast == "TEXT" and symbol != "==" else ""
            return f"{x}{collate} {_COMPARISONS[symbol]} {p(_constant(constant), cast)}"
        if symbol == "has":
            return f"strpos({x}, {p(constant, cast)}) > 0" if self.pg else f"instr({x}, {p(constant)}) > 0"
        if symbol == "starts":
            if self.pg:
                return f"starts_with({x}, {p(constant, cast)})"
            return f"substr({x}, 1, length({p(constant)})) = {p(constant)}"
        if symbol == "ends":
            if self.pg:
                return f"right({x}, length({p(constant, cast)})) = {p(constant, cast)}"
            return f"substr({x}, -length({p(constant)})) = {p(constant)}"
        raise AssertionError(symbol)

    # -- reading the shadow

    def field(self, column: str, attribute: str, field: str, kind: Kind | None) -> str:
        """The typed shadow value ``field`` of ``attribute`` (NULL when unknown)."""
        key = shadow_key(attribute)
        if not self.pg:
            return f"json_extract({column}, {self.param(f'$.{chr(34)}{key}{chr(34)}.{field}')})"
        text = f"({column} #>> {self.param([key, field], 'TEXT[]')})"
        cast = _PG_TYPES[kind] if kind is not None else "NUMERIC"
        return text if cast == "TEXT" else f"CAST({text} AS {cast})"

    def present(self, column: str, attribute: str, field: str | None = None) -> str:
        """SQL true when the shadow has ``attribute`` (or one of its fields)."""
        key = shadow_key(attribute)
        if not self.pg:
            path = f"$.{chr(34)}{key}{chr(34)}" + (f".{field}" if field else "")
            return f"json_type({column}, {self.param(path)}) IS NOT NULL"
        return f"({column} #> {self.param([key, field] if field else [key], 'TEXT[]')}) IS NOT NULL"

    def elements(self, column: str, attribute: str, field: str, kind: Kind | None, spec: Spec) -> str:
        """SQL true when some element of the list field passes ``spec``."""
        alias = f"j{next(self.aliases)}"
        key = shadow_key(attribute)
        if not self.pg:
            path = self.param(f"$.{chr(34)}{key}{chr(34)}.{field}")
            test = self.test(spec, f"{alias}.value", kind)
            return f"EXISTS (SELECT 1 FROM json_each({column}, {path}) AS {alias} WHERE {test})"  # noqa: S608 - bound values
        cast = _PG_TYPES[kind] if kind is not None else "TEXT"
        value = f"{alias}.v" if cast == "TEXT" else f"CAST({alias}.v AS {cast})"
        path = self.param([key, field], "TEXT[]")
        return (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({column} #> {path}) AS {alias}(v)"  # noqa: S608 - names are ours; values are bound
            f" WHERE {self.test(spec, value, kind)})"
        )

    def contained(self, attribute: str, field: str, spec: Spec, as_list: bool) -> str | None:
        """On PostgreSQL, equality tests as ``shadow @> ...``, which the GIN index serves."""
        if not self.pg or len(spec) != 1 or len(spec[0]) != 1:
            return None
        symbol, constant = spec[0][0]
        if symbol == "==":
            values = [constant]
        elif symbol == "in":
            values = sorted(constant, key=_sort_key)
        else:
            return None
        if not values:
            return "(1 = 0)"
        key = shadow_key(attribute)
        documents = [{key: {field: [_constant(v)] if as_list else _constant(v)}} for v in values]
        return "(" + " OR ".join(f"c.shadow @> {self.param(json.dumps(d), 'JSONB')}" for d in documents) + ")"

    # -- conditions on the customer's attributes

    def customer_condition(self, shape: _Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        name = path.attribute
        if shape.op is Op.IS_KNOWN:
            if kind is None:
                known = self.present("c.shadow", name)
            else:
                field = _KIND_FIELD[kind] if path.part is None else _PART_FIELD[path.part.value]
                known = self.present("c.shadow", name, field)
                if shape.is_list and path.part is None:
                    known = f"({known} OR {self.present('c.shadow', name, 'l' + field)})"
            return known if holds else f"NOT ({known})"
        assert kind is not None
        spec = self.spec(shape)
        if path.part is not None:
            field, value_kind = _PART_FIELD[path.part.value], Kind.NUMBER
        else:
            field, value_kind = _KIND_FIELD[kind], kind
        x = self.field("c.shadow", name, field, value_kind)
        if not shape.is_list:
            if holds:
                return self.contained(name, field, spec, False) or self.test(spec, x, value_kind)
            return f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        list_field = "l" + field
        element_spec = spec
        if shape.op is Op.CONTAINS and kind is Kind.TEXT:
            element_spec = ((("==", shape.value),),)  # on a list: has an element equal to
        if holds:
            scalar = self.contained(name, field, spec, False) or self.test(spec, x, value_kind)
            listed = self.contained(name, list_field, element_spec, True) or self.elements(
                "c.shadow", name, list_field, value_kind, element_spec
            )
            return f"({scalar} OR {listed})"
        scalar = f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        present = self.present("c.shadow", name, list_field)
        listed = self.elements("c.shadow", name, list_field, value_kind, element_spec)
        return f"({scalar} OR ({present} AND NOT {listed}))"

    # -- conditions on events

    customer_key = "c.pk"
    """The customer's key in the outer query, which event queries return as ``customer_pk``."""

    def semi(self, select: str, negate: bool) -> str:
        """SQL true when the customer's key is (not) among those ``select`` returns."""
        if not self.pg:
            return f"{self.customer_key} {'NOT IN' if negate else 'IN'} ({select})"
        alias = f"s{next(self.aliases)}"
        return (
            f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM ({select}) AS {alias}"  # noqa: S608 - names are ours; values are bound
            f" WHERE {alias}.customer_pk = {self.customer_key})"
        )

    # Where events are read: the hooks a compiler over other tables overrides.

    def event_source(self, shape: _Shape, e: str) -> tuple[str, str]:
        """The query of the customer keys of the condition's events (alias ``e``), and the key's expression."""
        name = self.param(shape.condition.path.category, "TEXT")
        events = self.layout.events
        return f"SELECT {e}.customer_pk FROM {events} AS {e} WHERE {e}.name = {name}", f"{e}.customer_pk"  # noqa: S608 - names are ours; values are bound

    def event_time(self, shape: _Shape, e: str) -> str:
        """The time of event ``e``, as the TIME tests of this compiler read times."""
        return f"{e}.at"

    def event_timed(self, shape: _Shape, e: str) -> str | None:
        """SQL true when event ``e`` has a readable time (None: every event has one)."""
        return None

    def event_time_part(self, shape: _Shape, e: str, part: DatePart) -> str:
        """A date part of the time of event ``e``, as a number."""
        return f"{e}.{part.value}"

    def event_value(self, shape: _Shape, e: str, field: str, kind: Kind) -> str:
        """The reading ``field`` of the condition's attribute on event ``e`` (NULL when unknown)."""
        return self.field(f"{e}.shadow", shape.condition.path.attribute, field, kind)

    def event_known(self, shape: _Shape, e: str) -> str:
        """SQL true when the condition's attribute is known on event ``e``."""
        return self.present(f"{e}.shadow", shape.condition.path.attribute)

    def extreme_part(self, shape: _Shape, spec: Spec, holds: bool, base: str, e: str, key: str) -> str:
        """A date part of ``first_time``/``last_time``: the part of the customer's earliest/latest event."""
        path = shape.condition.path
        assert path.part is not None
        extreme = "min" if path.aggregate is Aggregate.FIRST_TIME else "max"
        e2 = f"e{next(self.aliases)}"
        name2 = self.param(path.category, "TEXT")
        latest = (
            f"(SELECT {extreme}({e2}.at) FROM {self.layout.events} AS {e2}"  # noqa: S608 - names are ours; values are bound
            f" WHERE {e2}.customer_pk = {key} AND {e2}.name = {name2})"
        )
        test = self.test(spec, self.event_time_part(shape, e, path.part), Kind.NUMBER)
        return self.semi(f"{base} AND {e}.at = {latest} AND {test if holds else 'NOT ' + test}", negate=False)

    def event_condition(self, shape: _Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        e = f"e{next(self.aliases)}"
        base, key = self.event_source(shape, e)
        aggregate = path.aggregate
        if shape.op is Op.IS_KNOWN and aggregate is not None:
            if aggregate is Aggregate.COUNT:
                return "(1 = 1)" if holds else "(1 = 0)"
            timed = self.event_timed(shape, e)  # first/last time: known when there are events with times
            return self.semi(base if timed is None else f"{base} AND {timed}", negate=not holds)
        spec = self.spec(shape) if shape.op is not Op.IS_KNOWN else ((),)

        if aggregate is Aggregate.COUNT:
            if path.window is not None:  # count only the events of the window: its bounds are parameters
                base += f" AND {self.test(self.window(shape), self.event_time(shape, e), Kind.TIME)}"
            count = "count(*)"
            passes_at_zero = _spec_function(spec)(0) == holds
            test = self.test(spec, count, Kind.NUMBER)
            having = test if holds else f"NOT {test}"
            if passes_at_zero:  # customers without events pass too
                return self.semi(f"{base} GROUP BY {key} HAVING NOT {having}", negate=True)
            return self.semi(f"{base} GROUP BY {key} HAVING {having}", negate=False)

        if aggregate is not None:
            if path.part is not None:
                return self.extreme_part(shape, spec, holds, base, e, key)
            extreme = "min" if aggregate is Aggregate.FIRST_TIME else "max"
            test = self.test(spec, f"{extreme}({self.event_time(shape, e)})", Kind.TIME)
            having = test if holds else f"NOT {test}"
            return self.semi(f"{base} GROUP BY {key} HAVING {having}", negate=False)

        # a field of any event of that name: existential, never unknown
        if path.attribute == "at":
            if path.part is None:
                test = self.test(spec, self.event_time(shape, e), Kind.TIME)
            else:
                test = self.test(spec, self.event_time_part(shape, e, path.part), Kind.NUMBER)
        elif kind is None:
            test = self.event_known(shape, e)
        else:
            if path.part is not None:
                field, value_kind = _PART_FIELD[path.part.value], Kind.NUMBER
            else:
                field, value_kind = _KIND_FIELD[kind], kind
            test = self.test(spec, self.event_value(shape, e, field, value_kind), value_kind)
        return self.semi(f"{base} AND {test}", negate=not holds)


def _compile(
    rule: RuleLike,
    dialect: str,
    schema: Schema | None,
    tz: dt.tzinfo,
    now: dt.datetime | None,
    groups: GroupLookup | None,
    layout: _Layout = _Layout(),
) -> tuple[str, _Params]:
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"dialect is 'sqlite' or 'postgresql', not {dialect!r}")
    node = _as_rule(rule)
    compiler = _Compiler(dialect, schema, tz, _now(now, tz), groups, layout)  # type: ignore[arg-type]
    return compiler.select(node), compiler.param


def to_sql(
    rule: RuleLike,
    dialect: str = "postgresql",
    *,
    now: dt.datetime | None = None,
    schema: Schema | None = None,
    tz: str | dt.tzinfo | None = None,
    groups: GroupLookup | None = None,
) -> tuple[str, dict[str, Any] | list[Any]]:
    """The SQL query selecting the ids of the customers ``rule`` is true for, and its bound parameters.

    The query reads the tables :class:`SQLRepository` creates. For
    ``"postgresql"`` the parameters are a dict for ``%(name)s`` placeholders
    (psycopg); for ``"sqlite"`` a list for ``?`` placeholders (sqlite3).
    Values, JSON paths and times resolved at ``now`` are parameters, never
    SQL text.

    Example:
        >>> sql, params = to_sql('customer.city = "Laval"', "sqlite")
        >>> sql
        'SELECT c.id, c.int_id FROM cohorts_customers AS c WHERE ((json_extract(c.shadow, ?) = ?))'
        >>> params
        ['$."city".t', 'laval']

    .. versionadded:: 0.1
    """
    sql, params = _compile(rule, dialect, schema, resolve_tz(tz), now, groups)
    return params.render(sql, "pyformat" if dialect == "postgresql" else "qmark")


# -- the repository ----------------------------------------------------------------

_CHUNK = 5000


def _engine(url_or_engine: str | FilePath | sa.Engine) -> sa.Engine:
    if isinstance(url_or_engine, sa.Engine):
        engine = url_or_engine
    else:
        url = str(url_or_engine)
        if isinstance(url_or_engine, FilePath) or "://" not in url:
            url = "sqlite:///" + (url if url != ":memory:" else "")
        if url in ("sqlite://", "sqlite:///"):
            engine = sa.create_engine(
                "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite" and not getattr(engine, "_cohorts_ready", False):
        _prepare_sqlite(engine)
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise ValueError(f"SQLRepository works with SQLite and PostgreSQL, not {engine.dialect.name}")
    return engine


def _prepare_sqlite(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself.
    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA cache_size = -65536")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    engine._cohorts_ready = True  # type: ignore[attr-defined]
    engine.dispose()  # connections made before the listeners would lack them


_INSERT_EVENTS_SQLITE = (
    "INSERT INTO cohorts_events (customer_pk, name, at, year, month, day, weekday, at_raw, attributes, shadow)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _driver(params: dict[str, Any] | list[Any]) -> dict[str, Any] | tuple[Any, ...]:
    return params if isinstance(params, dict) else tuple(params)


def _phones(schema: Schema | None, category: str) -> frozenset[str]:
    attributes = (schema or default_schema()).categories.get(category, {})
    return frozenset(name for name, kind in attributes.items() if kind is AttributeType.PHONE)


class SQLRepository:
    """Customers in SQLite or PostgreSQL (SQLAlchemy 2 Core); rules run as one SQL query.

    ``url_or_engine`` is a database URL (``sqlite:///customers.db``,
    ``postgresql+psycopg://user@host/db``), a plain file path (SQLite) or an
    Engine. The tables are created when missing, and their version recorded.
    ``schema``, ``tz`` and ``region`` mean what they mean for
    :func:`cohorts.compile`; values are read with them at write time, and
    changing them later re-reads every stored value.

    Example:
        >>> from cohorts import Customer
        >>> repo = SQLRepository("sqlite://")
        >>> repo.upsert([Customer(1, {"city": "Montréal"}), Customer("c2", {"city": "Laval"})])
        >>> repo.select('customer.city = "MONTREAL"'), repo.select('customer.city = "montréal"')
        (set(), {1})

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url_or_engine: str | FilePath | sa.Engine,
        schema: Schema | None = None,
        tz: str | dt.tzinfo | None = None,
        region: str = DEFAULT_REGION,
    ) -> None:
        self.engine = _engine(url_or_engine)
        self._owns_engine = not isinstance(url_or_engine, sa.Engine)
        self.dialect: Dialect = self.engine.dialect.name  # type: ignore[assignment]
        self._schema = schema
        self._tz = resolve_tz(tz)
        self._region = region
        self._current: contextvars.ContextVar[sa.Connection | None] = contextvars.ContextVar(
            f"cohorts_connection_{id(self)}", default=None
        )
        self._phone_cache: tuple[Schema | None, dict[str, frozenset[str]]] | None = None
        self._readings: dict[str, dict[str, Any]] = {}  # text values read for shadows, in self._tz
        self._texts: dict[str, str] = {}  # the same readings as JSON text
        self.metadata, self.customers, self.events, self.meta = _tables("cohorts_")
        self._create()

    def __repr__(self) -> str:
        return f"<SQLRepository {self.engine.url.render_as_string(hide_password=True)}>"

    def close(self) -> None:
        """Close the database connections, when the repository made its engine from a URL.

        An engine passed in stays the host's to dispose of. The repository can
        still be used afterwards: the engine opens new connections on demand.
        """
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> SQLRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- settings

    @property
    def schema(self) -> Schema:
        """The schema rules are checked against (the default one unless given)."""
        return self._schema if self._schema is not None else default_schema()

    @schema.setter
    def schema(self, schema: Schema) -> None:
        if not isinstance(schema, Schema):
            raise TypeError(f"a schema is a cohorts.Schema, not {type(schema).__name__}")
        self._schema = schema
        with self.connect() as conn:
            self._check_shadow(conn)

    @property
    def tz(self) -> dt.tzinfo:
        """The time zone of naive datetimes, calendar words and date parts."""
        return self._tz

    @property
    def region(self) -> str:
        """The default country of phone numbers."""
        return self._region

    # -- connections and transactions

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection in the current transaction, or in a new one committed at the block's end.

        Other modules' stores write through it, so :meth:`transaction` covers them too.
        """
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.begin() as conn:
            token = self._current.set(conn)
            try:
                yield conn
            finally:
                self._current.reset(token)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside the block (this repository's and other stores' through
        :meth:`connect`) are committed at its end, or rolled back if it raises.
        Nested blocks are savepoints."""
        current = self._current.get()
        if current is not None:
            with current.begin_nested():
                yield
            return
        with self.connect():
            yield

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        # One write: its own transaction, or a savepoint inside the caller's.
        with self.transaction(), self.connect() as conn:
            yield conn

    def _create(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7302016)")
            self.metadata.create_all(conn)
            version = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")).scalar()
            if version is None:
                conn.execute(sa.insert(self.meta), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            elif int(version) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database holds cohorts tables of version {version}; this cohorts knows {SCHEMA_VERSION}"
                )
            self._check_shadow(conn)

    @property
    def schema_version(self) -> int:
        """The version of the tables, as recorded in ``cohorts_meta``."""
        with self.connect() as conn:
            return int(
                conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "schema_version")).scalar_one()
            )

    # -- shadows

    def _shadow_settings(self) -> str:
        phones = {category: sorted(_phones(self._schema, category)) for category in self.schema.categories}
        return json.dumps(
            {"tz": str(self._tz), "region": self._region, "phones": {k: v for k, v in phones.items() if v}},
            sort_keys=True,
        )

    def _check_shadow(self, conn: sa.Connection) -> None:
        """Re-read every stored value when the settings the shadows were made with have changed."""
        settings = self._shadow_settings()
        stored = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "shadow")).scalar()
        if stored == settings:
            return
        if stored is None:
            conn.execute(sa.insert(self.meta), [{"key": "shadow", "value": settings}])
        else:
            conn.execute(sa.update(self.meta).where(self.meta.c.key == "shadow"), {"value": settings})
        self._reshadow(conn)

    def _phones_of(self, category: str) -> frozenset[str]:
        cache = self._phone_cache
        if cache is None or cache[0] is not self._schema:
            cache = self._phone_cache = (self._schema, {})
        found = cache[1].get(category)
        if found is None:
            found = cache[1][category] = _phones(self._schema, category)
        return found

    def _customer_shadow(self, attributes: Mapping[str, Any]) -> str:
        return shadow_text_of(
            attributes, self._tz, self._region, self._phones_of("customer"), self._texts, self._readings
        )

    def _event_row(self, event: Event) -> tuple[Any, ...]:
        """An event's columns after ``customer_pk``."""
        at, year, month, day, weekday, at_raw = _event_at(event.at, self._tz)
        if not event.attributes:
            return (event.name, at, year, month, day, weekday, at_raw, "{}", "{}")
        attributes = _dump(event.attributes)
        shadow = shadow_of(
            event.attributes, self._tz, self._region, self._phones_of(event.name), lists=False, readings=self._readings
        )
        return (event.name, at, year, month, day, weekday, at_raw, attributes, _shadow_text(shadow))

    def _reshadow(self, conn: sa.Connection) -> None:
        last = 0
        update = self._sql("UPDATE cohorts_customers SET shadow = {shadow} WHERE pk = {pk}")
        while rows := conn.exec_driver_sql(
            self._sql("SELECT pk, attributes FROM cohorts_customers WHERE pk > {pk} ORDER BY pk LIMIT " + str(_CHUNK)),  # noqa: S608 - names are ours; values are bound
            self._args(pk=last),
        ).all():
            last = rows[-1][0]
            conn.exec_driver_sql(update, [self._args(shadow=self._customer_shadow(_load(a)), pk=pk) for pk, a in rows])
        last = 0
        update = self._sql(
            "UPDATE cohorts_events SET at = {at}, year = {y}, month = {mo}, day = {d}, weekday = {w},"
            " shadow = {shadow} WHERE id = {id}"
        )
        while rows := conn.exec_driver_sql(
            self._sql(
                "SELECT id, name, at_raw, attributes FROM cohorts_events WHERE id > {id} ORDER BY id LIMIT "  # noqa: S608 - names are ours; values are bound
                + str(_CHUNK)
            ),
            self._args(id=last),
        ).all():
            last = rows[-1][0]
            params = []
            for event_id, name, at_raw, attributes in rows:
                row = self._event_row(_event_from_row(name, at_raw, attributes))
                params.append(
                    self._args(at=row[1], y=row[2], mo=row[3], d=row[4], w=row[5], shadow=row[8], id=event_id)
                )
            conn.exec_driver_sql(update, params)

    # -- SQL text helpers

    _CASTS: ClassVar[dict[str, str]] = {"attributes": "JSON", "shadow": "JSONB"}

    def _sql(self, template: str) -> str:
        """``{name}`` placeholders in the driver's style (with JSON casts on PostgreSQL)."""
        names = re.findall(r"\{(\w+)\}", template)
        if self.dialect == "postgresql":
            return template.format(
                **{n: f"CAST(%({n})s AS {self._CASTS[n]})" if n in self._CASTS else f"%({n})s" for n in names}
            )
        return template.format(**{n: f":{n}" for n in names})

    def _args(self, **values: Any) -> dict[str, Any]:
        return values

    # -- writing

    def _lookup(self, conn: sa.Connection, ids: Iterable[CustomerId]) -> dict[CustomerId, int]:
        """The pks of the stored customers among ``ids``."""
        found: dict[CustomerId, int] = {}
        keys = list(dict.fromkeys(ids))
        if self.dialect == "sqlite" and len(keys) > 500:  # one statement per kind of id, the ids as one JSON parameter
            for flag in (False, True):
                values = [str(k) for k in keys if isinstance(k, int) == flag and isinstance(k, str | int)]
                if values:
                    rows = conn.exec_driver_sql(
                        "SELECT pk, id FROM cohorts_customers"
                        " WHERE int_id = ? AND id IN (SELECT value FROM json_each(?))",
                        (flag, json.dumps(values)),
                    )
                    found.update((int(key) if flag else key, pk) for pk, key in rows)
            return found
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            texts = [k for k in chunk if isinstance(k, str)]
            ints = [str(k) for k in chunk if isinstance(k, int)]
            for values, flag in ((texts, False), (ints, True)):
                if not values:
                    continue
                query = (
                    sa.select(self.customers.c.pk, self.customers.c.id)
                    .where(self.customers.c.int_id == flag)
                    .where(self.customers.c.id.in_(values))
                )
                for pk, key in conn.execute(query):
                    found[int(key) if flag else key] = pk
        return found

    def upsert(self, customers: Iterable[Customer]) -> None:
        """Write a batch of customers, all or nothing (see :class:`cohorts.Repository`).

        Values are checked and read before anything is written; a customer
        that cannot be stored raises CustomerDataError naming it.
        """
        with self._write() as conn:
            batch: list[Customer] = []
            for customer in customers:
                batch.append(check_customer(customer))
                if len(batch) >= _CHUNK:
                    self._upsert_chunk(conn, batch)
                    batch = []
            if batch:
                self._upsert_chunk(conn, batch)

    def _upsert_chunk(self, conn: sa.Connection, batch: list[Customer]) -> None:
        # Merge repeated ids in order, as consecutive upserts would.
        merged: dict[CustomerId, Customer] = {}
        for customer in batch:
            old = merged.get(customer.id)
            if old is None:
                merged[customer.id] = customer
            else:
                added = new_events(old.events, customer.events)
                merged[customer.id] = Customer(customer.id, customer.attributes, (*old.events, *added))
        stored = self._lookup(conn, merged)
        stored_events = self._events_of(conn, [stored[i] for i, c in merged.items() if i in stored and c.events])

        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        event_rows: list[tuple[Any, ...]] = []
        fresh = len(merged) - len(stored)
        new_pks = iter(self._allocate(conn, fresh) if fresh else ())  # the new customers' pks, in order
        customer_shadow, event_row = self._customer_shadow, self._event_row
        for customer_id, customer in merged.items():
            try:
                attributes = _dump(customer.attributes)
                shadow = customer_shadow(customer.attributes)
                pk = stored.get(customer_id)
                if pk is not None:
                    updates.append(self._args(attributes=attributes, shadow=shadow, pk=pk))
                    events: Iterable[Event] = new_events(stored_events.get(pk, ()), customer.events)
                else:
                    pk = next(new_pks)
                    inserts.append((pk, str(customer_id), isinstance(customer_id, int), attributes, shadow))
                    events = customer.events
                event_rows.extend((pk, *event_row(event)) for event in events)
            except (ValueError, OverflowError) as error:
                raise CustomerDataError(customer_id, str(error)) from None
        if inserts:
            self._insert_customers(conn, inserts)
        if updates:
            conn.exec_driver_sql(
                self._sql("UPDATE cohorts_customers SET attributes = {attributes}, shadow = {shadow} WHERE pk = {pk}"),
                updates,
            )
        if event_rows:
            self._insert_events(conn, event_rows)

    def _allocate(self, conn: sa.Connection, count: int) -> list[int]:
        if self.dialect == "postgresql":
            rows = conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('cohorts_customers', 'pk')) FROM generate_series(1, %(n)s)",
                {"n": count},
            )
            return [row[0] for row in rows]
        # Take SQLite's write lock before reading the highest pk.
        conn.exec_driver_sql("UPDATE cohorts_meta SET value = value WHERE key = 'schema_version'")
        top = conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM cohorts_customers").scalar_one()
        return list(range(top + 1, top + 1 + count))

    def _copy(self, conn: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        driver: Any = conn.connection.driver_connection
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def _insert_customers(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        columns = ("pk", "id", "int_id", "attributes", "shadow")
        if self.dialect == "postgresql":
            self._copy(conn, "cohorts_customers", columns, rows)
        else:
            conn.exec_driver_sql(
                "INSERT INTO cohorts_customers (pk, id, int_id, attributes, shadow) VALUES (?, ?, ?, ?, ?)", rows
            )

    _EVENT_COLUMNS: ClassVar[tuple[str, ...]] = (
        "customer_pk",
        "name",
        "at",
        "year",
        "month",
        "day",
        "weekday",
        "at_raw",
        "attributes",
        "shadow",
    )

    def _insert_events(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
        if self.dialect == "postgresql":
            self._copy(conn, "cohorts_events", self._EVENT_COLUMNS, rows)
        else:
            conn.exec_driver_sql(
                _INSERT_EVENTS_SQLITE,
                rows,
            )

    def _events_of(self, conn: sa.Connection, pks: Sequence[int]) -> dict[int, list[Event]]:
        out: dict[int, list[Event]] = {}
        for start in range(0, len(pks), 500):
            query = (
                sa.select(self.events.c.customer_pk, self.events.c.name, self.events.c.at_raw, self.events.c.attributes)
                .where(self.events.c.customer_pk.in_(pks[start : start + 500]))
                .order_by(self.events.c.customer_pk, self.events.c.id)
            )
            for pk, name, at_raw, attributes in conn.execute(query):
                out.setdefault(pk, []).append(_event_from_row(name, at_raw, attributes))
        return out

    def add_events(self, customer_id: CustomerId, events: Iterable[Event]) -> None:
        """Append events to a stored customer (UnknownCustomerError when absent)."""
        with self._write() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                raise UnknownCustomerError(customer_id)
            try:
                rows = [(pk, *self._event_row(event)) for event in check_events(events)]
            except (ValueError, OverflowError) as error:
                raise CustomerDataError(customer_id, str(error)) from None
            if rows:
                self._insert_events(conn, rows)

    def delete(self, *customer_ids: CustomerId) -> int:
        """Remove customers and their events; returns how many existed."""
        with self._write() as conn:
            pks = list(self._lookup(conn, [i for i in customer_ids if isinstance(i, str | int)]).values())
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                conn.execute(sa.delete(self.events).where(self.events.c.customer_pk.in_(chunk)))
                conn.execute(sa.delete(self.customers).where(self.customers.c.pk.in_(chunk)))
        return len(pks)

    def unsubscribe(self, customer_id: CustomerId) -> None:
        """Set the customer's ``subscribed`` attribute to False."""
        with self._write() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                raise UnknownCustomerError(customer_id)
            raw = conn.execute(sa.select(self.customers.c.attributes).where(self.customers.c.pk == pk)).scalar_one()
            attributes = {**_load(raw), "subscribed": False}
            conn.exec_driver_sql(
                self._sql("UPDATE cohorts_customers SET attributes = {attributes}, shadow = {shadow} WHERE pk = {pk}"),
                self._args(attributes=_dump(attributes), shadow=self._customer_shadow(attributes), pk=pk),
            )

    # -- reading

    @staticmethod
    def _id(key: str, is_int: Any) -> CustomerId:
        return int(key) if is_int else key

    def get(self, customer_id: CustomerId) -> Customer | None:
        """The stored customer, or None."""
        if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
            return None
        with self.connect() as conn:
            pk = self._lookup(conn, [customer_id]).get(customer_id)
            if pk is None:
                return None
            raw = conn.execute(sa.select(self.customers.c.attributes).where(self.customers.c.pk == pk)).scalar_one()
            events = self._events_of(conn, [pk]).get(pk, [])
        return Customer(customer_id, _load(raw), events)

    def __iter__(self) -> Iterator[Customer]:
        last = 0
        while True:
            with self.connect() as conn:
                rows = conn.execute(
                    sa.select(
                        self.customers.c.pk, self.customers.c.id, self.customers.c.int_id, self.customers.c.attributes
                    )
                    .where(self.customers.c.pk > last)
                    .order_by(self.customers.c.pk)
                    .limit(_CHUNK)
                ).all()
                if not rows:
                    return
                events = self._events_of(conn, [row[0] for row in rows])
            for pk, key, is_int, raw in rows:
                yield Customer(self._id(key, is_int), _load(raw), events.get(pk, []))
            last = rows[-1][0]

    def __len__(self) -> int:
        with self.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.customers)).scalar_one())

    def __contains__(self, customer_id: object) -> bool:
        if isinstance(customer_id, bool) or not isinstance(customer_id, str | int):
            return False
        with self.connect() as conn:
            return customer_id in self._lookup(conn, [customer_id])

    def existing(self, customer_ids: Iterable[CustomerId]) -> set[CustomerId]:
        """The ids among ``customer_ids`` that are stored (one query per 500 ids)."""
        with self.connect() as conn:
            valid = [i for i in customer_ids if isinstance(i, str | int) and not isinstance(i, bool)]
            return set(self._lookup(conn, valid))

    def ids(self) -> set[CustomerId]:
        """Every stored id."""
        with self.connect() as conn:
            rows = conn.execute(sa.select(self.customers.c.id, self.customers.c.int_id))
            return {self._id(key, is_int) for key, is_int in rows}

    def sql(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> tuple[str, dict[str, Any] | list[Any]]:
        """The query :meth:`select` runs for ``rule`` at ``now``, and its parameters (driver style)."""
        sql, params = _compile(rule, self.dialect, self._schema, self._tz, now, groups)
        return params.render(sql, "pyformat" if self.dialect == "postgresql" else "qmark")

    def select(
        self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None
    ) -> set[CustomerId]:
        """The ids of the customers for whom ``rule`` is true at ``now``, computed by the database."""
        sql, params = self.sql(rule, now, groups=groups)
        with self.connect() as conn:
            rows = conn.exec_driver_sql(sql, _driver(params))
            return {self._id(key, is_int) for key, is_int in rows}

    def explain(self, rule: RuleLike, now: dt.datetime | None = None, *, groups: GroupLookup | None = None) -> str:
        """The database's query plan for ``rule`` (EXPLAIN QUERY PLAN / EXPLAIN), as text."""
        sql, params = self.sql(rule, now, groups=groups)
        prefix = "EXPLAIN " if self.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
        with self.connect() as conn:
            rows = conn.exec_driver_sql(prefix + sql, _driver(params)).all()
        return "\n".join(str(row[-1]) for row in rows)


# -- rules on a host's own tables ---------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _quoted(name: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL name (letters, digits, _; optionally schema.table)")
    return ".".join(f'"{part}"' for part in name.split("."))


def _column_name(name: object, what: str) -> str:
    """``name`` checked as a plain column name (``what`` says which mapping entry it is, for errors)."""
    if not isinstance(name, str) or not _COLUMN.match(name):
        raise ValueError(f"{what}: {name!r} is not a plain SQL column name (letters, digits and _)")
    return name


@attrs.frozen(init=False)
class JsonField:
    """A key of a JSON column (or a path of nested keys), mapped to an attribute of :class:`HostTable`.

    ``JsonField("extra", "prefs", "channel")`` reads ``extra["prefs"]["channel"]``.
    A missing key or a JSON ``null`` is an unknown value; a JSON array is a list
    (``contains`` and ``in`` test its elements, as the in-memory evaluator does).
    On SQLite the value is taken with JSON1 (``extra -> '$."prefs"."channel"'``),
    on PostgreSQL with ``CAST(extra AS JSONB) #> '{prefs,channel}'`` (``json``
    and ``jsonb`` columns); the keys are bound parameters.

    Example:
        >>> JsonField("extra", "prefs", "channel")
        JsonField(column='extra', keys=('prefs', 'channel'))

    .. versionadded:: 0.2
    """

    column: str
    keys: tuple[str, ...]

    def __init__(self, column: str, *keys: str) -> None:
        self.__attrs_init__(column, keys)  # type: ignore[attr-defined]

    def __attrs_post_init__(self) -> None:
        _column_name(self.column, "JsonField")
        if not self.keys:
            raise ValueError(f"JsonField({self.column!r}) names no key: JsonField({self.column!r}, 'key', ...)")
        for key in self.keys:
            if not isinstance(key, str) or not key or '"' in key:
                raise ValueError(f"JsonField({self.column!r}): a key is non-empty text without '\"', not {key!r}")


Mapped: TypeAlias = str | JsonField


def _mapped(value: object, what: str) -> Mapped:
    if isinstance(value, JsonField):
        return value
    if isinstance(value, str):
        return _column_name(value, what)
    raise TypeError(f"{what} maps to a column name or a JsonField, not {type(value).__name__}")


_FILTER_TYPES = (str, int, float, Decimal, dt.date)


def _filter_value(value: object, what: str) -> Any:
    if value is None or isinstance(value, _FILTER_TYPES):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = tuple(value)
        for item in items:
            if item is None or not isinstance(item, _FILTER_TYPES):
                raise TypeError(
                    f"{what}: the values of an IN filter are text, numbers, booleans or dates, not {item!r}"
                )
        return items
    raise TypeError(f"{what}: a filter value is text, a number, a boolean, a date, None or a list, not {value!r}")


@attrs.frozen
class HostEvents:
    """One category of events kept in a host's own table, for :class:`HostTable`.

    - ``table``: the table (``schema.table`` allowed); each row satisfying
      ``where`` is one event.
    - ``customer``: the column holding the customer's id (the value of the
      :class:`HostTable`'s ``id`` column); rows where it is NULL are ignored.
    - ``at``: the column of the event's time (a ``timestamptz`` or ``date``
      column on PostgreSQL; a date, datetime or ISO text on SQLite). Rows whose
      time is NULL or unreadable count in ``count`` but in no window, and never
      are ``first_time``/``last_time``.
    - ``where``: a fixed filter, column to value: ``{"status": "closed"}`` is
      ``status = 'closed'``; a list is ``IN``, None ``IS NULL``. The values are
      bound parameters, never SQL text.
    - ``fields``: event attribute to column or :class:`JsonField`
      (``repair_order.closed.total`` reads ``fields["total"]``).

    Example:
        >>> closed = HostEvents("repair_orders", customer="client_no", at="closed_at", where={"status": "closed"},
        ...                     fields={"total": "amount", "advisor": JsonField("details", "advisor")})
        >>> closed.where
        {'status': 'closed'}

    .. versionadded:: 0.2
    """

    table: str
    customer: str
    at: str
    where: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    fields: Mapping[str, Mapped] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        _quoted(self.table)
        _column_name(self.customer, f"the customer column of {self.table}")
        _column_name(self.at, f"the time column of {self.table}")
        where = {}
        for column, value in self.where.items():
            what = f"the filter of {self.table} on {column!r}"
            where[_column_name(column, what)] = _filter_value(value, what)
        object.__setattr__(self, "where", where)
        for name, mapped in self.fields.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"the fields of {self.table}: an attribute name is non-empty text, not {name!r}")
            _mapped(mapped, f"field {name!r} of {self.table}")


def _category(name: object) -> str:
    if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
        raise ValueError(f"an event category is a name such as 'appointment' or 'repair_order.closed', not {name!r}")
    if name.split(".")[0].lower() == "customer":
        raise ValueError(f"{name!r} is not an event category: 'customer' names the customer's attributes")
    return name


def _sqlite_read(value: Any, reading: str, tz_name: str, region: str) -> Any:
    """The SQLite function ``cohorts_read(value, reading, tz, region)``: a column value read as values.py reads it."""
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


def _sqlite_read_json(text: Any, reading: str, tz_name: str, region: str) -> Any:
    """``cohorts_json(json_text, reading, tz, region)``: a JSON value (from ``->``) read as values.py reads it."""
    return _sqlite_read(_json_value(text), reading, tz_name, region)


def _sqlite_read_elements(text: Any, reading: str, tz_name: str, region: str) -> str | None:
    """``cohorts_json_list(json_text, ...)``: the readings of a JSON array's elements, as a JSON array (else NULL)."""
    value = _json_value(text)
    if not isinstance(value, list):
        return None
    readings = [r for item in value if (r := _sqlite_read(item, reading, tz_name, region)) is not None]
    return json.dumps(readings)


def _sqlite_part(at: Any, reading: str, tz_name: str) -> int | None:
    """``cohorts_part(micros, reading, tz)``: the year, month, day or weekday of a time in microseconds."""
    if at is None:
        return None
    tz = resolve_tz(tz_name)
    for shift in (0, 1, -1):  # an instant of year 1 or 9999 whose UTC date is out of datetime's range
        try:
            local = (_EPOCH + dt.timedelta(microseconds=at, days=shift)).astimezone(tz) - dt.timedelta(days=shift)
        except OverflowError:
            continue
        return {"y": local.year, "mo": local.month, "d": local.day, "w": local.isoweekday()}[reading]
    return None


def _register_sqlite_functions(conn: sa.Connection) -> None:
    driver: Any = conn.connection.driver_connection
    driver.create_function("cohorts_read", 4, _sqlite_read, deterministic=True)
    driver.create_function("cohorts_json", 4, _sqlite_read_json, deterministic=True)
    driver.create_function("cohorts_json_list", 4, _sqlite_read_elements, deterministic=True)
    driver.create_function("cohorts_part", 3, _sqlite_part, deterministic=True)


@attrs.frozen
class HostTable:
    """A host's existing customers table (and event tables), mapped declaratively: rules run on them in place.

    ``columns`` maps attribute names (as rules write them after ``customer.``)
    to columns of ``table``, or to keys of a JSON column with
    :class:`JsonField`; ``id`` is its key column. ``events`` maps event
    categories (``appointment``, ``repair_order.closed``) to the host's tables
    with :class:`HostEvents`. A rule naming an unmapped attribute or category
    is a RuleError naming it.

    On SQLite values are read by registered functions that call the functions
    of :mod:`cohorts.values`, so answers are exactly those of the in-memory
    evaluator. On PostgreSQL they are read with SQL: text is trimmed of
    spaces, NFC-normalised and lowercased with ICU (casefolding special cases
    such as ß differ), numbers, booleans and times must be in numeric, boolean
    and ``timestamptz`` (or ``date``) columns, or JSON numbers, booleans and
    ISO text; phone conditions are refused. ``docs/repositories.md`` has the details.

    Example:
        >>> import sqlalchemy as sa
        >>> engine = sa.create_engine("sqlite://")
        >>> with engine.begin() as conn:
        ...     _ = conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, extra TEXT)")
        ...     _ = conn.exec_driver_sql(
        ...         "INSERT INTO clients VALUES (1, 'LAVAL', '{\\"tags\\": [\\"VIP\\"]}'), (2, 'Lévis', NULL)")
        >>> clients = HostTable("clients", id="client_no", columns={"city": "town", "tags": JsonField("extra", "tags")})
        >>> clients.select(engine, 'customer.city = "laval" or customer.tags is unknown')
        {1, 2}
        >>> clients.select(engine, 'customer.tags contains "vip"')
        {1}

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       JSON fields (:class:`JsonField`) and events in the host's tables (:class:`HostEvents`).
    """

    table: str
    id: str
    columns: Mapping[str, Mapped] = attrs.field(converter=dict)
    schema: Schema | None = None
    tz: str = "UTC"
    region: str = DEFAULT_REGION
    events: Mapping[str, HostEvents] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        _quoted(self.table)
        _column_name(self.id, f"the id column of {self.table}")
        for name, mapped in self.columns.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"the columns of {self.table}: an attribute name is non-empty text, not {name!r}")
            _mapped(mapped, f"attribute {name!r} of {self.table}")
        for category, events in self.events.items():
            _category(category)
            if not isinstance(events, HostEvents):
                raise TypeError(
                    f"events {category!r} of {self.table} map to a cohorts.HostEvents, not {type(events).__name__}"
                )
        resolve_tz(self.tz)

    def check(self, engine_or_connection: sa.Engine | sa.Connection) -> None:
        """Check the mapping against the database: every table and column it names must exist.

        Raises ValueError naming the attribute (or event category) and the
        missing table or column.
        """
        with contextlib.ExitStack() as stack:
            if isinstance(engine_or_connection, sa.Engine):
                conn = stack.enter_context(engine_or_connection.connect())
            else:
                conn = engine_or_connection
            inspector = sa.inspect(conn)
            found: dict[str, set[str]] = {}

            def columns_of(table: str, what: str) -> set[str]:
                if table not in found:
                    schema, _, name = table.rpartition(".")
                    if not inspector.has_table(name, schema=schema or None):
                        raise ValueError(f"{what}: the table {table} does not exist")
                    found[table] = {c["name"] for c in inspector.get_columns(name, schema=schema or None)}
                return found[table]

            def need(table: str, column: str, what: str) -> None:
                if column not in columns_of(table, what):
                    raise ValueError(f"{what}: the table {table} has no column {column!r}")

            need(self.table, self.id, "the id column")
            for name, mapped in self.columns.items():
                need(self.table, mapped if isinstance(mapped, str) else mapped.column, f"attribute {name!r}")
            for category, events in self.events.items():
                what = f"events {category!r}"
                need(events.table, events.customer, f"{what} (customer column)")
                need(events.table, events.at, f"{what} (time column)")
                for column in events.where:
                    need(events.table, column, f"{what} (filter)")
                for name, mapped in events.fields.items():
                    column = mapped if isinstance(mapped, str) else mapped.column
                    need(events.table, column, f"{what}, field {name!r}")

    def to_sql(
        self,
        rule: RuleLike,
        dialect: str = "postgresql",
        *,
        now: dt.datetime | None = None,
        groups: GroupLookup | None = None,
    ) -> tuple[str, dict[str, Any] | list[Any]]:
        """The query selecting the ids (column ``id``) of the rows ``rule`` is true for, and its parameters.

        On SQLite the query calls functions that :meth:`select` registers on its connection.
        """
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"dialect is 'sqlite' or 'postgresql', not {dialect!r}")
        tz = resolve_tz(self.tz)
        compiler = _HostCompiler(self, dialect, tz, _now(now, tz), groups)  # type: ignore[arg-type]
        sql = compiler.select(_as_rule(rule))
        return compiler.param.render(sql, "pyformat" if dialect == "postgresql" else "qmark")

    def select(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
    ) -> set[Any]:
        """The ids of the rows of the host's table for which ``rule`` is true at ``now``."""
        with self._query(engine_or_connection, rule, now, groups) as (conn, sql, params):
            return {row[0] for row in conn.exec_driver_sql(sql, params)}

    def explain(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None = None,
        *,
        groups: GroupLookup | None = None,
    ) -> str:
        """The database's plan for ``rule`` (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL), as text."""
        with self._query(engine_or_connection, rule, now, groups) as (conn, sql, params):
            prefix = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + sql, params).all()
        return "\n".join(str(row[-1]) for row in rows)

    @contextlib.contextmanager
    def _query(
        self,
        engine_or_connection: sa.Engine | sa.Connection,
        rule: RuleLike,
        now: dt.datetime | None,
        groups: GroupLookup | None,
    ) -> Iterator[tuple[sa.Connection, str, Any]]:
        """A connection ready for the rule's query (SQLite's functions registered), the SQL and its parameters."""
        with contextlib.ExitStack() as stack:
            if isinstance(engine_or_connection, sa.Engine):
                conn = stack.enter_context(engine_or_connection.connect())
            else:
                conn = engine_or_connection
            dialect = conn.dialect.name
            sql, params = self.to_sql(rule, dialect, now=now, groups=groups)
            if dialect == "sqlite":
                _register_sqlite_functions(conn)
            yield conn, sql, _driver(params)


_PG_PARTS = {"y": "YEAR", "mo": "MONTH", "d": "DAY", "w": "ISODOW"}

# ISO text PostgreSQL reads as a time, exactly the instants Python's fromisoformat gives:
# a real calendar date (years 0001-9999), HH:MM[:SS[.ffffff]], an offset Z or ±HH:MM up to 15:59.
_PG_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_PG_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_PG_LEAP_DAY = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29"
_PG_DATE = rf"(?:{_PG_YEAR}-{_PG_MONTH_DAY}|{_PG_LEAP_DAY})"
_PG_CLOCK = r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_PG_DATE_RE = rf"^{_PG_DATE}$"
_PG_NAIVE_RE = rf"^{_PG_DATE}{_PG_CLOCK}$"
_PG_AWARE_RE = rf"^{_PG_DATE}{_PG_CLOCK}(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$"
# Numeric text PostgreSQL reads as to_number does (ASCII digits, exponents up to 99).
_PG_NUMBER_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?$"
_TRUE = sorted(("true", "yes", "y", "1", "vrai", "oui"))
_FALSE = sorted(("false", "no", "n", "0", "faux", "non"))


class _HostCompiler(_Compiler):
    """Compiles rules onto a host's tables: attributes read from columns and JSON fields, events from
    :class:`HostEvents` tables. The boolean structure and the event aggregates are the repository
    compiler's; this class says where values are and how they are read.

    On PostgreSQL, times are ``timestamptz`` values compared with ``timestamptz`` parameters, so a
    btree index on a time column serves ``< 730 days ago``; on SQLite, integer microseconds.
    """

    def __init__(self, host: HostTable, dialect: Dialect, tz: dt.tzinfo, now: dt.datetime, groups: Any) -> None:
        super().__init__(dialect, host.schema, tz, now, groups)
        self.host = host
        self.customer_key = f"c.{_quoted(host.id)}"

    def select(self, rule: Node) -> str:
        where = self.node(rule, True)
        return f"SELECT {self.customer_key} FROM {_quoted(self.host.table)} AS c WHERE {where}"  # noqa: S608 - names are ours; values are bound

    def membership(self, group: str) -> str:
        if self.groups is None:
            raise RuleError(f'the rule refers to group "{group}"; evaluate it with groups=...')
        members = sorted(map(str, members_of(self.groups, group)))
        column = f"CAST({self.customer_key} AS TEXT)"
        if self.pg:
            return f"({column} = ANY({self.param(members, 'TEXT[]')}))"
        return f"({column} IN (SELECT value FROM json_each({self.param(json.dumps(members))})))"  # noqa: S608 - names are ours; values are bound

    def check(self, x: str, symbol: str, constant: Any, kind: Kind | None) -> str:
        if self.pg and kind is Kind.TIME:  # times are timestamptz values here, not microseconds
            if symbol == "in":
                values = sorted(constant)
                if not values:
                    return "(1 = 0)"
                return f"{x} IN ({', '.join(self.param(v, 'TIMESTAMPTZ') for v in values)})"
            return f"{x} {_COMPARISONS[symbol]} {self.param(constant, 'TIMESTAMPTZ')}"
        return super().check(x, symbol, constant, kind)

    # -- where values are, and how they are read

    def source(self, alias: str, mapped: Mapped) -> tuple[str, bool]:
        """The SQL of a mapped value (a column, or the JSON value at a JSON field's keys), and whether it is JSON."""
        if isinstance(mapped, str):
            return f"{alias}.{_quoted(mapped)}", False
        column = f"{alias}.{_quoted(mapped.column)}"
        if self.pg:
            return f"(CAST({column} AS JSONB) #> {self.param(list(mapped.keys), 'TEXT[]')})", True
        path = "$" + "".join(f'."{key}"' for key in mapped.keys)
        return f"({column} -> {self.param(path)})", True

    def read(self, source: str, is_json: bool, reading: str, condition: Condition) -> str:
        """``source`` read as values.py reads it (``reading`` is a shadow field: t, n, b, m, p, y, mo, d, w, or k
        for known): NULL when unknown. A JSON array or object reads as NULL (but is known)."""
        if not self.pg:
            function = "cohorts_json" if is_json else "cohorts_read"
            tz, region = self.param(self.host.tz), self.param(self.host.region)
            return f"{function}({source}, {self.param(reading)}, {tz}, {region})"
        if reading == "p":
            raise RuleError(f"{condition}: phone conditions on a host table need SQLite (or a shadow column)")
        if reading in _PG_PARTS:
            return self.time_part(self.read(source, is_json, "m", condition), reading)
        return self.json_reading(source, reading) if is_json else self.column_reading(source, reading)

    def column_reading(self, column: str, reading: str) -> str:
        match reading:
            case "k":
                return f"NULLIF(btrim(CAST({column} AS TEXT)), '')"
            case "t":
                return f"NULLIF(lower(normalize(btrim(CAST({column} AS TEXT)), NFC) COLLATE \"und-x-icu\"), '')"
            case "n":
                return f"CAST({column} AS NUMERIC)"
            case "b":
                return f"CAST({column} AS BOOLEAN)"
        assert reading == "m"
        return f"CAST({column} AS TIMESTAMPTZ)"  # a plain cast: an index on a timestamptz column serves it

    def json_reading(self, v: str, reading: str) -> str:
        """A PostgreSQL ``jsonb`` value ``v`` read as values.py reads the value ``json.loads`` gives."""
        kind = f"jsonb_typeof({v})"
        text = f"({v} #>> '{{}}')"
        trimmed = f"btrim({text})"
        match reading:
            case "k":
                k = f"k{next(self.aliases)}"
                element = (
                    f"jsonb_typeof({k}.x) IN ('number', 'boolean', 'object')"
                    f" OR (jsonb_typeof({k}.x) = 'string' AND btrim({k}.x #>> '{{}}') <> '')"
                    f" OR (jsonb_typeof({k}.x) = 'array' AND jsonb_array_length({k}.x) > 0)"
                )
                any_known = f"EXISTS (SELECT 1 FROM jsonb_array_elements({v}) AS {k}(x) WHERE {element})"  # noqa: S608 - names are ours; values are bound
                return (
                    f"(CASE {kind} WHEN 'string' THEN NULLIF({trimmed}, '') WHEN 'number' THEN 'number'"
                    f" WHEN 'boolean' THEN 'boolean' WHEN 'object' THEN 'object'"
                    f" WHEN 'array' THEN CASE WHEN {any_known} THEN 'array' END END)"
                )
            case "t":
                return (
                    f"(CASE WHEN {kind} IN ('string', 'number')"
                    f" THEN NULLIF(lower(normalize({trimmed}, NFC) COLLATE \"und-x-icu\"), '') END)"
                )
            case "n":
                number = self.param(_PG_NUMBER_RE, "TEXT")
                return (
                    f"(CASE {kind} WHEN 'number' THEN CAST({text} AS NUMERIC)"
                    f" WHEN 'string' THEN CASE WHEN {trimmed} ~ {number} THEN CAST({trimmed} AS NUMERIC) END END)"
                )
            case "b":
                word = f"lower({trimmed})"
                yes, no = self.param(_TRUE, "TEXT[]"), self.param(_FALSE, "TEXT[]")
                return (
                    f"(CASE {kind} WHEN 'boolean' THEN CAST({text} AS BOOLEAN)"
                    f" WHEN 'number' THEN CASE {text} WHEN '1' THEN TRUE WHEN '0' THEN FALSE END"
                    f" WHEN 'string' THEN CASE WHEN {word} = ANY({yes}) THEN TRUE WHEN {word} = ANY({no}) THEN FALSE"
                    " END END)"
                )
        assert reading == "m"
        zone = self.param(self.host.tz, "TEXT")
        date, naive, aware = (self.param(r, "TEXT") for r in (_PG_DATE_RE, _PG_NAIVE_RE, _PG_AWARE_RE))
        return (
            f"(CASE WHEN {kind} = 'string' THEN CASE"
            f" WHEN {trimmed} ~ {date} THEN CAST(CAST({trimmed} AS DATE) AS TIMESTAMP) AT TIME ZONE {zone}"
            f" WHEN {trimmed} ~ {naive} THEN CAST({trimmed} AS TIMESTAMP) AT TIME ZONE {zone}"
            f" WHEN {trimmed} ~ {aware} THEN CAST({trimmed} AS TIMESTAMPTZ) END END)"
        )

    def time_part(self, time: str, reading: str) -> str:
        """The year, month, day or ISO weekday of ``time`` (as this compiler reads times) in the host's zone."""
        if not self.pg:
            return f"cohorts_part({time}, {self.param(reading)}, {self.param(self.host.tz)})"
        zone = self.param(self.host.tz, "TEXT")
        return f"CAST(EXTRACT({_PG_PARTS[reading]} FROM {time} AT TIME ZONE {zone}) AS NUMERIC)"

    def json_elements(self, source: str, reading: str, kind: Kind | None, spec: Spec) -> str:
        """SQL true when the JSON value ``source`` is an array with an element whose reading passes ``spec``."""
        alias = f"j{next(self.aliases)}"
        if not self.pg:
            tz, region = self.param(self.host.tz), self.param(self.host.region)
            readings = f"cohorts_json_list({source}, {self.param(reading)}, {tz}, {region})"
            test = self.test(spec, f"{alias}.value", kind)
            return f"EXISTS (SELECT 1 FROM json_each({readings}) AS {alias} WHERE {test})"  # noqa: S608 - names are ours; values are bound
        array = f"CASE WHEN jsonb_typeof({source}) = 'array' THEN {source} END"
        value = self.json_reading(f"{alias}.x", reading)
        return (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements({array}) AS {alias}(x)"  # noqa: S608 - names are ours; values are bound
            f" WHERE {self.test(spec, value, kind)})"
        )

    # -- conditions on the customer's attributes

    def customer_condition(self, shape: _Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        mapped = self.host.columns.get(path.attribute)
        if mapped is None:
            known = ", ".join(sorted(self.host.columns)) or "none"
            raise RuleError(
                f"{shape.condition}: {path} is not mapped to a column of {self.host.table} (mapped: {known})"
            )
        source, is_json = self.source("c", mapped)
        if path.part is not None:
            reading, value_kind = _PART_FIELD[path.part.value], Kind.NUMBER
        elif kind is None:
            reading, value_kind = "k", Kind.TEXT
        else:
            reading, value_kind = _KIND_FIELD[kind], kind
        x = self.read(source, is_json, reading, shape.condition)
        # A JSON array is a list: its elements are tested as the evaluator tests a list's.
        listed = is_json and shape.is_list and path.part is None and kind is not None
        if shape.op is Op.IS_KNOWN:
            known = f"({x} IS NOT NULL)"
            if listed:
                known = f"({known} OR {self.json_elements(source, reading, value_kind, ((),))})"
            return known if holds else f"NOT {known}"
        spec = self.spec(shape)
        if not listed:
            if holds:
                return self.test(spec, x, value_kind)
            return f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        element_spec = spec
        if shape.op is Op.CONTAINS and kind is Kind.TEXT:
            element_spec = ((("==", shape.value),),)  # on a list: has an element equal to
        if holds:
            return (
                f"({self.test(spec, x, value_kind)} OR {self.json_elements(source, reading, value_kind, element_spec)})"
            )
        scalar = f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
        present = self.json_elements(source, reading, value_kind, ((),))
        passing = self.json_elements(source, reading, value_kind, element_spec)
        return f"({scalar} OR ({present} AND NOT {passing}))"

    # -- conditions on events: the repository compiler's, reading the host's event tables

    def host_events(self, shape: _Shape) -> HostEvents:
        category = shape.condition.path.category
        events = self.host.events.get(category)
        if events is None:
            mapped = ", ".join(sorted(self.host.events)) or "none"
            raise RuleError(
                f'{shape.condition}: the host table {self.host.table} maps no events named "{category}"'
                f" (mapped: {mapped})"
            )
        return events

    def event_source(self, shape: _Shape, e: str) -> tuple[str, str]:
        events = self.host_events(shape)
        key = f"{e}.{_quoted(events.customer)}"
        where = [f"{key} IS NOT NULL"]
        for column, value in events.where.items():
            name = f"{e}.{_quoted(column)}"
            if value is None:
                where.append(f"{name} IS NULL")
            elif isinstance(value, tuple):
                where.append(f"{name} IN ({', '.join(self.param(v) for v in value)})" if value else "(1 = 0)")
            else:
                where.append(f"{name} = {self.param(value)}")
        table = _quoted(events.table)
        return f"SELECT {key} AS customer_pk FROM {table} AS {e} WHERE {' AND '.join(where)}", key  # noqa: S608 - names are ours; values are bound

    def event_time(self, shape: _Shape, e: str) -> str:
        column = f"{e}.{_quoted(self.host_events(shape).at)}"
        return self.read(column, False, "m", shape.condition)

    def event_timed(self, shape: _Shape, e: str) -> str | None:
        return f"{self.event_time(shape, e)} IS NOT NULL"

    def event_time_part(self, shape: _Shape, e: str, part: DatePart) -> str:
        column = f"{e}.{_quoted(self.host_events(shape).at)}"
        return self.read(column, False, _PART_FIELD[part.value], shape.condition)

    def event_mapped(self, shape: _Shape, e: str) -> tuple[str, bool]:
        events = self.host_events(shape)
        attribute = shape.condition.path.attribute
        mapped = events.fields.get(attribute)
        if mapped is None:
            known = ", ".join(sorted(events.fields)) or "none"
            raise RuleError(
                f"{shape.condition}: {shape.condition.path} is not mapped to a column of {events.table}"
                f" (mapped: {known})"
            )
        return self.source(e, mapped)

    def event_value(self, shape: _Shape, e: str, field: str, kind: Kind) -> str:
        source, is_json = self.event_mapped(shape, e)
        return self.read(source, is_json, field, shape.condition)

    def event_known(self, shape: _Shape, e: str) -> str:
        source, is_json = self.event_mapped(shape, e)
        return f"{self.read(source, is_json, 'k', shape.condition)} IS NOT NULL"

    def extreme_part(self, shape: _Shape, spec: Spec, holds: bool, base: str, e: str, key: str) -> str:
        path = shape.condition.path
        assert path.part is not None
        extreme = "min" if path.aggregate is Aggregate.FIRST_TIME else "max"
        time = self.time_part(f"{extreme}({self.event_time(shape, e)})", _PART_FIELD[path.part.value])
        test = self.test(spec, time, Kind.NUMBER)
        return self.semi(f"{base} GROUP BY {key} HAVING {test if holds else 'NOT ' + test}", negate=False)
