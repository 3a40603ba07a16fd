"""Rules as plain JSON data, in the shape of the reference articles' rule editor.

A group's *rules* must all match and each rule's *sub-rules* any one of them,
so a document is an AND of ORs of rows::

    {"rules": [{"sub_rules": [{"category": "customer", "attribute": "city",
                               "operator": "=", "value": "Laval"}]}]}

What those two levels cannot hold is kept as nested groups: a sub-rule may be
a group itself (``{"rules": [...]}``), a negated group (``{"not": {"rules":
[...]}}``) or a group membership (``{"in_group": "VIP"}``, ``{"not_in_group":
"VIP"}``). Values are JSON scalars, lists, or objects tagged with a ``type``
for what JSON lacks (dates, relative times, month names...). See docs/json.md.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from .ast import (
    Anchor,
    And,
    Condition,
    DatePart,
    Duration,
    InGroup,
    Month,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    RuleLike,
    Sequel,
    Unit,
    Weekday,
    Window,
    WindowKind,
    fold,
)
from .errors import RuleJsonError
from .semantics import as_rule

__all__ = ["from_dict", "from_json", "to_dict", "to_json"]

JsonValue = Any  # what json.loads returns

_OPERATORS = {op.value: op for op in Op}
# Spellings of the articles' editor, accepted on input.
_ALIASES = {"is": Op.EQ, "is not": Op.NE, "<>": Op.NE, "not contains": Op.NOT_CONTAINS}
_ROW_KEYS = frozenset({"category", "attribute", "field", "part", "window", "where", "sequence", "operator", "value"})
_SEQUENCE_KINDS = ("followed by", "not followed by", "preceded by", "not preceded by")
_WINDOW_KINDS = {kind.value: kind for kind in WindowKind}


# -- to JSON ------------------------------------------------------------------


def to_dict(rule: RuleLike) -> dict[str, JsonValue]:
    """The rule (text, AST or compiled predicate) as JSON data: ``{"rules": [{"sub_rules": [row, ...]}, ...]}``.

    Every rule has a JSON form, and ``from_json(to_dict(rule)) == rule``.

    Example:
        >>> to_dict('customer.city = "Laval" AND customer.created_at < 30 days ago')
        ... # doctest: +NORMALIZE_WHITESPACE
        {'rules': [{'sub_rules': [{'category': 'customer', 'attribute': 'city', 'operator': '=',
                                   'value': 'Laval'}]},
                   {'sub_rules': [{'category': 'customer', 'attribute': 'created_at', 'operator': '<',
                                   'value': {'type': 'relative', 'amount': 30, 'unit': 'days',
                                             'direction': 'ago'}}]}]}

    .. versionadded:: 0.2
    """
    node = as_rule(rule)
    row, whole = fold(node, _forms)
    return row if isinstance(node, And | Or) else {"rules": [whole]}


def to_json(rule: RuleLike, *, indent: int | None = None) -> str:
    """The rule's JSON form (see :func:`to_dict`) as JSON text, as every ``to_json`` of cohorts gives text.

    Example:
        >>> print(to_json('customer.city = "Laval"'))
        {"rules": [{"sub_rules": [{"category": "customer", "attribute": "city", "operator": "=", "value": "Laval"}]}]}

    .. versionchanged:: 0.2
       Returns text; :func:`to_dict` returns the data, as ``to_json`` did before.
    """
    data = to_dict(rule)
    try:
        return json.dumps(data, indent=indent, ensure_ascii=False)
    except RecursionError:  # the json module writes nested lists and objects recursively
        raise ValueError(
            "the rule is nested too deeply for Python's json module to write: take to_dict()'s data"
        ) from None


# A node's JSON as a sub-rule (a row) and as a rule.
_Forms = tuple[dict[str, JsonValue], dict[str, JsonValue]]


def _forms(node: Node, parts: list[_Forms], *, relative: bool = False) -> _Forms:
    """The node as a row and as a rule, from those of its items (bottom-up: rules may nest deeply).

    An AND is a group of rules and an OR a rule of rows; as a row, each is a
    nested group. Anything else is a row, and as a rule the only row of one.
    With ``relative`` (inside a where), rows name the field alone, without the category.
    """
    row: dict[str, JsonValue]
    match node:
        case And():
            row = {"rules": [item_rule for _, item_rule in parts]}
        case Or():
            rule = {"sub_rules": [item_row for item_row, _ in parts]}
            return {"rules": [rule]}, rule
        case Not(operand):
            ((operand_row, operand_rule),) = parts
            row = {"not": operand_row if isinstance(operand, And | Or) else {"rules": [operand_rule]}}
        case _:
            row = _row(node, relative)
    return row, {"sub_rules": [row]}


def _where(where: Node) -> dict[str, JsonValue]:
    """A where as a group whose rows name fields of the events (no category)."""
    row, whole = fold(where, functools.partial(_forms, relative=True))
    return row if isinstance(where, And | Or) else {"rules": [whole]}


def _row(node: Node, relative: bool = False) -> dict[str, JsonValue]:
    match node:
        case Condition(path, op, value):
            row = _path(path, relative)
            row["operator"] = op.value
            if value is not None:
                row["value"] = _value(value)
            return row
        case InGroup(group, negated):
            return {"not_in_group" if negated else "in_group": group}
    raise TypeError(f"not a rule node: {node!r}")


def _path(path: Path, relative: bool = False) -> dict[str, JsonValue]:
    """What a row says of its path (without the category, inside a where)."""
    row: dict[str, JsonValue] = {} if relative else {"category": path.category}
    row["attribute"] = path.attribute
    if path.field is not None:
        row["field"] = path.field
    if path.part is not None:
        row["part"] = path.part.value
    if path.window is not None:
        row["window"] = {"kind": path.window.kind.value, "value": _value(path.window.value)}
    if path.where is not None:
        row["where"] = _where(path.where)
    if path.then is not None:
        sequence: dict[str, JsonValue] = {"kind": path.then.words, "event": path.then.event}
        if path.then.within is not None:
            sequence["within"] = _value(path.then.within)
        row["sequence"] = sequence
    return row


def _value(value: Any) -> JsonValue:
    match value:
        case Path():  # another value of the customer, compared with the row's
            return {"type": "path", **_path(value)}
        case tuple():
            return [_value(item) for item in value]
        case bool() | str():
            return value
        case Month():
            return {"type": "month", "value": str(value)}
        case Weekday():
            return {"type": "weekday", "value": str(value)}
        case int() | float():
            return value
        case dt.datetime():
            return {"type": "datetime", "value": value.isoformat()}
        case dt.date():
            return {"type": "date", "value": value.isoformat()}
        case Relative(amount, unit, ago):
            return {"type": "relative", "amount": amount, "unit": unit.value, "direction": "ago" if ago else "ahead"}
        case Duration(amount, unit):
            return {"type": "duration", "amount": amount, "unit": unit.value}
        case Anchor():
            return {"type": "anchor", "value": value.value}
    raise TypeError(f"not a rule value: {value!r}")


# -- from JSON ----------------------------------------------------------------


def from_dict(data: Mapping[str, JsonValue]) -> Node:
    """The rule JSON data describes (what :func:`to_dict` gives); see :func:`from_json`, which also reads text.

    Example:
        >>> print(from_dict({"rules": [{"sub_rules": [{"in_group": "VIP"}]}]}))
        customer in group "VIP"

    .. versionadded:: 0.2
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"from_dict() takes JSON data (a dict), not {type(data).__name__}: from_json reads text")
    return from_json(data)


def from_json(data: Mapping[str, JsonValue] | str | bytes) -> Node:
    """The rule a JSON document (as data, or as JSON text) describes.

    Raises :class:`~cohorts.RuleJsonError` (a :class:`~cohorts.RuleError`)
    naming where the document is wrong, as a JSON pointer.

    Example:
        >>> rule = from_json({"rules": [{"sub_rules": [
        ...     {"category": "customer", "attribute": "vehicle_year", "operator": "=", "value": 2019},
        ...     {"category": "customer", "attribute": "vehicle_year", "operator": "=", "value": 2020}]}]})
        >>> print(rule)
        customer.vehicle_year = 2019 OR customer.vehicle_year = 2020
        >>> from_json({"rules": [{"sub_rules": [{"category": "customer", "attribute": "city",
        ...                                       "operator": "equals", "value": "Laval"}]}]})
        Traceback (most recent call last):
        ...
        cohorts.errors.RuleJsonError: invalid rule JSON at /rules/0/sub_rules/0/operator: unknown operator 'equals'

    .. versionadded:: 0.1
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            data = json.loads(data)
        except ValueError as error:
            raise RuleJsonError("", f"not JSON ({error})") from None
        except RecursionError:  # the json module reads nested arrays and objects recursively
            raise RuleJsonError("", "nested too deeply for Python's json module to read") from None
    return fold(_Place("group", data, _ROOT), _read, children=_places_in)


class _Pointer:
    """Where a value sits in the document, as a JSON pointer: spelled out only for an error, since
    the pointers of a deeply nested document are long."""

    __slots__ = ("key", "parent")

    def __init__(self, parent: _Pointer | None, key: str) -> None:
        self.parent = parent
        self.key = key

    def __str__(self) -> str:
        keys = []
        pointer: _Pointer | None = self
        while pointer is not None:
            keys.append(pointer.key)
            pointer = pointer.parent
        return "".join(reversed(keys))


_ROOT = _Pointer(None, "")


@attrs.frozen(eq=False)
class _Place:
    """A group, a rule or a row of the document, and where it is."""

    role: Literal["group", "rule", "row"]
    data: JsonValue
    pointer: _Pointer
    event: str | None = None  # inside a where: the category of the events it filters


def _fail(pointer: _Pointer, reason: str) -> RuleJsonError:
    return RuleJsonError(str(pointer), reason)


def _at(pointer: _Pointer, key: str | int) -> _Pointer:
    return _Pointer(pointer, f"/{str(key).replace('~', '~0').replace('/', '~1')}")


def _object(data: JsonValue, pointer: _Pointer, allowed: frozenset[str], what: str) -> Mapping[str, JsonValue]:
    if not isinstance(data, Mapping):
        raise _fail(pointer, f"expected {what} (a JSON object), got {_describe(data)}")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected {', '.join(sorted(allowed))}"
            raise _fail(_at(pointer, str(key)), f"unexpected key {key!r} in {what}{hint}")
    return data


def _list(data: Mapping[str, JsonValue], key: str, pointer: _Pointer) -> Sequence[JsonValue]:
    if key not in data:
        raise _fail(pointer, f"missing {key!r}")
    items = data[key]
    if not isinstance(items, list | tuple):
        raise _fail(_at(pointer, key), f"expected a list, got {_describe(items)}")
    if not items:
        raise _fail(_at(pointer, key), "expected at least one item, got an empty list")
    return items


def _places_in(place: _Place) -> list[_Place]:
    """What a place holds, checked before it is read: a group's rules, a rule's rows, the group
    a row nests (a negated one after ``not``); a plain row holds nothing."""
    data, pointer, event = place.data, place.pointer, place.event
    match place.role:
        case "group":
            rules = _list(_object(data, pointer, frozenset({"rules"}), "a group"), "rules", pointer)
            return [
                _Place("rule", item, _at(_at(pointer, "rules"), index), event) for index, item in enumerate(rules)
            ]
        case "rule":
            rows = _list(_object(data, pointer, frozenset({"sub_rules"}), "a rule"), "sub_rules", pointer)
            return [
                _Place("row", item, _at(_at(pointer, "sub_rules"), index), event) for index, item in enumerate(rows)
            ]
    if isinstance(data, Mapping) and "rules" in data:
        return [_Place("group", data, pointer, event)]
    if isinstance(data, Mapping) and "not" in data:
        row = _object(data, pointer, frozenset({"not"}), "a negated group")
        return [_Place("group", row["not"], _at(pointer, "not"), event)]
    return []


def _read(place: _Place, items: list[Node]) -> Node:
    """The rule at a place, from the rules of what it holds (read bottom-up: documents may nest deeply)."""
    match place.role:
        case "group":
            return items[0] if len(items) == 1 else And(items)
        case "rule":
            return items[0] if len(items) == 1 else Or(items)
    if items:
        (item,) = items
        return item if "rules" in place.data else Not(item)
    return _read_row(place.data, place.pointer, place.event)


def _read_row(data: JsonValue, pointer: _Pointer, event: str | None = None) -> Node:
    if isinstance(data, Mapping):
        for key, negated in (("in_group", False), ("not_in_group", True)):
            if key in data:
                if event is not None:
                    raise _fail(_at(pointer, key), "a where filters events by their fields: no group test in it")
                row = _object(data, pointer, frozenset({key}), "a group membership")
                name = row[key]
                if not isinstance(name, str):
                    raise _fail(_at(pointer, key), f"expected a group name, got {_describe(name)}")
                return InGroup(name, negated)
    row = _object(data, pointer, _ROW_KEYS, "a sub-rule")
    path = _read_path(row, pointer, event)
    op = _read_operator(row, pointer)
    value = _read_operand(op, row, pointer)
    return Condition(path, op, value)


def _text(row: Mapping[str, JsonValue], key: str, pointer: _Pointer) -> str:
    if key not in row:
        raise _fail(pointer, f"missing {key!r}")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise _fail(_at(pointer, key), f"expected a non-empty string, got {_describe(value)}")
    return value


def _read_path(row: Mapping[str, JsonValue], pointer: _Pointer, event: str | None = None) -> Path:
    if event is not None:  # a row of a where: a field of the events it filters
        if row.get("category", event) != event:
            raise _fail(_at(pointer, "category"), f"a where reads fields of the {event} events; leave out the category")
        for key in ("field", "window", "where", "sequence"):
            if row.get(key) is not None:
                raise _fail(_at(pointer, key), "aggregates do not nest: a where filters events by their own fields")
        row = {**row, "category": event}
    category = _text(row, "category", pointer)
    attribute = _text(row, "attribute", pointer)
    if category.lower() != "customer":
        segments = category.split(".")
        if any(not segment for segment in segments):
            raise _fail(_at(pointer, "category"), f"empty name in event category {category!r}")
        if segments[0].lower() == "customer":
            raise _fail(_at(pointer, "category"), f"an event category cannot start with customer: {category!r}")
    part = None
    if row.get("part") is not None:
        word = row["part"]
        parts = [p.value for p in DatePart]
        if not isinstance(word, str) or word.lower() not in parts:
            raise _fail(_at(pointer, "part"), f"expected one of {', '.join(parts)}, got {_describe(word)}")
        part = DatePart(word.lower())
    window = None
    if row.get("window") is not None:
        window = _read_window(row["window"], _at(pointer, "window"))
    field = _text(row, "field", pointer) if row.get("field") is not None else None
    where = None
    if row.get("where") is not None:
        where = fold(_Place("group", row["where"], _at(pointer, "where"), category), _read, children=_places_in)
    then = None
    if row.get("sequence") is not None:
        then = _read_sequence(row["sequence"], _at(pointer, "sequence"))
    return Path(category, attribute, part, window, field=field, where=where, then=then)


def _read_sequence(data: JsonValue, pointer: _Pointer) -> Sequel:
    fields = _object(data, pointer, frozenset({"kind", "event", "within"}), "a sequence")
    word = " ".join(_text(fields, "kind", pointer).lower().split())
    if word not in _SEQUENCE_KINDS:
        raise _fail(_at(pointer, "kind"), f"expected one of {', '.join(_SEQUENCE_KINDS)}, got {_describe(word)}")
    event = _text(fields, "event", pointer)
    within = None
    if fields.get("within") is not None:
        within = _read_scalar(fields["within"], _at(pointer, "within"), allow_duration=True)
        if not isinstance(within, Duration):
            raise _fail(_at(pointer, "within"), f'within takes {{"type": "duration", ...}}, got {_describe(within)}')
    return Sequel(event, within, preceded="preceded" in word, negated=word.startswith("not"))


def _read_window(data: JsonValue, pointer: _Pointer) -> Window:
    fields = _object(data, pointer, frozenset({"kind", "value"}), "a window")
    word = _text(fields, "kind", pointer)
    kind = _WINDOW_KINDS.get(word.lower())
    if kind is None:
        raise _fail(_at(pointer, "kind"), f"expected one of {', '.join(_WINDOW_KINDS)}, got {_describe(word)}")
    where = _at(pointer, "value")
    value = fields.get("value")
    if value is None:
        raise _fail(pointer, f"missing 'value' for a {kind.value} window")
    match kind:
        case WindowKind.LAST | WindowKind.NEXT:
            duration = _read_scalar(value, where, allow_duration=True)
            if not isinstance(duration, Duration):
                raise _fail(where, f'a {kind.value} window takes {{"type": "duration", ...}}, got {_describe(value)}')
            return Window(kind, duration)
        case WindowKind.BETWEEN:
            if not isinstance(value, list) or len(value) != 2:
                raise _fail(where, f"a between window takes a list of two times, got {_describe(value)}")
            return Window(kind, (_read_time(value[0], _at(where, 0)), _read_time(value[1], _at(where, 1))))
    return Window(kind, _read_time(value, where))


def _read_time(value: JsonValue, pointer: _Pointer) -> Any:
    time = _read_scalar(value, pointer)
    if not isinstance(time, dt.date | Relative | Anchor):
        raise _fail(pointer, f"a window takes times (dates, relative times, today...), got {_describe(value)}")
    return time


def _read_operator(row: Mapping[str, JsonValue], pointer: _Pointer) -> Op:
    word = _text(row, "operator", pointer)
    spelled = " ".join(word.lower().split())
    op = _OPERATORS.get(spelled) or _ALIASES.get(spelled)
    if op is None:
        close = difflib.get_close_matches(spelled, [*_OPERATORS, *_ALIASES], n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _fail(_at(pointer, "operator"), f"unknown operator {word!r}{hint}")
    return op


def _read_operand(op: Op, row: Mapping[str, JsonValue], pointer: _Pointer) -> Any:
    where = _at(pointer, "value")
    value = row.get("value")
    match op:
        case Op.IS_KNOWN | Op.IS_UNKNOWN:
            if value is not None:
                raise _fail(where, f"{op.value} takes no value")
            return None
        case _ if "value" not in row or value is None:
            raise _fail(pointer, f"missing 'value' for operator {op.value!r}")
        case Op.IN | Op.NOT_IN:
            if not isinstance(value, list):
                raise _fail(where, f"{op.value} takes a list, got {_describe(value)}")
            return tuple(_read_scalar(item, _at(where, index)) for index, item in enumerate(value))
        case Op.BETWEEN:
            if not isinstance(value, list) or len(value) != 2:
                raise _fail(where, f"between takes a list of two values, got {_describe(value)}")
            return (_read_scalar(value[0], _at(where, 0)), _read_scalar(value[1], _at(where, 1)))
        case Op.WITHIN_LAST | Op.WITHIN_NEXT:
            duration = _read_scalar(value, where, allow_duration=True)
            if not isinstance(duration, Duration):
                raise _fail(where, f'{op.value} takes {{"type": "duration", ...}}, got {_describe(value)}')
            return duration
    if isinstance(value, list):
        return tuple(_read_scalar(item, _at(where, index)) for index, item in enumerate(value))
    if isinstance(value, Mapping) and value.get("type") == "path":
        if op not in _COMPARED:
            raise _fail(_at(where, "type"), f"{op.value} compares with a value, not with another path")
        fields = _object(value, where, _PATH_KEYS, "a path")
        return _read_path(fields, where)
    return _read_scalar(value, where)


# The operators that compare a row's value with another of the customer's ({"type": "path", ...}).
_COMPARED = frozenset({Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.BEFORE, Op.AFTER})
_PATH_KEYS = frozenset({"type", "category", "attribute", "field", "part", "window", "where", "sequence"})


_TAGS = ("date", "datetime", "relative", "duration", "anchor", "month", "weekday")


def _read_scalar(value: JsonValue, pointer: _Pointer, *, allow_duration: bool = False) -> Any:
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(pointer, f"a rule cannot hold the number {value!r}")
        return value
    if not isinstance(value, Mapping):
        raise _fail(pointer, f"expected a string, number, boolean or typed value, got {_describe(value)}")
    tag = value.get("type")
    if tag not in _TAGS or (tag == "duration" and not allow_duration):
        allowed = [t for t in _TAGS if allow_duration or t != "duration"]
        raise _fail(_at(pointer, "type"), f"expected a value type among {', '.join(allowed)}, got {_describe(tag)}")
    match tag:
        case "relative":
            fields = _object(value, pointer, frozenset({"type", "amount", "unit", "direction"}), "a relative time")
            direction = fields.get("direction", "ago")
            if direction not in ("ago", "ahead"):
                raise _fail(_at(pointer, "direction"), f'expected "ago" or "ahead", got {_describe(direction)}')
            return Relative(_amount(fields, pointer), _unit(fields, pointer), ago=direction == "ago")
        case "duration":
            fields = _object(value, pointer, frozenset({"type", "amount", "unit"}), "a duration")
            return Duration(_amount(fields, pointer), _unit(fields, pointer))
    fields = _object(value, pointer, frozenset({"type", "value"}), f"a {tag}")
    word = _text(fields, "value", pointer)
    where = _at(pointer, "value")
    try:
        match tag:
            case "date":
                if len(word) != 10:
                    raise ValueError("expected YYYY-MM-DD")
                return dt.date.fromisoformat(word)
            case "datetime":
                if len(word) < 16:
                    raise ValueError("expected YYYY-MM-DDTHH:MM")
                return dt.datetime.fromisoformat(word)
            case "anchor":
                return Anchor(" ".join(word.lower().split()))
            case "month":
                return Month[word.upper()]
            case _:
                return Weekday[word.upper()]
    except (ValueError, KeyError) as error:
        reason = error.args[0] if isinstance(error, ValueError) and error.args else "unknown word"
        raise _fail(where, f"not a {tag}: {word!r} ({reason})") from None


def _amount(fields: Mapping[str, JsonValue], pointer: _Pointer) -> int:
    amount = fields.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise _fail(_at(pointer, "amount"), f"expected a whole number >= 0, got {_describe(amount)}")
    return amount


def _unit(fields: Mapping[str, JsonValue], pointer: _Pointer) -> Unit:
    word = fields.get("unit")
    try:
        return Unit.from_word(word) if isinstance(word, str) else Unit(word)
    except ValueError:
        units = ", ".join(u.value for u in Unit)
        raise _fail(_at(pointer, "unit"), f"expected a unit among {units}, got {_describe(word)}") from None


def _describe(value: JsonValue) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "true" if value else "false"
        case Mapping():
            return "an object"
        case list() | tuple():
            return f"a list of {len(value)}"
        case str():
            return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    return repr(value)
