"""Customers and their events, as plain values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import attrs

__all__ = ["Customer", "CustomerId", "Event"]

CustomerId: TypeAlias = str | int
"""A customer's id: text or an integer (never a boolean). ``1`` and ``"1"`` are two customers."""


def _instant(value: dt.datetime | dt.date | str) -> dt.datetime | dt.date:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"an event's time is a datetime, a date or ISO text, not {value!r}")


def _attributes(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else value


@attrs.frozen(hash=False)
class Event:
    """Something that happened to a customer: an appointment, a closed repair order...

    ``name`` is the event's category (``"repair_order.closed"``), ``at`` when it
    happened (a naive datetime is read in the evaluation's time zone) and
    ``attributes`` its fields.

    Example:
        >>> Event("appointment", "2026-03-01T10:00", {"service": "oil change"}).at
        datetime.datetime(2026, 3, 1, 10, 0)
    """

    name: str
    at: dt.datetime | dt.date = attrs.field(converter=_instant)
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=_attributes)


def _events(value: Iterable[Event] | None) -> tuple[Event, ...]:
    return () if value is None else tuple(value)


@attrs.frozen(hash=False)
class Customer:
    """A customer: an id, attributes (any mapping) and events.

    Attribute values are text, numbers, booleans, dates, datetimes or lists of
    text; a missing attribute, ``None`` and blank text are all *unknown*.

    Example:
        >>> c = Customer("c1", {"city": "Laval"}, [Event("appointment", "2026-01-05")])
        >>> c.events_named("appointment")[0].at
        datetime.datetime(2026, 1, 5, 0, 0)
    """

    id: CustomerId
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=_attributes)
    events: tuple[Event, ...] = attrs.field(factory=tuple, converter=_events)
    # The events by category, made by the first ``events_named`` (a customer only written is never indexed).
    _by_name: Mapping[str, tuple[Event, ...]] | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def events_named(self, name: str) -> tuple[Event, ...]:
        """This customer's events of one category, in the order given."""
        by_name = self._by_name
        if by_name is None:
            grouped: dict[str, list[Event]] = {}
            for event in self.events:
                grouped.setdefault(event.name, []).append(event)
            by_name = {category: tuple(events) for category, events in grouped.items()}
            object.__setattr__(self, "_by_name", by_name)  # a cache: the customer's value does not change
        return by_name.get(name, ())

    def with_attributes(self, **changes: Any) -> Customer:
        """A copy with some attributes changed."""
        return Customer(self.id, {**self.attributes, **changes}, self.events)

    def with_events(self, events: Iterable[Event]) -> Customer:
        """A copy with more events."""
        return Customer(self.id, self.attributes, (*self.events, *events))
