"""Schemas: which categories and attributes exist, and their types."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from .ast import CUSTOMER, EVENT_TIME, FIELD_AGGREGATES, Aggregate, Path
from .errors import UnknownAttributeError

__all__ = ["AttributeType", "Schema", "default_schema"]


class AttributeType(enum.Enum):
    """The type of an attribute, which decides how conditions compare it."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    PHONE = "phone"
    LIST = "list"  # a list of text


def _freeze(categories: Mapping[str, Mapping[str, AttributeType | str]]) -> Mapping[str, Mapping[str, AttributeType]]:
    return MappingProxyType(
        {
            category: MappingProxyType({name: AttributeType(kind) for name, kind in attributes.items()})
            for category, attributes in categories.items()
        }
    )


@attrs.frozen
class Schema:
    """Categories (``customer`` and event names) and their typed attributes.

    Every event category also has ``at`` (a datetime) and the aggregates
    ``count``, ``first_time`` and ``last_time``, and ``sum``, ``avg``, ``min``
    and ``max`` of its fields. Schemas are values: ``add`` returns a new schema.

    Example:
        >>> schema = default_schema().add("customer", "pet", "text")
        >>> schema.type_of(Path.of("customer.pet"))
        <AttributeType.TEXT: 'text'>
    """

    categories: Mapping[str, Mapping[str, AttributeType]] = attrs.field(converter=_freeze)

    def add(self, category: str, name: str, kind: AttributeType | str = AttributeType.TEXT) -> Schema:
        """A schema with one more attribute (or category, for a new event name)."""
        categories = {c: dict(a) for c, a in self.categories.items()}
        categories.setdefault(category, {})[name] = AttributeType(kind)
        return Schema(categories)

    def merge(self, other: Schema) -> Schema:
        """A schema with the attributes of both (``other`` wins on conflicts)."""
        categories = {c: dict(a) for c, a in self.categories.items()}
        for category, attributes in other.categories.items():
            categories.setdefault(category, {}).update(attributes)
        return Schema(categories)

    @property
    def event_names(self) -> frozenset[str]:
        """The names of the event categories."""
        return frozenset(c for c in self.categories if c != CUSTOMER)

    def has(self, path: Path) -> bool:
        """True when the schema declares what ``path`` reads."""
        return self.lookup(path) is not None

    def lookup(self, path: Path) -> AttributeType | None:
        """The declared type of ``path``'s attribute (before any date part), or None."""
        attributes = self.categories.get(path.category)
        if attributes is None:
            return None
        if not path.is_customer:
            if path.attribute == EVENT_TIME:
                return AttributeType.DATETIME
            aggregate = path.aggregate
            if aggregate is Aggregate.COUNT:
                return AttributeType.NUMBER
            if aggregate in FIELD_AGGREGATES:  # the type of the field aggregated
                return None if path.field is None else attributes.get(path.field)
            if aggregate is not None:
                return AttributeType.DATETIME
        return attributes.get(path.attribute)

    def type_of(self, path: Path) -> AttributeType:
        """The declared type of ``path``; raises UnknownAttributeError with a suggestion."""
        kind = self.lookup(path)
        if kind is not None:
            return kind
        if path.category not in self.categories:
            raise UnknownAttributeError(str(path), self._suggest_category(path), what="category")
        names = list(self.categories[path.category])
        if path.aggregate in FIELD_AGGREGATES and path.field is not None:
            close = difflib.get_close_matches(path.field, names, n=1, cutoff=0.6)
            suggestion = str(attrs.evolve(path, field=close[0])) if close else None
            raise UnknownAttributeError(str(path), suggestion)
        if not path.is_customer:
            names += [EVENT_TIME, *(a.value for a in Aggregate)]
        close = difflib.get_close_matches(path.attribute, names, n=1, cutoff=0.6)
        suggestion = str(attrs.evolve(path, attribute=close[0])) if close else None
        raise UnknownAttributeError(str(path), suggestion)

    def _suggest_category(self, path: Path) -> str | None:
        close = difflib.get_close_matches(path.category, list(self.categories), n=1, cutoff=0.6)
        return str(attrs.evolve(path, category=close[0])) if close else None

    def paths(self) -> Iterable[str]:
        """Every declared path, as text."""
        for category, attributes in self.categories.items():
            for name in attributes:
                yield str(Path(category, name))


_T = AttributeType

_DEFAULT = {
    CUSTOMER: {
        "first_name": _T.TEXT,
        "last_name": _T.TEXT,
        "email": _T.TEXT,
        "phone": _T.PHONE,
        "mobile_phone": _T.PHONE,
        "phone_extension": _T.TEXT,
        "mobile_phone_extension": _T.TEXT,
        "other_phones": _T.LIST,
        "other_emails": _T.LIST,
        "city": _T.TEXT,
        "region": _T.TEXT,
        "postal_code": _T.TEXT,
        "language": _T.TEXT,
        "status": _T.TEXT,
        "subscribed": _T.BOOLEAN,
        "email_subscribed": _T.BOOLEAN,
        "sms_subscribed": _T.BOOLEAN,
        "vehicle_make": _T.TEXT,
        "vehicle_model": _T.TEXT,
        "vehicle_year": _T.NUMBER,
        "tags": _T.LIST,
        "created_at": _T.DATETIME,
        "timezone": _T.TEXT,
    },
    "appointment": {"service": _T.TEXT, "status": _T.TEXT, "advisor": _T.TEXT},
    "message.received": {"body": _T.TEXT, "channel": _T.TEXT},
    "message.sent": {"body": _T.TEXT, "channel": _T.TEXT},
    "repair_order.opened": {"number": _T.TEXT, "advisor": _T.TEXT, "total": _T.NUMBER},
    "repair_order.closed": {"number": _T.TEXT, "advisor": _T.TEXT, "total": _T.NUMBER},
    "invoice": {"number": _T.TEXT, "total": _T.NUMBER, "status": _T.TEXT},
    "review": {"rating": _T.NUMBER, "source": _T.TEXT, "comment": _T.TEXT},
    "note": {"body": _T.TEXT, "author": _T.TEXT},
}

_DEFAULT_SCHEMA = Schema(_DEFAULT)


def default_schema() -> Schema:
    """The schema of the reference articles' categories.

    ``customer`` has first_name, last_name, email, phone, mobile_phone,
    phone_extension, mobile_phone_extension, other_phones and other_emails
    (lists: the numbers and addresses beyond the first), city, region,
    postal_code, language, status (active/inactive), subscribed (all
    marketing), email_subscribed and sms_subscribed (consent per channel),
    vehicle_make, vehicle_model, vehicle_year, tags, created_at and timezone;
    the event categories are appointment, message.received, message.sent,
    repair_order.opened, repair_order.closed, invoice, review and note.

    Example:
        >>> sorted(default_schema().event_names)[:3]
        ['appointment', 'invoice', 'message.received']
    """
    return _DEFAULT_SCHEMA
