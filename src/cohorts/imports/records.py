"""A row read as one customer's attributes and events (a record), or the reasons it cannot be."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ..ast import EVENT_TIME
from ..model import Event
from ..schema import AttributeType
from ..values import fold_text, is_known
from .cells import InvalidValue, normalise, normalise_email, normalise_number, normalise_phone, normalise_time
from .mapping import Field, Plan
from .reading import Row, _cell_text, _unneutralise
from .report import Reject

Policy: TypeAlias = Literal["fill", "overwrite"]


# -- rows into records ----------------------------------------------------------------


@attrs.define
class _Record:
    line: int
    cells: tuple[Any, ...]
    id: str | None
    key: Any
    attributes: dict[str, Any]
    events: list[Event]
    duplicates: list[_Record] = attrs.field(factory=list)


def _converter(field: Field, region: str, day_first: bool) -> Callable[[Any], Any]:
    """The function that reads one cell of ``field``: its value, None when blank, or InvalidValue."""
    kind = field.kind
    if kind is None:
        return lambda cell: _cell_text(cell).strip() or None
    read_text: Callable[[str], Any]
    match kind:
        case AttributeType.TEXT:
            read_text = normalise_email if field.email else str
        case AttributeType.PHONE:
            read_text = lambda text: normalise_phone(text, region)
        case AttributeType.NUMBER:
            read_text = normalise_number
        case AttributeType.DATETIME:
            read_text = lambda text: normalise_time(text, day_first=day_first)
        case _:
            read_text = lambda text: normalise(text, kind, region=region, day_first=day_first)
    email = field.email

    def convert(cell: Any) -> Any:
        if type(cell) is str:
            text = (_unneutralise(cell) if cell[:1] == "'" else cell).strip()
            return read_text(text) if text else None
        return normalise(cell, kind, region=region, day_first=day_first, email=email)

    return convert


class _RowReader:
    """Turns rows into records (normalised values and events) or rejects, for one plan."""

    def __init__(self, plan: Plan, key_field: Field | None, width: int, region: str, day_first: bool) -> None:
        self.plan = plan
        self.width = width
        self.steps = [
            (
                f.position,
                f.column,
                _converter(f, region, day_first),
                f.kind is None,
                f.path.category if not f.path.is_customer else None,
                f.path.attribute,
                f is key_field,
            )
            for f in plan.fields
        ]

    def __call__(self, row: Row) -> tuple[_Record | None, list[Reject]]:
        rejects: list[Reject] = []
        cells = row.cells
        size = len(cells)
        if size > self.width:
            reason = f"a value beyond the last column ({size} cells, {self.width} columns)"
            rejects.append(Reject(row.line, self.width, reason, cells))
        ident: str | None = None
        attributes: dict[str, Any] = {}
        event_fields: dict[str, dict[str, Any]] | None = None
        key: Any = None
        for position, column, convert, is_id, category, attribute, is_key in self.steps:
            if position >= size:
                continue
            try:
                value = convert(cells[position])
            except InvalidValue as error:
                rejects.append(Reject(row.line, column, error.reason, cells))
                continue
            if value is None:
                continue
            if is_id:
                ident = value
            elif category is None:
                attributes[attribute] = value
            else:
                if event_fields is None:
                    event_fields = {}
                event_fields.setdefault(category, {})[attribute] = value
            if is_key:
                key = value if is_id else _match_key(value)
        events: list[Event] = []
        for category, values in (event_fields or {}).items():
            at = values.pop(EVENT_TIME, None)
            if at is None:
                time_field = self.plan.field_for(f"{category}.{EVENT_TIME}")
                where = time_field.column if time_field else None
                rejects.append(Reject(row.line, where, f"a {category} needs a time ({category}.at is blank)", cells))
                continue
            events.append(Event(category, at, values))
        if rejects:
            return None, rejects
        if ident is None and not attributes and not events:
            return None, []
        return _Record(row.line, cells, ident, key, attributes, events), []


def _match_key(value: Any) -> Any:
    if type(value) is str and value.isascii():
        return value.lower()
    if isinstance(value, str):
        return fold_text(value)
    return value


def _merge(old: Mapping[str, Any], new: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    merged = dict(old)
    for name, value in new.items():
        if policy == "overwrite" or not is_known(merged.get(name)):
            merged[name] = value
    return merged
