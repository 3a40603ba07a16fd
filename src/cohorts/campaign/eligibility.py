"""When a campaign runs, and when one of its actions may go out to a customer now.

:func:`eligibility` reads a campaign's ``published`` flag and its
``start``/``end`` window; :func:`gate` holds a marketing action for one
customer: unsubscribed, over the channel's frequency cap, or outside its
sending hours. Both are plain functions of their arguments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Literal

import attrs

from ..model import Customer
from ..repository import consent_attribute
from ..values import to_bool
from .model import SUBSCRIBED_ATTRIBUTE, Action, Campaign, Policy, aware_now, period_text

__all__ = ["Eligibility", "Gate", "bounced", "eligibility", "gate", "unsubscribed"]


def _bound(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def _texts(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Eligibility:
    """Whether a campaign runs at an instant, and if not, every reason why not.

    Example:
        >>> bool(Eligibility(True))
        True
    """

    ok: bool
    reasons: tuple[str, ...] = attrs.field(default=(), converter=_texts)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return "eligible" if self.ok else "not eligible: " + "; ".join(self.reasons)


def eligibility(campaign: Campaign, now: dt.datetime | None = None) -> Eligibility:
    """Whether ``campaign`` runs at ``now``: published, ``start <= now`` and ``end > now``.

    Dates compare with ``now``'s date in UTC, as the reference article's
    "Start Date ≤ Current Date, End Date > Current Date".

    Example:
        >>> import datetime as dt
        >>> c = Campaign("Spring", published=False, end=dt.date(2026, 3, 1))
        >>> eligibility(c, dt.datetime(2026, 3, 1, 9, tzinfo=dt.timezone.utc)).reasons
        ('not published', 'ended on 2026-03-01')

    .. versionadded:: 0.1
    """
    moment = aware_now(now)
    reasons = []
    if not campaign.published:
        reasons.append("not published")
    start, end = campaign.start, campaign.end
    if start is not None:
        if isinstance(start, dt.datetime):
            if _bound(start) > moment:
                reasons.append(f"starts at {_bound(start).isoformat()}")
        elif start > moment.astimezone(dt.UTC).date():
            reasons.append(f"starts on {start.isoformat()}")
    if end is not None:
        if isinstance(end, dt.datetime):
            if _bound(end) <= moment:
                reasons.append(f"ended at {_bound(end).isoformat()}")
        elif end <= moment.astimezone(dt.UTC).date():
            reasons.append(f"ended on {end.isoformat()}")
    return Eligibility(not reasons, reasons)


# -- respecting people: unsubscriptions, sending hours, caps ------------------


@attrs.frozen
class Gate:
    """Why a marketing action does not go out now: ``outcome`` is "suppressed" or "deferred".

    Example:
        >>> Gate("suppressed", "unsubscribed").outcome
        'suppressed'
    """

    outcome: Literal["suppressed", "deferred"]
    reason: str
    until: dt.datetime | None = None


def unsubscribed(customer: Customer, channel: str | None = None) -> bool:
    """True when the customer's ``subscribed`` attribute is false (unknown means subscribed); with
    ``channel``, when it refused that channel (``<channel>_subscribed`` false) or refused all."""
    if to_bool(customer.attributes.get(SUBSCRIBED_ATTRIBUTE)) is False:
        return True
    return channel is not None and to_bool(customer.attributes.get(consent_attribute(channel))) is False


def bounced(customer: Customer, channel: str) -> bool:
    """True when the customer's address on ``channel`` bounced: its ``<channel>_bounced`` attribute is true."""
    return to_bool(customer.attributes.get(f"{channel}_bounced")) is True


def gate(
    action: Action,
    customer: Customer,
    policy: Policy,
    now: dt.datetime,
    sent: Callable[[str, dt.datetime], int] | None = None,
) -> Gate | None:
    """Whether ``action`` may run for ``customer`` at ``now``: None, or the :class:`Gate` that holds it.

    Transactional actions always pass. A marketing action is suppressed when the
    customer unsubscribed (``subscribed`` false), refused its channel
    (``email_subscribed`` / ``sms_subscribed`` false), its address on the
    channel bounced (``email_bounced`` / ``sms_bounced`` true) or the channel's
    cap is reached (``sent(channel, since)`` counts the messages already sent),
    and deferred outside the channel's sending hours in the customer's time zone.

    Example:
        >>> import datetime as dt
        >>> late = dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.timezone.utc)
        >>> gate(Action("sms"), Customer(1, {"timezone": "America/Toronto"}), Policy(), late) is None
        True
        >>> gate(Action("sms"), Customer(1), Policy(), late).outcome
        'deferred'
        >>> gate(Action("points"), Customer(1, {"subscribed": False}), Policy(), late) is None
        True
        >>> gate(Action("email"), Customer(1, {"sms_subscribed": False}), Policy(), late) is None
        True
        >>> gate(Action("email"), Customer(1, {"email_bounced": True}), Policy(), late).reason
        'bounced: the email address of this customer bounced'
    """
    if not policy.is_marketing(action):
        return None
    channel = action.kind
    if unsubscribed(customer):
        return Gate("suppressed", f"unsubscribed: no {channel} (marketing) to this customer")
    if unsubscribed(customer, channel):
        return Gate("suppressed", f"unsubscribed from {channel}: no {channel} (marketing) to this customer")
    if bounced(customer, channel):
        return Gate("suppressed", f"bounced: the {channel} address of this customer bounced")
    window = policy.hours.get(channel)
    if window is not None:
        zone = policy.timezone_of(customer)
        local = aware_now(now).astimezone(zone)
        if not window.allows(local.time()):
            until = window.next_opening(local)
            return Gate(
                "deferred",
                f"quiet hours: {local:%H:%M} in {zone}, {channel} allowed {window}; deferred to a later run",
                until.astimezone(dt.UTC),
            )
    cap = policy.caps.get(channel)
    if cap is not None and sent is not None:
        count = sent(channel, aware_now(now) - cap.period)
        if count >= cap.limit:
            return Gate("suppressed", f"frequency cap: {count} {channel} in the last {period_text(cap.period)} ({cap})")
    return None
