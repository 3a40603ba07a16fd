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

from .ast import Aggregate, And, Condition, InGroup, Node, Not, Op, Or
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

__all__ = ["SCHEMA_VERSION", "HostTable", "SQLRepository", "to_sql"]

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
    for name, raw in attributes.items():
        if not is_known(raw):
            continue
        entry: dict[str, Any] = {}
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
            if readings is not None and raw.__class__ is str:
                found = readings.get(raw)
                if found is None:
                    found = {}
                    _read_scalar(raw, tz, found)
                    if len(readings) >= _READINGS_LIMIT:
                        readings.clear()
                    readings[raw] = found
                if name not in phones:
                    out[shadow_key(name)] = found
                    continue
                entry = found.copy()
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

    def semi(self, select: str, negate: bool) -> str:
        """SQL true when the customer's pk is (not) among those ``select`` returns."""
        if not self.pg:
            return f"c.pk {'NOT IN' if negate else 'IN'} ({select})"
        alias = f"s{next(self.aliases)}"
        return (
            f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM ({select}) AS {alias} WHERE {alias}.customer_pk = c.pk)"  # noqa: S608 - names are ours; values are bound
        )

    def event_condition(self, shape: _Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        events = self.layout.events
        e = f"e{next(self.aliases)}"
        name = self.param(path.category, "TEXT")
        base = f"SELECT {e}.customer_pk FROM {events} AS {e} WHERE {e}.name = {name}"  # noqa: S608 - names are ours; values are bound
        aggregate = path.aggregate
        if shape.op is Op.IS_KNOWN and aggregate is not None:
            if aggregate is Aggregate.COUNT:
                return "(1 = 1)" if holds else "(1 = 0)"
            return self.semi(base, negate=not holds)  # first/last time: known when there are events
        spec = self.spec(shape) if shape.op is not Op.IS_KNOWN else ((),)

        if aggregate is Aggregate.COUNT:
            if path.window is not None:  # count only the events of the window: its bounds are parameters
                base += f" AND {self.test(self.window(shape), f'{e}.at', Kind.TIME)}"
            count = "count(*)"
            passes_at_zero = _spec_function(spec)(0) == holds
            test = self.test(spec, count, Kind.NUMBER)
            having = test if holds else f"NOT {test}"
            if passes_at_zero:  # customers without events pass too
                return self.semi(f"{base} GROUP BY {e}.customer_pk HAVING NOT {having}", negate=True)
            return self.semi(f"{base} GROUP BY {e}.customer_pk HAVING {having}", negate=False)

        if aggregate is not None:
            extreme = "min" if aggregate is Aggregate.FIRST_TIME else "max"
            if path.part is None:
                test = self.test(spec, f"{extreme}({e}.at)", Kind.TIME)
                having = test if holds else f"NOT {test}"
                return self.semi(f"{base} GROUP BY {e}.customer_pk HAVING {having}", negate=False)
            e2 = f"e{next(self.aliases)}"
            name2 = self.param(path.category, "TEXT")
            latest = (
                f"(SELECT {extreme}({e2}.at) FROM {events} AS {e2}"  # noqa: S608 - names are ours; values are bound
                f" WHERE {e2}.customer_pk = {e}.customer_pk AND {e2}.name = {name2})"
            )
            test = self.test(spec, f"{e}.{path.part.value}", Kind.NUMBER)
            return self.semi(f"{base} AND {e}.at = {latest} AND {test if holds else 'NOT ' + test}", negate=False)

        # a field of any event of that name: existential, never unknown
        if path.attribute == "at":
            x = f"{e}.at" if path.part is None else f"{e}.{path.part.value}"
            value_kind = Kind.TIME if path.part is None else Kind.NUMBER
            test = self.test(spec, x, value_kind)
        elif kind is None:
            test = self.present(f"{e}.shadow", path.attribute)
        else:
            if path.part is not None:
                field, value_kind = _PART_FIELD[path.part.value], Kind.NUMBER
            else:
                field, value_kind = _KIND_FIELD[kind], kind
            test = self.test(spec, self.field(f"{e}.shadow", path.attribute, field, value_kind), value_kind)
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
        shadow = shadow_of(attributes, self._tz, self._region, self._phones_of("customer"), readings=self._readings)
        return _shadow_text(shadow)

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


# -- rules on a host's own customers table -----------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")


def _quoted(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL name (letters, digits, _; optionally schema.table)")
    return ".".join(f'"{part}"' for part in name.split("."))


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
    local = time.astimezone(tz)
    return {"y": local.year, "mo": local.month, "d": local.day, "w": local.isoweekday()}[reading]


@attrs.frozen
class HostTable:
    """A host's existing customers table, mapped declaratively: rules run on it without copying data.

    ``columns`` maps attribute names (as rules write them after ``customer.``)
    to columns of ``table``; ``id`` is its key column. Event conditions are not
    available (the host keeps events its own way); a rule naming an unmapped
    attribute is a RuleError.

    On SQLite the columns are read by a registered function that calls the
    functions of :mod:`cohorts.values`, so answers are exactly those of the
    in-memory evaluator. On PostgreSQL they are read with SQL: text is
    trimmed, NFC-normalised and lowercased with ICU (casefolding special cases
    such as ß differ), numbers, booleans and times must be in numeric, boolean
    and ``timestamptz`` (or ``date``) columns, and phone conditions are refused.

    Example:
        >>> import sqlalchemy as sa
        >>> engine = sa.create_engine("sqlite://")
        >>> with engine.begin() as conn:
        ...     _ = conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, car TEXT)")
        ...     _ = conn.exec_driver_sql("INSERT INTO clients VALUES (1, 'LAVAL', 'Ford Escape'), (2, 'Lévis', NULL)")
        >>> clients = HostTable("clients", id="client_no", columns={"city": "town", "vehicle_model": "car"})
        >>> clients.select(engine, 'customer.city = "laval" or customer.vehicle_model is unknown')
        {1, 2}

    .. versionadded:: 0.1
    """

    table: str
    id: str
    columns: Mapping[str, str] = attrs.field(converter=dict)
    schema: Schema | None = None
    tz: str = "UTC"
    region: str = DEFAULT_REGION

    def __attrs_post_init__(self) -> None:
        for name in (self.table, self.id, *self.columns.values()):
            _quoted(name)
        resolve_tz(self.tz)

    def to_sql(
        self,
        rule: RuleLike,
        dialect: str = "postgresql",
        *,
        now: dt.datetime | None = None,
        groups: GroupLookup | None = None,
    ) -> tuple[str, dict[str, Any] | list[Any]]:
        """The query selecting the ids (column ``id``) of the rows ``rule`` is true for, and its parameters."""
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
        with contextlib.ExitStack() as stack:
            if isinstance(engine_or_connection, sa.Engine):
                conn = stack.enter_context(engine_or_connection.connect())
            else:
                conn = engine_or_connection
            dialect = conn.dialect.name
            sql, params = self.to_sql(rule, dialect, now=now, groups=groups)
            if dialect == "sqlite":
                driver = conn.connection.driver_connection
                driver.create_function("cohorts_read", 4, _sqlite_read, deterministic=True)  # type: ignore[union-attr]
            return {row[0] for row in conn.exec_driver_sql(sql, _driver(params))}


_PG_PARTS = {"y": "YEAR", "mo": "MONTH", "d": "DAY", "w": "ISODOW"}


class _HostCompiler(_Compiler):
    """Compiles customer conditions onto a host table's columns."""

    def __init__(self, host: HostTable, dialect: Dialect, tz: dt.tzinfo, now: dt.datetime, groups: Any) -> None:
        super().__init__(dialect, host.schema, tz, now, groups)
        self.host = host

    def select(self, rule: Node) -> str:
        where = self.node(rule, True)
        return f"SELECT c.{_quoted(self.host.id)} FROM {_quoted(self.host.table)} AS c WHERE {where}"  # noqa: S608 - names are ours; values are bound

    def membership(self, group: str) -> str:
        if self.groups is None:
            raise RuleError(f'the rule refers to group "{group}"; evaluate it with groups=...')
        members = sorted(map(str, members_of(self.groups, group)))
        column = f"CAST(c.{_quoted(self.host.id)} AS TEXT)"
        if self.pg:
            return f"({column} = ANY({self.param(members, 'TEXT[]')}))"
        return f"({column} IN (SELECT value FROM json_each({self.param(json.dumps(members))})))"  # noqa: S608 - names are ours; values are bound

    def event_condition(self, shape: _Shape, holds: bool) -> str:
        raise RuleError(f"{shape.condition}: the host table {self.host.table} maps no events")

    def reading(self, column: str, reading: str, condition: Condition) -> str:
        """The column read as values.py reads it (NULL when unknown)."""
        if not self.pg:
            tz, region = self.param(self.host.tz), self.param(self.host.region)
            return f"cohorts_read({column}, {self.param(reading)}, {tz}, {region})"
        match reading:
            case "k":
                return f"NULLIF(btrim(CAST({column} AS TEXT)), '')"
            case "t":
                return f"NULLIF(lower(normalize(btrim(CAST({column} AS TEXT)), NFC) COLLATE \"und-x-icu\"), '')"
            case "n":
                return f"CAST({column} AS NUMERIC)"
            case "b":
                return f"CAST({column} AS BOOLEAN)"
            case "m":
                return f"CAST(floor(EXTRACT(EPOCH FROM CAST({column} AS TIMESTAMPTZ)) * 1000000) AS BIGINT)"
            case "p":
                raise RuleError(f"{condition}: phone conditions on a host table need SQLite (or a shadow column)")
        part = _PG_PARTS[reading]
        zone = self.param(self.host.tz, "TEXT")
        return f"CAST(EXTRACT({part} FROM CAST({column} AS TIMESTAMPTZ) AT TIME ZONE {zone}) AS NUMERIC)"

    def customer_condition(self, shape: _Shape, holds: bool) -> str:
        path, kind = shape.condition.path, shape.kind
        column_name = self.host.columns.get(path.attribute)
        if column_name is None:
            raise RuleError(f"{shape.condition}: {path} is not mapped to a column of {self.host.table}")
        column = f"c.{_quoted(column_name)}"
        if path.part is not None:
            reading, value_kind = _PART_FIELD[path.part.value], Kind.NUMBER
        elif kind is None:
            reading, value_kind = "k", Kind.TEXT
        else:
            reading, value_kind = _KIND_FIELD[kind], kind
        x = self.reading(column, reading, shape.condition)
        if shape.op is Op.IS_KNOWN:
            return f"({x} IS NOT NULL)" if holds else f"({x} IS NULL)"
        spec = self.spec(shape)
        if holds:
            return self.test(spec, x, value_kind)
        return f"({x} IS NOT NULL AND NOT {self.test(spec, x, value_kind)})"
