"""Reports by customer group: a measure per group, as rows of plain dicts that print as a table.

A measure is the number of customers, or the count, sum or average of an
event field over a date range::

    customers                     members of each group
    count(invoice)                invoices of the members
    sum(invoice.total)            total of the members' invoices
    average(time_entry.minutes)   average per event

A customer in several groups counts in each. Rows work with
``pandas.DataFrame(rows)`` and ``csv.DictWriter``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ._html import html_table
from .ast import Path
from .errors import UnknownAttributeError
from .model import Customer, CustomerId
from .schema import AttributeType, Schema
from .values import day_start, to_number, to_time

if TYPE_CHECKING:
    from .groups import Groups

__all__ = ["Measure", "Report", "format_table", "report"]

_MEASURE = re.compile(r"\s*(count|sum|average|avg|mean)\s*\(\s*([^()]+?)\s*\)\s*\Z", re.IGNORECASE)
_KINDS = {"count": "count", "sum": "sum", "average": "average", "avg": "average", "mean": "average"}


@attrs.frozen
class Measure:
    """What a report aggregates per group.

    Attributes:
        kind: ``"customers"``, ``"count"``, ``"sum"`` or ``"average"``.
        event: the event name (not for ``customers``).
        field: the event's field (``sum`` and ``average``).

    Example:
        >>> Measure.parse("sum(invoice.total)")
        Measure(kind='sum', event='invoice', field='total')
        >>> str(Measure.parse("AVG( time_entry.minutes )"))
        'average(time_entry.minutes)'
    """

    kind: str
    event: str | None = None
    field: str | None = None

    @classmethod
    def parse(cls, text: str) -> Measure:
        """Read ``customers``, ``count(EVENT)``, ``sum(EVENT.FIELD)`` or ``average(EVENT.FIELD)``."""
        if not isinstance(text, str):
            raise TypeError(f"a measure is text such as 'sum(invoice.total)', not {type(text).__name__}")
        if text.strip().lower() == "customers":
            return cls("customers")
        match = _MEASURE.match(text)
        if match is None:
            raise ValueError(
                f"unknown measure {text!r}: use customers, count(EVENT), sum(EVENT.FIELD) or average(EVENT.FIELD)"
            )
        kind, target = _KINDS[match.group(1).lower()], match.group(2)
        if kind == "count":
            return cls("count", target, None)
        event, dot, field = target.rpartition(".")
        if not dot or not event or not field:
            raise ValueError(f"{kind} needs an event and a field, as in {kind}(invoice.total), not {text!r}")
        return cls(kind, event, field)

    def __str__(self) -> str:
        if self.kind == "customers":
            return "customers"
        if self.kind == "count":
            return f"count({self.event})"
        return f"{self.kind}({self.event}.{self.field})"

    def check(self, schema: Schema) -> None:
        """Check the measure against ``schema`` as a rule is checked: an unknown event or field raises
        :class:`cohorts.UnknownAttributeError` with the nearest name, and summing or averaging what is
        not a number a ValueError.

        Example:
            >>> from cohorts.schema import default_schema
            >>> Measure.parse("sum(invoice.totl)").check(default_schema())
            Traceback (most recent call last):
            ...
            cohorts.errors.UnknownAttributeError: unknown attribute 'invoice.totl'; did you mean 'invoice.total'?
        """
        if self.event is None:
            return
        if self.event not in schema.event_names:
            close = difflib.get_close_matches(self.event, sorted(schema.event_names), n=1)
            raise UnknownAttributeError(self.event, close[0] if close else None, what="event")
        if self.field is None:
            return
        kind = schema.type_of(Path(self.event, self.field))
        if kind is not AttributeType.NUMBER:
            raise ValueError(f"{self} needs a number, and {self.event}.{self.field} is {kind.value}")


class Report(list[dict[str, Any]]):
    """The rows of a report (plain dicts); ``str(report)`` is a text table."""

    def __str__(self) -> str:
        return format_table(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return html_table(self) if self else "<p>(no rows)</p>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as an aligned text table (numbers to the right).

    Example:
        >>> print(format_table([{"group": "VIP", "customers": 1200}, {"group": "All", "customers": 5}]))
        group  customers
        -----  ---------
        VIP        1,200
        All            5
    """
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _bound(value: dt.date | dt.datetime | str | None, tz: dt.tzinfo, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value) if len(value.strip()) == 10 else dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} is a date or datetime, not {value!r}") from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, dt.date):
        return day_start(value, tz)
    raise TypeError(f"{name} is a date or datetime, not {type(value).__name__}")


def _aggregate(
    measure: Measure, customers: Iterable[Customer], start: dt.datetime | None, end: dt.datetime | None, tz: dt.tzinfo
) -> tuple[int, float | int | None]:
    """(events counted, value) of a measure over some customers' events in [start, end).

    Sums are taken in decimal over the numbers as written (``repr`` of a float), so
    invoice totals add up to what an accountant gets: 37390.02, not 37390.020000000004.
    """
    count = 0
    values: list[Decimal] = []
    for customer in customers:
        for event in customer.events_named(measure.event or ""):
            at = to_time(event.at, tz)
            if at is None or (start is not None and at < start) or (end is not None and at >= end):
                continue
            count += 1
            if measure.kind != "count":
                number = to_number(event.attributes.get(measure.field or ""))
                if number is not None:
                    values.append(Decimal(number) if isinstance(number, int) else Decimal(repr(number)))
    if measure.kind == "count":
        return count, count
    total = sum(values, Decimal(0))
    if measure.kind == "sum":
        return count, float(total)
    return count, (float(total / len(values)) if values else None)


def report(
    groups: Groups,
    measure: str | Measure = "customers",
    by: str = "group",
    start: dt.date | dt.datetime | str | None = None,
    end: dt.date | dt.datetime | str | None = None,
    *,
    names: Iterable[str] | None = None,
    now: dt.datetime | None = None,
    schema: Schema | None = None,
) -> Report:
    """Aggregate a measure per group (``by="group"``) or per group and origin (``by="origin"``).

    Every row has ``group`` (and ``origin``), ``customers`` (members counted)
    and, for event measures, the measure's value under its name, computed
    over events with ``start <= at < end`` (dates are whole days in the
    repository's time zone). Members are taken at ``now``.

    The measure is checked (see :meth:`Measure.check`) against ``schema`` when given, else the
    repository's declared schema; without either, a measure of an event the default schema knows
    must name one of its fields (``sum(invoice.totl)`` is an error that suggests ``invoice.total``;
    pass or declare a schema for fields of your own).

    Example:
        >>> import datetime as dt
        >>> from cohorts import Customer, Event
        >>> from cohorts.groups import Groups
        >>> from cohorts.repository import MemoryRepository
        >>> repo = MemoryRepository([
        ...     Customer(1, {"city": "Laval"}, [Event("invoice", "2026-10-03", {"total": 120.5})]),
        ...     Customer(2, {"city": "Laval"}, [Event("invoice", "2026-09-28", {"total": 80})]),
        ...     Customer(3, {"city": "Lévis"}, [Event("invoice", "2026-10-09", {"total": "40"})]),
        ... ])
        >>> groups = Groups(repo)
        >>> groups.create("Laval", 'customer.city = "Laval"')
        >>> groups.create("VIP")
        >>> _ = groups.add("VIP", 1, 3)
        >>> now = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
        >>> print(report(groups, "sum(invoice.total)", start="2026-10-01", end="2026-11-01", now=now))
        group  customers  sum(invoice.total)
        -----  ---------  ------------------
        Laval          2              120.50
        VIP            2              160.50

    .. versionadded:: 0.1
    """
    from .groups import Groups

    if not isinstance(groups, Groups):
        raise TypeError(f"report needs a cohorts.Groups over a repository, not {type(groups).__name__}")
    chosen = Measure.parse(measure) if isinstance(measure, str) else measure
    if not isinstance(chosen, Measure):
        raise TypeError(f"a measure is text or a Measure, not {type(measure).__name__}")
    if by not in ("group", "origin"):
        raise ValueError(f'by is "group" or "origin", not {by!r}')
    # Checked against the declared schema; without one, the fields of the events the default schema
    # knows (a typo in invoice.total), as an undeclared repository takes events of its own in rules.
    if schema is None:
        schema = groups.repository.declared_schema
    if schema is None and chosen.event in groups.repository.schema.event_names:
        schema = groups.repository.schema
    if schema is not None:
        chosen.check(schema)
    tz = groups.repository.tz
    low, high = _bound(start, tz, "start"), _bound(end, tz, "end")
    if low is not None and high is not None and high < low:
        raise ValueError("end is before start")
    group_names = groups.names() if names is None else list(names)
    cache: dict[CustomerId, Customer | None] = {}

    def customers(ids: Iterable[CustomerId]) -> list[Customer]:
        found = []
        for cid in ids:
            if cid not in cache:
                cache[cid] = groups.repository.get(cid)
            customer = cache[cid]
            if customer is not None:
                found.append(customer)
        return found

    rows = Report()
    for name in group_names:
        members = groups.members(name, now)
        label = groups.definition(name).name
        if by == "group":
            buckets: list[tuple[dict[str, Any], list[CustomerId]]] = [({"group": label}, list(members))]
        else:
            from .groups import Origin

            buckets = [
                ({"group": label, "origin": origin.value}, [cid for cid, found in members.items() if origin in found])
                for origin in Origin
            ]
        for head, ids in buckets:
            row = {**head, "customers": len(ids)}
            if chosen.kind != "customers":
                _, value = _aggregate(chosen, customers(ids), low, high, tz)
                row[str(chosen)] = value
            rows.append(row)
    return rows
