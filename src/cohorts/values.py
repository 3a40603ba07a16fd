"""How data values are read for comparison: the one definition every backend shares.

A condition compares values of one *kind* (text, number, boolean, time or
phone). These functions turn a stored value into that kind, or into ``None``
when it is unknown or cannot be read as that kind. The in-memory evaluator
calls them per customer; SQL repositories call them at write time and store
the results as shadow values, so both read data the same way.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import math
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import phonenumbers
from dateutil.relativedelta import relativedelta

from .ast import Anchor, DatePart, Duration, Relative, Unit

__all__ = [
    "DEFAULT_REGION",
    "FALSE_WORDS",
    "TRUE_WORDS",
    "Kind",
    "decimal_sum",
    "event_time",
    "exact_decimal",
    "exact_number",
    "exact_product",
    "fold_text",
    "is_known",
    "local_time",
    "resolve_tz",
    "to_bool",
    "to_number",
    "to_phone",
    "to_time",
    "wide_int",
]

DEFAULT_REGION = "US"
UTC = dt.UTC


class Kind(enum.Enum):
    """What a condition compares: decided by the schema or by the rule's value."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIME = "time"
    PHONE = "phone"


def resolve_tz(tz: str | dt.tzinfo | None) -> dt.tzinfo:
    """A tzinfo from a zone name, a tzinfo, or None for UTC."""
    if tz is None:
        return UTC
    if isinstance(tz, str):
        try:
            return zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r}") from None
    return tz


def is_known(value: Any) -> bool:
    """False for None, blank text and empty lists: the values a rule calls *unknown*."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | tuple | set | frozenset):
        return any(is_known(v) for v in value)
    return True


def fold_text(value: Any) -> str | None:
    """Text for comparison: stripped, NFC-normalised and casefolded; None when blank.

    Numbers read as their text; other types are not text.

    Example:
        >>> fold_text("  ÉCOLE "), fold_text("Straße"), fold_text(""), fold_text(42)
        ('école', 'strasse', None, '42')
    """
    if value.__class__ is str and value.isascii():  # the fast path: no normalisation needed
        text: str = value.strip()
        return text.lower() if text else None
    text = _as_text(value)  # type: ignore[assignment]
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if text.isascii():
        return text.lower()
    folded = unicodedata.normalize("NFC", text).casefold()
    return unicodedata.normalize("NFC", folded)


def _as_text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    return str(value)


MIN_INT = -(2**63)  # the integers SQL databases hold (64-bit): MIN_INT <= n <= MAX_INT
MAX_INT = 2**63 - 1


def wide_int(number: int) -> int | float | None:
    """An integer as a number is read: itself within 64 bits, the nearest float beyond.

    SQL databases hold 64-bit integers, so every backend reads a larger one
    (stored or in a rule) as the float nearest to it: 2**63 and 2**63 + 1 are
    then the same number. None when even a float cannot hold it (unknown).

    Example:
        >>> wide_int(42), wide_int(2**63), wide_int(10**400)
        (42, 9.223372036854776e+18, None)
    """
    if MIN_INT <= number <= MAX_INT:
        return number
    try:
        return float(number)
    except OverflowError:
        return None


_FLOAT_INTEGERS = 2.0**53  # every float at least this large in magnitude is an integer


def exact_number(number: int | float) -> int | float:
    """A number with every digit of its value: a float of 2**53 or more in magnitude as the integer it is.

    ``repr`` writes such a float rounded (``9.223372036854776e+18`` for 2**63),
    which a database's exact decimal would read as another number; its
    integer reads back as the same float where floats are kept (SQLite) and
    compares exactly where decimals are (PostgreSQL).

    Example:
        >>> exact_number(2.0**63), exact_number(0.1), exact_number(7)
        (9223372036854775808, 0.1, 7)
    """
    if number.__class__ is float and abs(number) >= _FLOAT_INTEGERS and math.isfinite(number):
        return int(number)
    return number


# Exact decimal arithmetic: a float's decimal has at most about 770 digits, so no sum of them rounds.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def exact_decimal(number: int | float) -> Decimal:
    """A number as the decimal its stored text writes: a float as its shortest ``repr`` (``0.1`` is
    exactly 0.1), one of 2**53 or more as the integer it is (:func:`exact_number`).

    This is the value a sum adds, on every backend: PostgreSQL reads the same text as NUMERIC.

    Example:
        >>> exact_decimal(0.1) + exact_decimal(0.2) == exact_decimal(0.3)
        True
    """
    exact = exact_number(number)
    return Decimal(exact) if exact.__class__ is int else Decimal(repr(exact))


def decimal_sum(numbers: Iterable[int | float]) -> Decimal:
    """The exact sum of ``numbers``, each read as :func:`exact_decimal` reads it (0 for none).

    Example:
        >>> decimal_sum([0.1, 0.2]), decimal_sum([2**62, 2**62, 1])
        (Decimal('0.3'), Decimal('9223372036854775809'))
    """
    total = Decimal(0)
    add = _EXACT.add
    for number in numbers:
        total = add(total, exact_decimal(number))
    return total


def exact_product(number: Decimal, times: int) -> Decimal:
    """``number * times`` without rounding (what an average is compared through: avg > c is sum > c * n)."""
    return _EXACT.multiply(number, Decimal(times))


def to_number(value: Any) -> int | float | None:
    """A number, from a number or numeric text; None otherwise (booleans are not numbers).

    Integers beyond 64 bits read as the nearest float (:func:`wide_int`);
    infinities and NaNs (``Decimal("NaN")``, ``Decimal("sNaN")``, ``"nan"``)
    are not numbers: None.
    """
    if value.__class__ is int:
        return value if MIN_INT <= value <= MAX_INT else wide_int(value)
    if value.__class__ is float and math.isfinite(value):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return wide_int(int(value))
    if isinstance(value, Decimal) and not value.is_finite():  # float() refuses a signalling NaN
        return None
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return wide_int(int(text))
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


TRUE_WORDS = frozenset({"true", "yes", "y", "1", "vrai", "oui"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "faux", "non"})


def to_bool(value: Any) -> bool | None:
    """A boolean, from a boolean, 0/1 or words such as yes/no; None otherwise."""
    if value is True or value is False:
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def to_time(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    """An aware datetime, from a datetime, a date or ISO text; naive ones are read in ``tz``.

    None for an instant outside datetime's range in UTC (``0001-01-01T00:00+14:00``,
    ``datetime.max`` read west of Greenwich): databases store times as UTC, so no
    backend can place it.
    """
    if isinstance(value, dt.datetime):
        time = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    elif isinstance(value, dt.date):
        time = dt.datetime(value.year, value.month, value.day, tzinfo=tz)
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        time = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)
    else:
        return None
    return time if _in_utc_range(time) else None


_NEAR_EDGE = (dt.date(1, 1, 2), dt.date(9999, 12, 30))  # within a day of these, an offset may overflow


def _in_utc_range(time: dt.datetime) -> bool:
    """Whether an aware datetime can be shown in UTC (checked only near datetime's limits)."""
    day = time.date()
    if _NEAR_EDGE[0] < day < _NEAR_EDGE[1]:
        return True
    try:
        time.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return True


def local_time(time: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """An aware datetime shown in ``tz``; None when that is outside datetime's range."""
    try:
        return time.astimezone(tz)
    except (OverflowError, ValueError):
        return None


def event_time(at: Any, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """An event's time, aware, and the same shown in ``tz``: ValueError when either is out of range.

    Every repository refuses such an event when it is written, so none holds
    an event whose time or date parts some backend could not place.
    """
    if not isinstance(at, dt.date):
        raise ValueError(f"an event's time is a date or datetime, not {at!r}")
    time = to_time(at, tz)
    local = None if time is None else local_time(time, tz)
    if time is None or local is None:
        raise ValueError(f"an event's time {at.isoformat()} is out of range in UTC or in the time zone {tz}")
    return time, local


@functools.lru_cache(maxsize=65536)
def _phone(text: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def to_phone(value: Any, region: str = DEFAULT_REGION) -> str | None:
    """A phone number in E.164 form, read with ``region`` as the default country.

    Example:
        >>> to_phone("(514) 555 0199"), to_phone("+1 514-555-0199"), to_phone("call me")
        ('+15145550199', '+15145550199', None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return _phone(value.strip(), region)


class MonthDay(int):
    """A month and day as the number ``month * 100 + day`` (``1225`` is December 25), shown as ISO 8601
    shows a date without its year (``--12-25``): what an anniversary reads."""

    def __str__(self) -> str:
        return f"--{self // 100:02d}-{self % 100:02d}"

    __repr__ = __str__


def date_part(value: dt.datetime, part: DatePart, tz: dt.tzinfo) -> int | None:
    """The year, month, day or ISO weekday (Monday is 1) of an instant, in ``tz``, or its anniversary (a
    :class:`MonthDay`).

    None when the instant cannot be shown in ``tz`` (out of datetime's range).
    """
    local = local_time(value, tz)
    if local is None:
        return None
    match part:
        case DatePart.ANNIVERSARY:
            return MonthDay(local.month * 100 + local.day)
        case DatePart.YEAR:
            return local.year
        case DatePart.MONTH:
            return local.month
        case DatePart.DAY:
            return local.day
        case DatePart.WEEKDAY:
            return local.isoweekday()
    raise AssertionError(part)


def coercer(kind: Kind, tz: dt.tzinfo, region: str) -> Callable[[Any], Any]:
    """The function that reads a stored value as ``kind``."""
    match kind:
        case Kind.TEXT:
            return fold_text
        case Kind.NUMBER:
            return to_number
        case Kind.BOOLEAN:
            return to_bool
        case Kind.TIME:
            return functools.partial(to_time, tz=tz)
        case Kind.PHONE:
            return functools.partial(to_phone, region=region)
    raise AssertionError(kind)


# -- time values in rules -------------------------------------------------

_DELTAS: dict[Unit, Callable[[int], relativedelta | dt.timedelta]] = {
    Unit.MINUTES: lambda n: dt.timedelta(minutes=n),
    Unit.HOURS: lambda n: dt.timedelta(hours=n),
    Unit.DAYS: lambda n: relativedelta(days=n),
    Unit.WEEKS: lambda n: relativedelta(weeks=n),
    Unit.MONTHS: lambda n: relativedelta(months=n),
    Unit.YEARS: lambda n: relativedelta(years=n),
}


def shift(now: dt.datetime, amount: int, unit: Unit, tz: dt.tzinfo) -> dt.datetime:
    """``now`` moved by ``amount`` units; days and longer move on the calendar of ``tz``.

    Calendar units keep the wall-clock time across daylight-saving changes
    (7 days after 09:00 is 09:00), and months are calendar months.
    """
    delta = _DELTAS[unit](amount)
    if isinstance(delta, dt.timedelta):
        return (now.astimezone(UTC) + delta).astimezone(tz)
    local = now.astimezone(tz).replace(tzinfo=None) + delta
    return _localize(local, tz)


def _localize(naive: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    # Round-trip through UTC so a wall time that does not exist (DST gap) is normalised.
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)


def day_start(value: dt.datetime | dt.date, tz: dt.tzinfo, days: int = 0) -> dt.datetime:
    """Midnight, in ``tz``, of the day of ``value`` plus ``days``."""
    day = value.astimezone(tz).date() if isinstance(value, dt.datetime) else value
    day = day + dt.timedelta(days=days)
    return _localize(dt.datetime(day.year, day.month, day.day), tz)


def month_start(value: dt.datetime | dt.date, tz: dt.tzinfo, months: int = 0) -> dt.datetime:
    """Midnight, in ``tz``, of the first day of the month of ``value`` plus ``months``."""
    day = value.astimezone(tz).date() if isinstance(value, dt.datetime) else value
    index = day.year * 12 + day.month - 1 + months
    return _localize(dt.datetime(index // 12, index % 12 + 1, 1), tz)


_MONTH_ANCHORS = {Anchor.THIS_MONTH: 0, Anchor.LAST_MONTH: -1, Anchor.NEXT_MONTH: 1}
_DAY_ANCHORS = {Anchor.TODAY: 0, Anchor.YESTERDAY: -1, Anchor.TOMORROW: 1}


@functools.total_ordering
class Interval:
    """A resolved time value: the instant ``start``, or the day ``[start, end)``."""

    __slots__ = ("end", "start")

    def __init__(self, start: dt.datetime, end: dt.datetime | None = None) -> None:
        self.start = start
        self.end = end

    @property
    def is_day(self) -> bool:
        return self.end is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interval) and (self.start, self.end) == (other.start, other.end)

    def __lt__(self, other: Interval) -> bool:
        return self.start < other.start

    def __hash__(self) -> int:
        return hash((self.start, self.end))

    def __repr__(self) -> str:
        if self.end is None:
            return self.start.isoformat()
        return f"{self.start.date().isoformat()} (the day)"


def resolve_time(value: Any, now: dt.datetime, tz: dt.tzinfo, *, as_day: bool = False) -> Interval:
    """The instant or day a rule's time value stands for at ``now``.

    Dates and ``today``/``yesterday``/``tomorrow`` are days, ``this month``,
    ``last month`` and ``next month`` calendar months (in ``tz``); datetimes,
    ``now`` and relative times are instants, except that ``as_day`` (used by
    ``=`` and ``!=``) makes a relative time of days or longer stand for its
    whole day.
    """
    if isinstance(value, Relative):
        instant = shift(now, -value.amount if value.ago else value.amount, value.unit, tz)
        if as_day and value.unit not in (Unit.MINUTES, Unit.HOURS):
            return Interval(day_start(instant, tz), day_start(instant, tz, 1))
        return Interval(instant)
    if isinstance(value, Anchor):
        if value is Anchor.NOW:
            return Interval(now)
        if value in _MONTH_ANCHORS:
            months = _MONTH_ANCHORS[value]
            return Interval(month_start(now, tz, months), month_start(now, tz, months + 1))
        offset = _DAY_ANCHORS[value]
        return Interval(day_start(now, tz, offset), day_start(now, tz, offset + 1))
    if isinstance(value, dt.datetime):
        return Interval(value if value.tzinfo else value.replace(tzinfo=tz))
    if isinstance(value, dt.date):
        return Interval(day_start(value, tz), day_start(value, tz, 1))
    raise TypeError(f"not a time: {value!r}")


def window(duration: Duration, now: dt.datetime, tz: dt.tzinfo, *, last: bool) -> tuple[dt.datetime, dt.datetime]:
    """The closed range ``within last``/``within next`` a duration covers."""
    if last:
        return shift(now, -duration.amount, duration.unit, tz), now
    return now, shift(now, duration.amount, duration.unit, tz)
