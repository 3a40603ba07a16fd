"""A cell's text read as a value of its attribute's type: phones, emails, numbers, dates, booleans, lists."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any

import phonenumbers
from dateutil import parser as date_parser

from ..errors import CohortsError
from ..schema import AttributeType
from ..values import DEFAULT_REGION, to_bool
from .reading import _cell_text

# -- values ----------------------------------------------------------------------


class InvalidValue(CohortsError, ValueError):
    """A cell's value cannot be read as its target's type; ``reason`` says why."""

    __module__ = "cohorts.importers"  # raised and documented as cohorts.importers.InvalidValue

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_NANP_REGIONS = frozenset({"US", "CA"})
_FAST_NANP = re.compile(r"(\+?1[ .-]?)?\(?([2-9][0-9]{2})\)?[ .-]?([0-9]{3})[ .-]?([0-9]{4})")
_SEPARATORS = re.compile(r"\s*(?:[,;/|&\n]|\s(?:or|ou|and|et|y)\s)\s*", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s,;:<>()\[\]\"]+@[^@\s,;:<>()\[\]\"]+\.[^@\s,;:<>()\[\]\".]{2,}")
_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "no area code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
}


def normalise_phone(text: str, region: str = DEFAULT_REGION) -> str:
    """A phone number in E.164 form, with ``region`` as the default country; raises InvalidValue.

    Example:
        >>> normalise_phone("(514) 555-0199"), normalise_phone("06 12 34 56 78", "FR")
        ('+15145550199', '+33612345678')
        >>> normalise_phone("514 555 0199 / 450 555 0123")
        Traceback (most recent call last):
        ...
        cohorts.importers.InvalidValue: two phone numbers in one cell: '514 555 0199 / 450 555 0123'
    """
    text = text.strip()
    if region in _NANP_REGIONS or text.startswith("+1"):
        fast = _FAST_NANP.fullmatch(text)
        if fast is not None and (fast.group(1) or "").strip(" .-") in ("", "1", "+1"):
            return "+1" + fast.group(2) + fast.group(3) + fast.group(4)
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
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _parse_reason(error: phonenumbers.NumberParseException) -> str:
    kinds = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "no digits to read",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return kinds.get(error.error_type, "unreadable")


def normalise_email(text: str) -> str:
    """An email address, checked for shape, with its domain in lowercase; raises InvalidValue.

    Example:
        >>> normalise_email(" Marie.Roy@Example.COM ")
        'Marie.Roy@example.com'
    """
    text = text.strip()
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

    Example:
        >>> normalise_time("03/04/2026", day_first=True), normalise_time("2026-03-04 09:30")
        (datetime.datetime(2026, 4, 3, 0, 0), datetime.datetime(2026, 3, 4, 9, 30))
    """
    text = text.strip()
    quick = _quick_time(text, day_first)
    if quick is not None:
        return quick
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    if re.fullmatch(r"[\d.,]+", text) and len(re.findall(r"\d+", text)) < 3:
        raise InvalidValue(f"not a date: {text!r}")
    try:
        return date_parser.parse(text, dayfirst=day_first, default=dt.datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        raise InvalidValue(f"not a date: {text!r}") from None


_ISO_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:,?\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def _quick_time(text: str, day_first: bool) -> dt.datetime | None:
    """The common spellings read without dateutil (as dateutil reads them); None for the others."""
    iso = _ISO_TIME.fullmatch(text)
    if iso is not None:
        year, month, day, hour, minute, second = iso.groups()
    else:
        numeric = _NUMERIC_DATE.fullmatch(text)
        if numeric is None:
            return None
        first, _, second_part, year, hour, minute, second = numeric.groups()
        month, day = (second_part, first) if day_first else (first, second_part)
        if int(month) > 12 >= int(day):
            month, day = day, month
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None


def _list_value(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,;|\n]", text) if item.strip()]


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
    text = _cell_text(value).strip()
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
            flag = to_bool(text)
            if flag is None:
                raise InvalidValue(f"not yes or no: {text!r}")
            return flag
        case AttributeType.DATE:
            return normalise_time(text, day_first=day_first).date()
        case AttributeType.DATETIME:
            return normalise_time(text, day_first=day_first)
        case AttributeType.LIST:
            return _list_value(text)
    raise AssertionError(kind)
