"""A row read as one customer's attributes and events (a record), or the reasons it cannot be.

Cells are read by their field's type (:mod:`.cells`). Phone and email cells
may hold several values and come with labels (``Phone 1 - Type``): the
values of a row are pooled, the primary (or first) one fills ``phone`` or
``email``, a number labelled mobile fills ``mobile_phone``, and the others are
kept in ``other_phones`` or ``other_emails``; what was done is counted for the report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeAlias

import attrs

from ..ast import CUSTOMER, EVENT_TIME, Path
from ..model import Event
from ..schema import AttributeType
from ..values import fold_text, is_known, to_bool
from .cells import (
    FAST_NANP,
    DateOrders,
    InvalidValue,
    Phone,
    normalise,
    normalise_email,
    normalise_number,
    read_flag,
    read_list,
    read_phone,
    read_time,
    split_emails,
    split_phones,
)
from .mapping import Field, Plan, header_words
from .reading import Column, Row, cell_text, unmark
from .report import Note, Reject

Policy: TypeAlias = Literal["fill", "overwrite"]
BadCell: TypeAlias = Literal["reject_row", "skip_cell"]

_PLAIN, _PHONES, _EMAILS, _LIST = range(4)
_MOBILE_LABELS = frozenset({"mobile", "cell", "cellular", "cellulaire", "portable", "gsm", "sms", "texto", "handy"})


# -- rows into records ----------------------------------------------------------------


@attrs.define
class Record:
    line: int
    cells: tuple[Any, ...]
    id: str | None
    key: Any
    attributes: dict[str, Any]
    events: list[Event]
    duplicates: list[Record] = attrs.field(factory=list)


def _converter(field: Field, region: str, day_first: bool) -> Callable[[Any], Any]:
    """The function that reads one cell of ``field``: its value, None when blank, or InvalidValue."""
    kind = field.kind
    if kind is None:
        return lambda cell: cell_text(cell).strip() or None
    day_first = field.day_first if field.day_first is not None else day_first
    strict = field.strict
    read_text: Callable[[str], Any]
    match kind:
        case AttributeType.TEXT:
            read_text = normalise_email if field.email else str
        case AttributeType.NUMBER:
            read_text = normalise_number
        case AttributeType.DATETIME:
            read_text = lambda text: read_time(text, day_first, strict)
        case AttributeType.DATE:
            read_text = lambda text: read_time(text, day_first, strict).date()
        case AttributeType.BOOLEAN:
            invert = field.invert
            read_text = lambda text: read_flag(text, inverted=invert)
        case _:
            read_text = lambda text: normalise(text, kind, region=region, day_first=day_first)
    email = field.email
    invert = field.invert

    def convert(cell: Any) -> Any:
        if type(cell) is str:
            text = (unmark(cell) if cell[:1] == "'" else cell).strip()
            return read_text(text) if text else None
        if kind is AttributeType.BOOLEAN and cell is not None:
            if isinstance(cell, bool):
                return cell is not invert
            if isinstance(cell, dt.date):
                return not invert  # a date in a yes/no column: it happened then
            text = cell_text(cell).strip()
            return read_text(text) if text else None
        return normalise(cell, kind, region=region, day_first=day_first, email=email)

    return convert


def _phones_converter(region: str) -> Callable[[Any], list[Phone] | None]:
    nanp = region in ("US", "CA")

    def convert(cell: Any) -> list[Phone] | None:
        text = (cell if cell[:1] != "'" else unmark(cell)) if type(cell) is str else cell_text(cell)
        text = text.strip()
        if not text:
            return None
        if nanp:
            fast = FAST_NANP.fullmatch(text)
            if fast is not None and (fast.group(1) or "").strip(" .-") in ("", "1", "+1"):
                return [Phone("+1" + fast.group(2) + fast.group(3) + fast.group(4))]
        return [read_phone(part, region) for part in split_phones(text)]

    return convert


def _emails_converter(cell: Any) -> list[str] | None:
    text = (cell if cell[:1] != "'" else unmark(cell)) if type(cell) is str else cell_text(cell)
    text = text.strip()
    if not text:
        return None
    if text.count("@") < 2 and ":::" not in text:
        return [normalise_email(text)]
    return [normalise_email(part) for part in split_emails(text)]


def _list_converter(cell: Any) -> list[str] | None:
    text = cell_text(cell).strip()
    return read_list(text) or None if text else None


class _Tally:
    """Counts of what was done to cells (split, labelled, extensions kept), for the report's notes."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Column | None, str], list[int]] = {}

    def add(self, column: Column | None, message: str, line: int) -> None:
        entry = self.counts.get((column, message))
        if entry is None:
            self.counts[(column, message)] = [1, line]
        else:
            entry[0] += 1

    def notes(self) -> list[Note]:
        return [Note(column, message, count, line) for (column, message), (count, line) in self.counts.items()]


@attrs.frozen
class _Pool:
    """Where one kind of value goes: the main attribute, the mobile one (phones), the list of the others."""

    main: str | None
    mobile: str | None
    overflow: str | None
    noun: str


class RowReader:
    """Turns rows into records (normalised values and events) or rejects, for one plan."""

    def __init__(
        self,
        plan: Plan,
        key_field: Field | None,
        width: int,
        region: str,
        day_first: bool,
        on_bad_cell: BadCell = "reject_row",
    ) -> None:
        self.plan = plan
        self.width = width
        self.skip_cells = on_bad_cell == "skip_cell"
        self.tally = _Tally()
        self.key_field = key_field
        self.columns = list(plan.mapping)
        phone_overflow = plan.slot("other_phones", AttributeType.LIST)
        email_overflow = plan.slot("other_emails", AttributeType.LIST)
        main_phone = plan.field_for(f"{CUSTOMER}.phone")
        main_email = plan.field_for(f"{CUSTOMER}.email")
        self.phones = _Pool(
            main_phone.path.attribute if main_phone is not None else None,
            plan.slot("mobile_phone", AttributeType.PHONE),
            phone_overflow,
            "phone number",
        )
        email = main_email.path.attribute if main_email is not None else None
        self.emails = _Pool(email, None, email_overflow, "email")
        self.extensions = {
            attribute: f"{attribute}_extension"
            for attribute in plan.schema.categories.get(CUSTOMER, {})
            if plan.schema.lookup(Path(CUSTOMER, f"{attribute}_extension")) is AttributeType.TEXT
            and plan.field_for(f"{CUSTOMER}.{attribute}_extension") is None
        }
        steps: list[tuple[int, Field, Callable[[Any], Any], int, str | None, str, bool, int | None]] = []
        for f in plan.fields:
            shape = _PLAIN
            convert: Callable[[Any], Any]
            phones = f.kind is AttributeType.PHONE or (
                f.kind is AttributeType.LIST and f.path.attribute == phone_overflow
            )
            if f.path.is_customer and phones:
                shape, convert = _PHONES, _phones_converter(region)
            elif f.path.is_customer and f.email:
                shape, convert = _EMAILS, _emails_converter
            elif f.kind is AttributeType.LIST:
                shape, convert = _LIST, _list_converter
            else:
                convert = _converter(f, region, day_first)
            category = f.path.category if not f.path.is_customer else None
            steps.append((f.position, f, convert, shape, category, f.path.attribute, f is key_field, f.label))
        # A lone phone (or email) column without labels: its single values go straight to their attribute.
        alone = {
            shape
            for shape in (_PHONES, _EMAILS)
            if [(s[1].kind, s[7]) for s in steps if s[3] == shape]
            in ([(AttributeType.PHONE, None)], [(AttributeType.TEXT, None)])
        }
        self.steps = [(*step, step[1].is_id, step[3] in alone) for step in steps]
        self.late_key = (
            key_field.path.attribute
            if key_field is not None and key_field.path.is_customer and not key_field.is_id
            and any(s[1] is key_field and s[3] != _PLAIN for s in steps)
            else None
        )  # a key read from the pooled phones or emails, after they are placed

    def __call__(self, row: Row) -> tuple[Record | None, list[Reject], list[Reject]]:
        """The row's record (None when it has nothing to import or is rejected), its rejects, its skipped cells."""
        rejects: list[Reject] = []
        skipped: list[Reject] = []
        cells = row.cells
        size = len(cells)
        line = row.line
        if size > self.width:
            reason = f"a value beyond the last column ({size} cells, {self.width} columns)"
            rejects.append(Reject(line, self.width, reason, cells))
        skip_cells = self.skip_cells

        def bad(field: Field | None, column: Column | None, reason: str) -> None:
            if skip_cells and field is not None and not field.consent and not field.is_id:
                skipped.append(Reject(line, column, reason, cells))
            else:
                rejects.append(Reject(line, column, reason, cells))

        ident: str | None = None
        attributes: dict[str, Any] = {}
        event_fields: dict[str, dict[str, Any]] | None = None
        key: Any = None
        phones: list[tuple[Field, list[Phone], str]] | None = None
        emails: list[tuple[Field, list[str], str]] | None = None
        for position, field, convert, shape, category, attribute, is_key, label, is_id, alone in self.steps:
            if position >= size:
                continue
            try:
                value = convert(cells[position])
            except InvalidValue as error:
                bad(field, field.column, error.reason)
                continue
            if value is None:
                continue
            if shape == _PLAIN:
                if is_id:
                    ident = value
                elif category is None:
                    attributes[attribute] = value
                else:
                    if event_fields is None:
                        event_fields = {}
                    event_fields.setdefault(category, {})[attribute] = value
                if is_key:
                    key = value if is_id else match_key(value)
                continue
            if alone and len(value) == 1:
                single = value[0]
                if shape == _EMAILS:
                    attributes[attribute] = single
                elif single.extension is None:
                    attributes[attribute] = single.number
                else:
                    self._place(self.phones, [(field, value, "")], attributes, line, bad)
                continue
            label_text = cell_text(cells[label]).strip() if label is not None and label < size else ""
            if shape == _PHONES:
                phones = phones or []
                phones.append((field, value, label_text))
            elif shape == _EMAILS:
                emails = emails or []
                emails.append((field, value, label_text))
            else:
                items = attributes.setdefault(attribute, [])
                items.extend(item for item in value if item not in items)
        if phones:
            self._place(self.phones, phones, attributes, line, bad)
        if emails:
            self._place(self.emails, emails, attributes, line, bad)
        late = self.late_key
        if late is not None:
            value = attributes.get(late)
            if value is not None:
                key = match_key(value)
        events: list[Event] = []
        for category, values in (event_fields or {}).items():
            at = values.pop(EVENT_TIME, None)
            if at is None:
                time_field = self.plan.field_for(f"{category}.{EVENT_TIME}")
                where = time_field.column if time_field else None
                if any(r.column == where for r in skipped):
                    continue  # its time was a bad cell, left out: the event goes with it
                rejects.append(Reject(line, where, f"a {category} needs a time ({category}.at is blank)", cells))
                continue
            events.append(Event(category, at, values))
        if rejects:
            return None, rejects, []
        if ident is None and not attributes and not events:
            return None, [], skipped
        return Record(line, cells, ident, key, attributes, events), [], skipped

    def _place(
        self,
        pool: _Pool,
        found: Sequence[tuple[Field, list[Any], str]],
        attributes: dict[str, Any],
        line: int,
        bad: Callable[[Field | None, Column | None, str], None],
    ) -> None:
        """Put a row's phone numbers (or emails) in their attributes: see the module's docstring."""
        singles: dict[str, Any] = {}
        owners: dict[str, Field] = {}
        others: list[Any] = []
        primary = mobile = None
        mobile_label: Column | None = None
        tally = self.tally
        for field, values, label in found:
            attribute = field.path.attribute
            head, rest = values[0], values[1:]
            if field.kind is AttributeType.LIST or attribute in singles:
                others.extend(values)
            else:
                singles[attribute], owners[attribute] = head, field
                others.extend(rest)
            if rest:
                kept = f"customer.{pool.overflow}" if pool.overflow else "nowhere (no list attribute for them)"
                tally.add(field.column, f"cells held several {pool.noun}s: the first kept, the others in {kept}", line)
            if label:
                words = set(header_words(label).split())
                if primary is None and (label.startswith("*") or words & {"primary", "main", "principal"}):
                    primary = head
                if mobile is None and words & _MOBILE_LABELS:
                    mobile = head
                    mobile_label = self.columns[field.label] if field.label is not None else None
        main = pool.main
        if main is not None and primary is not None and singles.get(main) != primary:
            if main in singles:
                others.insert(0, singles[main])
            singles[main] = primary
            others = [value for value in others if value != primary]
            tally.add(owners[main].column if main in owners else None, f"labels named the primary {pool.noun}", line)
        if main is not None and main not in singles and others:
            singles[main] = others.pop(0)
        if pool.mobile is not None and mobile is not None and pool.mobile not in singles:
            singles[pool.mobile] = mobile
            others = [value for value in others if value != mobile]
            tally.add(mobile_label, f"labels named the mobile number: kept in customer.{pool.mobile}", line)
        taken = set(singles.values())
        others = [value for i, value in enumerate(others) if value not in taken and value not in others[:i]]
        for attribute, value in singles.items():
            if isinstance(value, Phone):
                attributes[attribute] = value.number
                if value.extension:
                    where = self.extensions.get(attribute)
                    owner = owners.get(attribute)
                    column = owner.column if owner is not None else None
                    if where is None:
                        reason = (
                            f"the extension {value.extension} of {value.number} cannot be kept:"
                            f" the schema has no customer.{attribute}_extension"
                        )
                        bad(owner, column, reason)
                    else:
                        attributes[where] = value.extension
                        tally.add(column, f"extensions kept in customer.{where}", line)
            else:
                attributes[attribute] = value
        if not others:
            return
        if pool.overflow is None:
            field = found[0][0]
            reason = f"{len(others) + len(singles)} {pool.noun}s in one row, and the schema has no list for the others"
            bad(field, field.column, reason)
            return
        texts = [_phone_text(v) if isinstance(v, Phone) else v for v in others]
        items = attributes.setdefault(pool.overflow, [])
        items.extend(text for text in texts if text not in items)


def _phone_text(phone: Phone) -> str:
    return phone.number if phone.extension is None else f"{phone.number} x{phone.extension}"


def match_key(value: Any) -> Any:
    if type(value) is str and value.isascii():
        return value.lower()
    if isinstance(value, str):
        return fold_text(value)
    return value


def _is_consent(name: str) -> bool:
    return name == "subscribed" or name.endswith("_subscribed")


def merge_records(old: Mapping[str, Any], new: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """``old`` updated with ``new`` by the policy; an opt-out (a consent that is false) always wins."""
    merged = dict(old)
    for name, value in new.items():
        if _is_consent(name) and (value is False or to_bool(merged.get(name)) is False):
            merged[name] = False
            continue
        if policy == "overwrite" or not is_known(merged.get(name)):
            merged[name] = value
    return merged


# -- the day/month order of date columns ------------------------------------------------


def settle_dates(
    plan: Plan,
    sample: Sequence[Row],
    day_first: bool,
    whole: Callable[[], AbstractContextManager[Iterable[Row]]] | None = None,
) -> tuple[Plan, list[Note]]:
    """The plan with each date column's day/month order told from its values, and notes on it.

    ``sample`` are the first rows; ``whole`` opens all of them, when there are
    more. A column whose first rows show one order (a day or a month over 12)
    takes it, and a later value that can only be read the other way is
    rejected; a column whose first rows cannot tell is read whole to tell; a
    column whose values never tell is read in ``day_first`` order, with a note.
    See :class:`~cohorts.imports.cells.DateOrders`.
    """
    fields = [f for f in plan.fields if f.kind in (AttributeType.DATE, AttributeType.DATETIME)]
    if not fields:
        return plan, []
    orders = _count_orders(sample, [f.position for f in fields])
    unsure = [p for p, told in orders.items() if told.either and not (told.day or told.month)]
    if whole is not None and unsure:
        with whole() as rows:
            orders.update(_count_orders(rows, unsure))
    notes: list[Note] = []
    settled: list[Field] = []
    for field in plan.fields:
        told = orders.get(field.position)
        if told is None:
            settled.append(field)
            continue
        first, strict, note = told.decide(day_first)
        partial = whole is not None and field.position not in unsure
        strict = strict or (partial and bool(told.day or told.month))  # a later value of the other order: rejected
        settled.append(attrs.evolve(field, day_first=first, strict=strict))
        if note is not None:
            notes.append(Note(field.column, note, 0))
    return attrs.evolve(plan, fields=tuple(settled)), notes


def _count_orders(rows: Iterable[Row], positions: Sequence[int]) -> dict[int, DateOrders]:
    orders = {position: DateOrders() for position in positions}
    items = list(orders.items())
    for row in rows:
        cells = row.cells
        size = len(cells)
        for position, order in items:
            if position < size and type(cells[position]) is str:
                order.add(cells[position])
    return orders
