"""A cell's text read as a value of its attribute's type: phones (and extensions), emails, numbers, dates,
yes/no and consent, lists; cells that hold several values; the day/month order of a column of dates."""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeAlias

import attrs
import phonenumbers
from dateutil import parser as date_parser

from ..errors import CohortsError
from ..schema import AttributeType
from ..values import DEFAULT_REGION, to_bool
from .reading import cell_text

# -- values ----------------------------------------------------------------------


class InvalidValue(CohortsError, ValueError):
    """A cell's value cannot be read as its target's type; ``reason`` says why."""

    __module__ = "cohorts.importers"  # raised and documented as cohorts.importers.InvalidValue

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_NANP_REGIONS = frozenset({"US", "CA"})
FAST_NANP = re.compile(r"(\+?1[ .-]?)?\(?([2-9][0-9]{2})\)?[ .-]?([0-9]{3})[ .-]?([0-9]{4})")
_SEPARATORS = re.compile(r"\s*(?:[,;/|&\n]|\s(?:or|ou|and|et|y)\s)\s*", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s,;:<>()\[\]\"]+@[^@\s,;:<>()\[\]\"]+\.[^@\s,;:<>()\[\]\".]{2,}")
_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "no area code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
}


class Phone(NamedTuple):
    """A phone number read from a cell: E.164, and the extension (its digits) when the cell had one."""

    number: str
    extension: str | None = None


_EXTENSION = re.compile(
    r"[\s,;]*(?:(?:ext|extn|extension|poste|post|p\.|x)\.?\s*:?\s*|#\s*)(\d{1,7})\s*$", re.IGNORECASE
)


def normalise_phone(text: str, region: str = DEFAULT_REGION) -> str:
    """A phone number in E.164 form, with ``region`` as the default country; raises InvalidValue.

    An extension is not part of the number (see :func:`read_phone` to keep it).

    Example:
        >>> normalise_phone("(514) 555-0199"), normalise_phone("06 12 34 56 78", "FR")
        ('+15145550199', '+33612345678')
        >>> normalise_phone("514 555 0199 / 450 555 0123")
        Traceback (most recent call last):
        ...
        cohorts.importers.InvalidValue: two phone numbers in one cell: '514 555 0199 / 450 555 0123'
    """
    return _parse_phone(text.strip(), region)[0]


def read_phone(text: str, region: str = DEFAULT_REGION) -> Phone:
    """A phone number in E.164 form and its extension (``x123``, ``ext. 45``, ``poste 204``, ``#12``).

    The extension is taken off before the number is read: phonenumbers reads
    the Québec ``poste`` as letters of the number. Raises InvalidValue.

    Example:
        >>> read_phone("(514) 555-0101 poste 204", "CA"), read_phone("+1 514-555-0101 ext. 45")
        (Phone(number='+15145550101', extension='204'), Phone(number='+15145550101', extension='45'))
        >>> read_phone("514.555.0101")
        Phone(number='+15145550101', extension=None)
    """
    text = text.strip()
    extension: str | None = None
    found = _EXTENSION.search(text)
    if found is not None and sum(c.isdigit() for c in text[: found.start()]) >= 7:
        text, extension = text[: found.start()], found.group(1)
    number, own = _parse_phone(text, region)
    return Phone(number, extension or own)


def _parse_phone(text: str, region: str) -> tuple[str, str | None]:
    if region in _NANP_REGIONS or text.startswith("+1"):
        fast = FAST_NANP.fullmatch(text)
        if fast is not None and (fast.group(1) or "").strip(" .-") in ("", "1", "+1"):
            return "+1" + fast.group(2) + fast.group(3) + fast.group(4), None
    chunks = [c for c in _SEPARATORS.split(text) if sum(ch.isdigit() for ch in c) >= 7]
    if len(chunks) > 1 or sum(ch.isdigit() for ch in text) > 17:
        raise InvalidValue(f"two phone numbers in one cell: {text!r}")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidValue(f"not a phone number: {text!r} ({_parse_reason(error)})") from None
    result = phonenumbers.is_possible_number_with_reason(number)
    if result != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidValue(f"not a phone number: {text!r} ({_REASONS.get(result, 'impossible number')})")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)), number.extension or None


def is_mobile(number: str) -> bool | None:
    """Whether an E.164 number is a mobile one: None where the plan does not tell (North America).

    Example:
        >>> is_mobile("+33612345678"), is_mobile("+33145678901"), is_mobile("+15145550101")
        (True, False, None)
    """
    try:
        kind = phonenumbers.number_type(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return None
    if kind == phonenumbers.PhoneNumberType.MOBILE:
        return True
    if kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.VOIP):
        return False
    return None


# -- cells holding several values ------------------------------------------------------

_MULTI = re.compile(r"\s+:::\s+")  # Google Contacts writes several values of a field so
_EMAIL_SEPARATORS = re.compile(r"\s*[,;/|\n]\s*|\s+")


def split_phones(text: str) -> list[str]:
    """The phone numbers a cell holds, in order: split at `` ::: `` and at ``/ , ; | & or ou and et``.

    A part that is too short to be a number (``514 555 0101, 204``) does not split the cell.

    Example:
        >>> split_phones("514 555 0101 ::: 450 555 0102 / 438 555 0103 x12")
        ['514 555 0101', '450 555 0102', '438 555 0103 x12']
        >>> split_phones("(514) 555-0101")
        ['(514) 555-0101']
    """
    found: list[str] = []
    for part in _MULTI.split(text.strip()):
        chunks = [c for c in _SEPARATORS.split(part) if c.strip()]
        if len(chunks) > 1 and all(sum(ch.isdigit() for ch in c) >= 7 for c in chunks):
            found.extend(chunks)
        elif part.strip():
            found.append(part.strip())
    return found


def split_emails(text: str) -> list[str]:
    """The email addresses a cell holds, in order: split at `` ::: ``, ``,`` ``;`` ``/`` ``|`` or spaces.

    Example:
        >>> split_emails("a@example.com ::: b@example.com"), split_emails("Marie Roy <marie@example.com>")
        (['a@example.com', 'b@example.com'], ['Marie Roy <marie@example.com>'])
    """
    found: list[str] = []
    for part in _MULTI.split(text.strip()):
        part = part.strip()
        if part.count("@") > 1:
            found.extend(c for c in _EMAIL_SEPARATORS.split(part) if c)
        elif part:
            found.append(part)
    return found


def _parse_reason(error: phonenumbers.NumberParseException) -> str:
    kinds = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "no digits to read",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return kinds.get(error.error_type, "unreadable")


_NAMED_ADDRESS = re.compile(r"[^<>@]*<([^<>]+)>\s*")


def normalise_email(text: str) -> str:
    """An email address, checked for shape, with its domain in lowercase; raises InvalidValue.

    Example:
        >>> normalise_email(" Marie.Roy@Example.COM "), normalise_email("Marie Roy <marie@example.com>")
        ('Marie.Roy@example.com', 'marie@example.com')
    """
    text = text.strip()
    named = _NAMED_ADDRESS.fullmatch(text) if "<" in text else None
    if named is not None:
        text = named.group(1).strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if text.count("@") > 1:
        raise InvalidValue(f"two email addresses in one cell: {text!r}")
    if not _EMAIL.fullmatch(text):
        raise InvalidValue(f"not an email address: {text!r}")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


_SPACES = re.compile(r"[\s\u00a0\u202f']")
_CURRENCY = "$€£¥"


def normalise_number(text: str) -> int | float:
    """A number from text written with a decimal point or comma and any thousands separator.

    Example:
        >>> normalise_number("1 234,50"), normalise_number("1,234.50"), normalise_number("12,5"), normalise_number("7")
        (1234.5, 1234.5, 12.5, 7)
    """
    raw = text
    text = _SPACES.sub("", text.strip()).strip(_CURRENCY)
    if text.endswith("%"):
        raise InvalidValue(f"not a number: {raw!r} (percentages are not read)")
    if "," in text and "." in text:
        thousands, decimal = (",", ".") if text.rfind(".") > text.rfind(",") else (".", ",")
        text = text.replace(thousands, "").replace(decimal, ".")
    elif text.count(",") == 1:
        text = text.replace(",", ".")
    elif text.count(",") > 1 and re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise InvalidValue(f"not a number: {raw!r}")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise InvalidValue(f"not a number: {raw!r}")
    return number


def normalise_time(text: str, *, day_first: bool = False) -> dt.datetime:
    """A (naive) datetime from ISO text or any common date spelling; raises InvalidValue.

    ``day_first`` reads ``03/04/2026`` as the 3rd of April; a first number
    over 12 is a day anyway (see :class:`DateOrders` for a whole column).
    Vendor spellings are read too: ``3/4/2026 9:30 AM``, ``13/04/2026 14 h 30``, ``Mar 4, 2026``.

    Example:
        >>> normalise_time("03/04/2026", day_first=True), normalise_time("2026-03-04 09:30")
        (datetime.datetime(2026, 4, 3, 0, 0), datetime.datetime(2026, 3, 4, 9, 30))
        >>> normalise_time("3/4/2026 9:30 PM"), normalise_time("13/04/2026 14 h 30")
        (datetime.datetime(2026, 3, 4, 21, 30), datetime.datetime(2026, 4, 13, 14, 30))
    """
    return read_time(text.strip(), day_first, strict=False)


def read_time(text: str, day_first: bool, strict: bool) -> dt.datetime:
    """``normalise_time``; with ``strict``, a date that can only be read in the other order is an error."""
    if strict:
        order = date_order(text)
        if order is not None and order != "either" and (order == "day") != day_first:
            ours = "day first" if day_first else "month first"
            raise InvalidValue(f"{text!r} is {order} first, but the column's other dates are {ours}")
    quick = _quick_time(text, day_first)
    if quick is not None:
        return quick
    try:
        return _in_range(dt.datetime.fromisoformat(text), text)
    except ValueError:
        pass
    if re.fullmatch(r"[\d.,]+", text) and len(re.findall(r"\d+", text)) < 3:
        raise InvalidValue(f"not a date: {text!r}")
    spelled = _FRENCH_HOURS.sub(r"\1:\2", text)
    try:
        parsed = date_parser.parse(spelled, dayfirst=day_first, default=dt.datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        raise InvalidValue(f"not a date: {text!r}") from None
    return _in_range(parsed, text)


def _in_range(moment: dt.datetime, text: str) -> dt.datetime:
    """The moment, or InvalidValue when its offset takes it out of the years 1 to 9999 in UTC."""
    offset = moment.utcoffset()
    if offset:
        try:
            moment - offset
        except OverflowError:
            raise InvalidValue(f"out of the range of dates (years 1 to 9999 in UTC): {text!r}") from None
    return moment


_ISO_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_NUMERIC_DATE = re.compile(
    r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})"
    r"(?:,?\s+(\d{1,2})\s*[:h]\s*(\d{2})(?::(\d{2}))?(?:\s*([AaPp])\.?[Mm]\.?)?)?"
)
_FRENCH_HOURS = re.compile(r"\b(\d{1,2})\s*h\s*(\d{2})\b")
_DAY_MONTH = re.compile(r"\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2}|\d{4})(?!\d)")


def _quick_time(text: str, day_first: bool) -> dt.datetime | None:
    """The common spellings read without dateutil (as dateutil reads them); None for the others."""
    iso = _ISO_TIME.fullmatch(text)
    if iso is not None:
        year, month, day, hour, minute, second = iso.groups()
    else:
        numeric = _NUMERIC_DATE.fullmatch(text)
        if numeric is None:
            return None
        first, _, second_part, year, hour, minute, second, noon = numeric.groups()
        month, day = (second_part, first) if day_first else (first, second_part)
        if int(month) > 12 >= int(day):
            month, day = day, month
        if noon is not None and hour is not None:
            if not 1 <= int(hour) <= 12:
                return None
            hour = str(int(hour) % 12 + (12 if noon in "Pp" else 0))
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None


DateOrder: TypeAlias = Literal["day", "month", "either"]


def date_order(text: str) -> DateOrder | None:
    """What a numeric date says of its order: ``"day"`` first (``13/04/2026``), ``"month"`` first
    (``04/13/2026``), ``"either"`` (``03/04/2026``), or None (``04/04/2026``, ISO dates, words).

    Example:
        >>> date_order("13/04/2026"), date_order("4/13/26 9:30 AM"), date_order("03/04/2026"), date_order("2026-04-03")
        ('day', 'month', 'either', None)
    """
    found = _DAY_MONTH.match(text)
    if found is None:
        return None
    first, second = int(found.group(1)), int(found.group(2))
    if first > 12 >= second >= 1:
        return "day"
    if second > 12 >= first >= 1:
        return "month"
    if first != second and 1 <= first <= 12 and 1 <= second <= 12:
        return "either"
    return None


@attrs.define
class DateOrders:
    """The day/month order of one column, told from all its values.

    ``add`` every cell's text, then ``decide``: a column with days over 12 in
    first place is day first, one with them in second place month first; a
    column with both reads in the order most of its values show, and its
    other values are rejected; a column whose values never tell is read in
    the default order, and says so.

    Example:
        >>> orders = DateOrders()
        >>> for text in ("03/04/2026", "13/04/2026", "2026-05-01"):
        ...     orders.add(text)
        >>> orders.decide(default=False)
        (True, False, None)
        >>> unsure = DateOrders()
        >>> unsure.add("03/04/2026")
        >>> unsure.decide(default=False)
        (False, False, "the order of day and month cannot be told from the values (such as '03/04/2026'): \
read month first")
    """

    day: int = 0
    month: int = 0
    either: int = 0
    example: str | None = None

    def add(self, text: str) -> None:
        """Count what one value says."""
        order = date_order(text)
        if order == "day":
            self.day += 1
        elif order == "month":
            self.month += 1
        elif order == "either":
            self.either += 1
            if self.example is None:
                self.example = text.strip()

    def decide(self, default: bool) -> tuple[bool, bool, str | None]:
        """(day first, strict, a note for the report or None)."""
        if self.day and self.month:
            day_first = self.day >= self.month
            note = (
                f"dates in both orders ({self.day} day first, {self.month} month first): read "
                f"{'day' if day_first else 'month'} first, the others rejected"
            )
            return day_first, True, note
        if self.day or self.month:
            return bool(self.day), False, None
        if self.either:
            order = "day" if default else "month"
            note = (
                f"the order of day and month cannot be told from the values (such as {self.example!r}): "
                f"read {order} first"
            )
            return default, False, note
        return default, False, None


# -- lists, yes/no and consent --------------------------------------------------------


def read_list(text: str) -> list[str]:
    """The items of a list cell: quoted (``"VIP","Newsletter"``), or split at `` ::: `` (Google), ``,`` ``;`` ``|``.

    A ``* `` before an item (Google's mark of its own groups) is taken off; items appear once.

    Example:
        >>> read_list('"VIP","Newsletter"'), read_list("* myContacts ::: Clients"), read_list("VIP, wholesale; VIP")
        (['VIP', 'Newsletter'], ['myContacts', 'Clients'], ['VIP', 'wholesale'])
    """
    text = text.strip()
    items: list[str]
    if _MULTI.search(text):
        items = _MULTI.split(text)
    elif text[:1] in "\"'":
        quote = text[0]
        best: list[str] = []
        for delimiter in ",;|":
            read = next(csv.reader([text], delimiter=delimiter, quotechar=quote, skipinitialspace=True), [])
            if len(read) > len(best):
                best = read
        items = best
    else:
        items = re.split(r"[,;|\n]", text)
    found: dict[str, None] = {}
    for item in items:
        item = item.strip().strip("\"'").strip()
        item = item.removeprefix("* ").strip()
        if item:
            found.setdefault(item, None)
    return list(found)


_MORE_TRUE = frozenset({"x", "✓", "✔", "checked", "coche", "coché", "t"})
_MORE_FALSE = frozenset({"f", "-"})
_CONSENT_STATES = {
    "subscribed": True,
    "opted in": True,
    "opt in": True,
    "opt-in": True,
    "granted": True,
    "confirmed": True,
    "abonne": True,
    "abonné": True,
    "unsubscribed": False,
    "not subscribed": False,
    "not_subscribed": False,
    "non abonne": False,
    "non abonné": False,
    "desabonne": False,
    "désabonné": False,
    "opted out": False,
    "opt out": False,
    "opt-out": False,
    "pending": False,
    "cleaned": False,
    "bounced": False,
    "declined": False,
    "denied": False,
    "revoked": False,
    "redacted": False,
    "invalid": False,
}


def read_flag(text: str, *, inverted: bool = False) -> bool:
    """A yes/no cell: yes/no, oui/non, true/false, 1/0, ``x`` (a ticked box), or a date (it happened).

    ``inverted`` reads a column that says the opposite (``Email Opt Out``,
    ``Unsubscribed``): yes there is False. Words that name a consent state
    (``subscribed``, ``unsubscribed``, ``pending``...) mean what they say in
    either column; a consent still pending is not a consent. Raises InvalidValue.

    Example:
        >>> read_flag("Oui"), read_flag("1", inverted=True), read_flag("unsubscribed", inverted=True)
        (True, False, False)
        >>> read_flag("2024-03-04 15:22:10", inverted=True)
        False
    """
    word = text.strip().lower()
    state = _CONSENT_STATES.get(word)
    if state is not None:
        return state
    flag = to_bool(word)
    if flag is None:
        if word in _MORE_TRUE:
            flag = True
        elif word in _MORE_FALSE:
            flag = False
        elif any(c.isdigit() for c in word):
            try:
                read_time(text.strip(), False, strict=False)
            except InvalidValue:
                pass
            else:
                flag = True
    if flag is None:
        raise InvalidValue(f"not yes or no: {text.strip()!r}")
    return flag is not inverted


def normalise(
    value: Any,
    kind: AttributeType,
    *,
    region: str = DEFAULT_REGION,
    day_first: bool = False,
    email: bool = False,
) -> Any:
    """A cell's value read as an attribute of type ``kind``; None when blank; raises InvalidValue.

    ``email`` checks text for the shape of an email address.

    Example:
        >>> normalise("514.555.0199", AttributeType.PHONE), normalise("oui", AttributeType.BOOLEAN)
        ('+15145550199', True)
        >>> normalise("04/03/2026", AttributeType.DATE, day_first=True)
        datetime.date(2026, 3, 4)
    """
    if isinstance(value, dt.datetime | dt.date) and kind in (AttributeType.DATE, AttributeType.DATETIME):
        if kind is AttributeType.DATE:
            return value.date() if isinstance(value, dt.datetime) else value
        return value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool) and kind is AttributeType.NUMBER:
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue(f"not a number: {value!r}")
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(value, bool) and kind is AttributeType.BOOLEAN:
        return value
    text = cell_text(value).strip()
    if not text:
        return None
    match kind:
        case AttributeType.TEXT:
            return normalise_email(text) if email else text
        case AttributeType.PHONE:
            return normalise_phone(text, region)
        case AttributeType.NUMBER:
            return normalise_number(text)
        case AttributeType.BOOLEAN:
            return read_flag(text)
        case AttributeType.DATE:
            return normalise_time(text, day_first=day_first).date()
        case AttributeType.DATETIME:
            return normalise_time(text, day_first=day_first)
        case AttributeType.LIST:
            return read_list(text)
    raise AssertionError(kind)
