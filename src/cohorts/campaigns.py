"""Campaigns targeted at customer groups and statuses, run by a cron job exactly once per customer.

A :class:`Campaign` names its audience (every customer, or one group's members
of every origin), a status filter, a schedule and a workflow of
:class:`Action` steps. :func:`run_campaigns` is the cron job: for each
eligible campaign it evaluates the audience, enrolls the customers it has not
seen before in that campaign's ledger, and runs each action once per customer.

The pieces are plain functions of their arguments (:func:`eligibility`,
:func:`gate`, :func:`audience`); the only state is the ledger, which lives in
the repository (see :mod:`cohorts.ledger`). Marketing actions (email, SMS)
respect unsubscriptions, frequency caps and sending hours; transactional
actions (points, stage, track) are never capped or deferred.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import attrs

from ._html import html_table, html_text
from .ast import Condition, Node, Op, Or, Path
from .errors import CohortsError
from .ledger import ActionSpec, Ledger
from .model import Customer, CustomerId, Event
from .progress import Progress, ProgressCallback
from .repository import CustomerReader, Repository, require
from .values import fold_text, resolve_tz, to_bool, to_number

__all__ = [
    "Action",
    "Audience",
    "AudienceMember",
    "Campaign",
    "CampaignError",
    "CampaignReport",
    "Eligibility",
    "Failure",
    "FrequencyCap",
    "Gate",
    "Handler",
    "Hours",
    "Message",
    "Policy",
    "RunContext",
    "RunReport",
    "Sender",
    "Suppressed",
    "audience",
    "current_run",
    "eligibility",
    "gate",
    "idempotency_key",
    "run_campaigns",
    "standard_handlers",
]

AUDIENCES = ("customers",)
STATUSES = ("active", "inactive", "all")
SEND_TO = ("all",)
#: How many failures a CampaignReport lists (``failed`` counts them all).
MAX_FAILURES = 100
#: The customer attribute read by the status filter ("active" / "inactive", compared casefolded).
STATUS_ATTRIBUTE = "status"
#: The customer attribute that says whether a customer accepts marketing messages.
SUBSCRIBED_ATTRIBUTE = "subscribed"


class CampaignError(CohortsError, ValueError):
    """A campaign cannot be built or run as given (a bad field, a lead audience, a missing handler)."""


class Suppressed(CohortsError):
    """Raised by a handler to suppress its action for this customer with a reason (reconsidered next run).

    The standard senders raise it when a customer has no address for the channel.

    Attributes:
        reason: why the action did not run.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# -- campaigns and actions ---------------------------------------------------


def _settings(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CampaignError(f"an action's settings are a mapping, not {type(value).__name__}")
    return dict(value)


def _kind(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CampaignError(f"an action's kind is a non-blank text such as 'email', not {value!r}")
    return value.strip().lower()


@attrs.frozen(hash=False)
class Action:
    """One workflow step of a campaign: ``kind`` names its handler, ``settings`` configure it.

    Kinds used by :func:`standard_handlers`: ``email`` and ``sms`` (marketing
    messages, through a :class:`Sender`), ``points``, ``stage`` and ``track``
    (transactional, recorded in the repository). ``id`` names the step in the
    ledger; without it the step is ``<kind>-<n>`` (the n-th step of that kind),
    so adding an SMS step does not rename the email step.

    Example:
        >>> Action("email", {"subject": "Spring service"}).kind
        'email'
        >>> Action("SMS").kind
        'sms'
    """

    kind: str = attrs.field(converter=_kind)
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_settings)
    id: str | None = attrs.field(default=None, kw_only=True)


def _instant(value: object) -> dt.datetime | dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
        except ValueError:
            raise CampaignError(f"a campaign date is ISO text such as '2026-03-01', not {value!r}") from None
    raise CampaignError(f"a campaign date is a date, a datetime or ISO text, not {value!r}")


def _actions(value: Iterable[Action]) -> tuple[Action, ...]:
    if isinstance(value, Action | str | Mapping):
        raise CampaignError("a campaign's actions are a list of Action")
    actions = tuple(value)
    for action in actions:
        if not isinstance(action, Action):
            raise CampaignError(f"a campaign's actions are Action values, not {action!r}")
    return actions


def _choice(options: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in options:
            raise CampaignError(f"campaign {attribute.name} must be one of {', '.join(options)}; got {value!r}")

    return check


def _audience(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value == "leads":
        raise CampaignError(
            "audience 'leads' is refused: customer targeting runs customer campaigns only"
            " (lead campaigns use segments and forms, another feature); use audience='customers'"
        )
    if value not in AUDIENCES:
        raise CampaignError(f"campaign audience must be 'customers', not {value!r}")


def _name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise CampaignError(f"a campaign's name is a non-blank text, not {value!r}")


def _group(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CampaignError(f"a campaign's group is a group name or None, not {value!r}")
    return value.strip() or None


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _published(value: object) -> bool:
    flag = to_bool(value)
    if flag is None:
        raise CampaignError(f"published is true or false, not {value!r}")
    return flag


@attrs.frozen(hash=False)
class Campaign:
    """A customer campaign: who it targets, when it runs and what it does.

    ``audience`` is ``"customers"`` (``"leads"``, the lead campaigns of
    another feature, is refused with a CampaignError, a ValueError). ``group=None`` with ``send_to="all"`` targets
    every customer; a group name targets its members of every origin. ``status``
    keeps ``"active"`` or ``"inactive"`` customers (the ``status`` attribute),
    or ``"all"``. The campaign runs while ``published`` and ``start <= now <
    end`` (``None`` leaves that side open; a date compares with today's date in
    UTC, a naive datetime is read as UTC).

    Example:
        >>> c = Campaign("Spring", group="VIP", status="active", actions=[Action("email")])
        >>> c.action_keys()
        ('email-1',)
    """

    name: str = attrs.field(validator=_name)
    audience: str = attrs.field(default="customers", converter=_lower, validator=_audience)
    group: str | None = attrs.field(default=None, converter=_group)
    send_to: str = attrs.field(default="all", converter=_lower, validator=_choice(SEND_TO))
    status: str = attrs.field(default="all", converter=_lower, validator=_choice(STATUSES))
    published: bool = attrs.field(default=True, converter=_published)
    start: dt.datetime | dt.date | None = attrs.field(default=None, converter=_instant)
    end: dt.datetime | dt.date | None = attrs.field(default=None, converter=_instant)
    actions: tuple[Action, ...] = attrs.field(factory=tuple, converter=_actions)

    def __attrs_post_init__(self) -> None:
        keys = self.action_keys()
        if len(set(keys)) != len(keys):
            raise CampaignError(f"campaign {self.name!r} has two actions with the same id: {keys}")

    def action_keys(self) -> tuple[str, ...]:
        """The ledger key of each action, in order: its ``id``, else ``<kind>-<n>``."""
        seen: dict[str, int] = {}
        keys = []
        for action in self.actions:
            seen[action.kind] = seen.get(action.kind, 0) + 1
            keys.append(action.id if action.id else f"{action.kind}-{seen[action.kind]}")
        return tuple(keys)

    def key_of(self, action: Action) -> str:
        """The ledger key of one of this campaign's actions."""
        keys = self.action_keys()
        for index, candidate in enumerate(self.actions):
            if candidate is action:
                return keys[index]
        for index, candidate in enumerate(self.actions):
            if candidate == action:
                return keys[index]
        raise CampaignError(f"{action!r} is not an action of campaign {self.name!r}")


def _bound(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if not isinstance(now, dt.datetime):
        raise TypeError(f"now is a datetime, not {type(now).__name__}")
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


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
    moment = _now(now)
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


# -- respecting people: caps, sending hours ----------------------------------


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CampaignError(f"{attribute.name} is a whole number >= 0, not {value!r}")


def _period(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dt.timedelta) or value <= dt.timedelta(0):
        raise CampaignError(f"a frequency cap's period is a positive timedelta, not {value!r}")


@attrs.frozen
class FrequencyCap:
    """At most ``limit`` marketing messages per customer on one channel in any rolling ``period``.

    Example:
        >>> import datetime as dt
        >>> str(FrequencyCap(2, dt.timedelta(days=7)))
        'at most 2 per 7 days'
    """

    limit: int = attrs.field(validator=_positive_int)
    period: dt.timedelta = attrs.field(validator=_period)

    def __str__(self) -> str:
        return f"at most {self.limit} per {_span(self.period)}"


def _span(period: dt.timedelta) -> str:
    seconds = int(period.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def _clock(value: object) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CampaignError(f"a time of day is a time or text such as '08:00', not {value!r}")


@attrs.frozen
class Hours:
    """The hours of the day when a channel may send, in the customer's time zone: ``start <= t < end``.

    A window that wraps midnight (``Hours("20:00", "02:00")``) is allowed.

    Example:
        >>> import datetime as dt
        >>> Hours("08:00", "21:00").allows(dt.time(20, 59)), Hours("08:00", "21:00").allows(dt.time(21))
        (True, False)
    """

    start: dt.time = attrs.field(converter=_clock)
    end: dt.time = attrs.field(converter=_clock)

    def allows(self, moment: dt.time) -> bool:
        """True when a message may go out at that local time of day."""
        moment = moment.replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def next_opening(self, local: dt.datetime) -> dt.datetime:
        """The next local instant at or after ``local`` when sending is allowed."""
        if self.allows(local.time()):
            return local
        opening = local.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return opening if opening > local else opening + dt.timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _caps(value: Mapping[str, FrequencyCap] | None) -> dict[str, FrequencyCap]:
    caps = dict(value or {})
    for channel, cap in caps.items():
        if not isinstance(cap, FrequencyCap):
            raise CampaignError(f"the cap of {channel!r} is a FrequencyCap, not {cap!r}")
    return caps


def _hours(value: Mapping[str, Hours] | None) -> dict[str, Hours]:
    hours = dict(value or {})
    for channel, window in hours.items():
        if not isinstance(window, Hours):
            raise CampaignError(f"the sending hours of {channel!r} are Hours, not {window!r}")
    return hours


def _default_tz(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        resolve_tz(value)
    except ValueError as exc:
        raise CampaignError(f"default_timezone: {exc}") from None


@attrs.frozen(hash=False)
class Policy:
    """How the cron job treats people, configured once for every campaign.

    - ``caps``: channel -> :class:`FrequencyCap`, counted across campaigns
      (none by default). A capped customer is suppressed for that run and
      reconsidered on the next.
    - ``hours``: channel -> :class:`Hours` when it may send, in the customer's
      time zone (the ``timezone_attribute``, else ``default_timezone``).
      Default: SMS 08:00-21:00. Outside them the action is deferred to a later run.
    - ``retries``: how many later runs retry a failed action (default 3).
    - ``marketing``: the action kinds that are marketing messages (their kind
      is their channel); every other kind is transactional, never capped or deferred.

    Example:
        >>> import datetime as dt
        >>> p = Policy(caps={"email": FrequencyCap(2, dt.timedelta(days=7))})
        >>> p.retries, str(p.hours["sms"])
        (3, '08:00-21:00')
    """

    caps: Mapping[str, FrequencyCap] = attrs.field(factory=dict, converter=_caps)
    hours: Mapping[str, Hours] = attrs.field(factory=lambda: {"sms": Hours("08:00", "21:00")}, converter=_hours)
    retries: int = attrs.field(default=3, validator=_positive_int)
    marketing: frozenset[str] = attrs.field(default=frozenset({"email", "sms"}), converter=frozenset)
    timezone_attribute: str = "timezone"
    default_timezone: str = attrs.field(default="UTC", validator=_default_tz)

    def __attrs_post_init__(self) -> None:
        for what, channels in (("frequency caps", self.caps), ("sending hours", self.hours)):
            for channel in channels:
                if channel not in self.marketing:
                    raise CampaignError(
                        f"{what} apply to marketing channels ({', '.join(sorted(self.marketing))}), not {channel!r}:"
                        " transactional actions are never capped or deferred"
                    )

    def is_marketing(self, action: Action) -> bool:
        """True when ``action`` sends a marketing message."""
        return action.kind in self.marketing

    def timezone_of(self, customer: Customer) -> dt.tzinfo:
        """The customer's time zone: its attribute when it names a known zone, else the default."""
        name = customer.attributes.get(self.timezone_attribute)
        if isinstance(name, str) and name.strip():
            try:
                return resolve_tz(name.strip())
            except ValueError:
                pass
        return resolve_tz(self.default_timezone)


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


def unsubscribed(customer: Customer) -> bool:
    """True when the customer's ``subscribed`` attribute is false (unknown means subscribed)."""
    return to_bool(customer.attributes.get(SUBSCRIBED_ATTRIBUTE)) is False


def gate(
    action: Action,
    customer: Customer,
    policy: Policy,
    now: dt.datetime,
    sent: Callable[[str, dt.datetime], int] | None = None,
) -> Gate | None:
    """Whether ``action`` may run for ``customer`` at ``now``: None, or the :class:`Gate` that holds it.

    Transactional actions always pass. A marketing action is suppressed when the
    customer unsubscribed or the channel's cap is reached (``sent(channel,
    since)`` counts the messages already sent), and deferred outside the
    channel's sending hours in the customer's time zone.

    Example:
        >>> import datetime as dt
        >>> late = dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.timezone.utc)
        >>> gate(Action("sms"), Customer(1, {"timezone": "America/Toronto"}), Policy(), late) is None
        True
        >>> gate(Action("sms"), Customer(1), Policy(), late).outcome
        'deferred'
        >>> gate(Action("points"), Customer(1, {"subscribed": False}), Policy(), late) is None
        True
    """
    if not policy.is_marketing(action):
        return None
    channel = action.kind
    if unsubscribed(customer):
        return Gate("suppressed", f"unsubscribed: no {channel} (marketing) to this customer")
    window = policy.hours.get(channel)
    if window is not None:
        zone = policy.timezone_of(customer)
        local = _now(now).astimezone(zone)
        if not window.allows(local.time()):
            until = window.next_opening(local)
            return Gate(
                "deferred",
                f"quiet hours: {local:%H:%M} in {zone}, {channel} allowed {window}; deferred to a later run",
                until.astimezone(dt.UTC),
            )
    cap = policy.caps.get(channel)
    if cap is not None and sent is not None:
        count = sent(channel, _now(now) - cap.period)
        if count >= cap.limit:
            return Gate("suppressed", f"frequency cap: {count} {channel} in the last {_span(cap.period)} ({cap})")
    return None


# -- the audience ---------------------------------------------------------------


@attrs.frozen
class AudienceMember:
    """One customer of a campaign's audience: why it is in, and why marketing is suppressed, if it is."""

    id: CustomerId
    reasons: tuple[str, ...]
    suppressed: str | None = None


class GroupsLike(Protocol):
    """What :func:`audience` needs of :class:`cohorts.Groups`."""

    def members(self, name: str, now: dt.datetime | None = None) -> Mapping[CustomerId, frozenset[Any]]: ...


def _origin_word(origin: Any) -> str:
    value = getattr(origin, "value", origin)
    return str(value).lower()


@attrs.frozen(eq=False)
class Audience(Collection[CustomerId]):
    """Who a campaign reaches now: iterate for the ids, ``why(id)`` for the reasons.

    Customers who unsubscribed are members (transactional actions still reach
    them) and are listed in ``suppressed`` with the reason; ``reachable`` holds
    the ids that marketing messages may go to.
    """

    campaign: str
    ids: frozenset[CustomerId]
    group: str | None
    status: str
    origins: Mapping[CustomerId, frozenset[Any]] | None
    unsubscribed: frozenset[CustomerId]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[CustomerId]:
        return iter(self.ids)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.ids

    @property
    def suppressed(self) -> dict[CustomerId, str]:
        """Customer id -> why marketing actions are suppressed for it."""
        return dict.fromkeys(self.unsubscribed, "unsubscribed: marketing actions (email, sms) suppressed")

    @property
    def reachable(self) -> frozenset[CustomerId]:
        """The ids marketing messages may go to."""
        return self.ids - self.unsubscribed

    def why(self, customer_id: CustomerId) -> AudienceMember:
        """Why ``customer_id`` is in the audience; KeyError when it is not."""
        if customer_id not in self.ids:
            raise KeyError(customer_id)
        reasons = []
        if self.group is None:
            reasons.append("all customers (no group)")
        else:
            origins = self.origins.get(customer_id, frozenset()) if self.origins is not None else frozenset()
            words = ", ".join(sorted(_origin_word(o) for o in origins)) or "member"
            reasons.append(f"in group {self.group!r} ({words})")
        if self.status != "all":
            reasons.append(f"status is {self.status}")
        suppressed = self.suppressed.get(customer_id) if customer_id in self.unsubscribed else None
        return AudienceMember(customer_id, tuple(reasons), suppressed)

    def members(self) -> Iterator[AudienceMember]:
        """Every member with its reasons, in id order."""
        for customer_id in _sorted(self.ids):
            yield self.why(customer_id)


def _sorted(ids: Iterable[CustomerId]) -> list[CustomerId]:
    return sorted(ids, key=lambda i: (isinstance(i, str), i))


_STATUS = Path("customer", STATUS_ATTRIBUTE)
# A tautology under three-valued logic ("is known" is never unknown): every customer, pushed down as SQL.
_EVERYONE: Node = Or((Condition(_STATUS, Op.IS_KNOWN), Condition(_STATUS, Op.IS_UNKNOWN)))
_UNSUBSCRIBED: Node = Condition(Path("customer", SUBSCRIBED_ATTRIBUTE), Op.EQ, False)


def _status_rule(status: str) -> Node:
    return Condition(_STATUS, Op.EQ, status)


def audience(
    campaign: Campaign, repository: CustomerReader, groups: GroupsLike | None, now: dt.datetime | None = None
) -> Audience:
    """Who ``campaign`` reaches at ``now``: every customer or its group's members, with the status filter.

    Group members of every origin (manual, imported, rules) are included; the
    status filter keeps customers whose ``status`` is ``active`` / ``inactive``
    (``all`` ignores it). The filters run in the repository (pushed down as SQL
    on SQL repositories). Unsubscribed customers stay in the audience,
    suppressed for marketing actions with the reason.

    Example:
        >>> from cohorts.repository import MemoryRepository
        >>> repo = MemoryRepository([Customer(1, {"status": "Active"}),
        ...     Customer(2, {"status": "inactive"}), Customer(3, {"status": "active", "subscribed": False})])
        >>> a = audience(Campaign("Hello", status="active"), repo, None)
        >>> sorted(a), a.suppressed
        ([1, 3], {3: 'unsubscribed: marketing actions (email, sms) suppressed'})

    .. versionadded:: 0.1
    """
    if not isinstance(campaign, Campaign):
        raise TypeError(f"audience() takes a Campaign, not {type(campaign).__name__}")
    require(repository, CustomerReader, "audience")
    moment = _now(now)
    origins: Mapping[CustomerId, frozenset[Any]] | None = None
    if campaign.group is None:
        if campaign.status == "all":
            ids = repository.ids()
        else:
            ids = set(repository.select(_status_rule(campaign.status), moment))
    else:
        if groups is None:
            raise CampaignError(f"campaign {campaign.name!r} targets group {campaign.group!r}: pass the Groups")
        origins = groups.members(campaign.group, moment)
        ids = set(origins)
        if campaign.status != "all":
            ids &= set(repository.select(_status_rule(campaign.status), moment))
    unsub = set(repository.select(_UNSUBSCRIBED, moment)) & ids if ids else set()
    return Audience(campaign.name, frozenset(ids), campaign.group, campaign.status, origins, frozenset(unsub))


# -- handlers and senders --------------------------------------------------------


@attrs.frozen
class RunContext:
    """What the cron job knows while a handler runs; read it with :func:`current_run`."""

    now: dt.datetime
    campaign: str
    customer_id: CustomerId
    action_key: str
    attempt: int
    idempotency_key: str


_CURRENT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("cohorts_run", default=None)


def current_run() -> RunContext | None:
    """The :class:`RunContext` of the handler being run, or None outside :func:`run_campaigns`."""
    return _CURRENT.get()


def idempotency_key(campaign: str, customer_id: CustomerId, action_key: str) -> str:
    """The key that names one action for one customer in one campaign, the same on every retry.

    Example:
        >>> idempotency_key("Spring", 42, "email-1"), idempotency_key("Spring", "42", "email-1")
        ('cohorts:Spring:42:email-1', 'cohorts:Spring:~42:email-1')
    """
    text = str(customer_id)
    if isinstance(customer_id, str) and text.lstrip("-").isdigit():
        text = "~" + text  # the text id "42" and the number 42 are different customers
    return f"cohorts:{campaign}:{text}:{action_key}"


@attrs.frozen
class Message:
    """A marketing message for a :class:`Sender`: the channel, recipient and content, plus its idempotency key."""

    channel: str
    to: str
    customer_id: CustomerId
    campaign: str
    subject: str
    body: str
    idempotency_key: str
    settings: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Sender(Protocol):
    """The host's email/SMS provider. ``send`` must deliver a message once per ``message.idempotency_key``.

    Raise to mark the action failed (it is retried with the same key on a later run).
    """

    def send(self, message: Message) -> None: ...


Handler: TypeAlias = Callable[[Customer, Action, Campaign], Any]

_ADDRESS = {"email": ("email",), "sms": ("mobile_phone", "phone")}


def _context(customer: Customer, action: Action, campaign: Campaign) -> RunContext:
    ctx = current_run()
    if ctx is not None:
        return ctx
    key = campaign.key_of(action)
    now = dt.datetime.now(dt.UTC)
    return RunContext(now, campaign.name, customer.id, key, 1, idempotency_key(campaign.name, customer.id, key))


def _send_handler(sender: Sender, channel: str) -> Handler:
    fields = _ADDRESS.get(channel, (channel,))

    def send(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = _context(customer, action, campaign)
        field = action.settings.get("to_attribute")
        candidates = (field,) if isinstance(field, str) else fields
        values = customer.attributes
        to = next((str(values[f]).strip() for f in candidates if fold_text(values.get(f))), None)
        if to is None:
            raise Suppressed(f"no address: customer has no {' or '.join(candidates)} for {channel}")
        settings = action.settings
        message = Message(
            channel, to, customer.id, campaign.name, str(settings.get("subject", "")),
            str(settings.get("body", settings.get("text", ""))), ctx.idempotency_key, dict(settings),
        )
        sender.send(message)

    return send


def _points_handler(repository: Repository) -> Handler:
    def points(customer: Customer, action: Action, campaign: Campaign) -> None:
        amount = to_number(action.settings.get("points"))
        if amount is None:
            raise CampaignError(f"a points action needs a number in settings['points'], not {action.settings!r}")
        ctx = _context(customer, action, campaign)
        current = repository.get(customer.id) or customer
        balance = to_number(current.attributes.get("points")) or 0
        repository.upsert([current.with_attributes(points=balance + amount)])
        repository.add_events(
            customer.id, [Event("campaign.points", ctx.now, {"campaign": campaign.name, "points": amount})]
        )

    return points


def _stage_handler(repository: Repository) -> Handler:
    def stage(customer: Customer, action: Action, campaign: Campaign) -> None:
        value = action.settings.get("stage")
        if not isinstance(value, str) or not value.strip():
            raise CampaignError(f"a stage action needs a text in settings['stage'], not {action.settings!r}")
        ctx = _context(customer, action, campaign)
        current = repository.get(customer.id) or customer
        repository.upsert([current.with_attributes(stage=value.strip())])
        event = Event("campaign.stage", ctx.now, {"campaign": campaign.name, "stage": value})
        repository.add_events(customer.id, [event])

    return stage


def _track_handler(repository: Repository) -> Handler:
    def track(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = _context(customer, action, campaign)
        name = str(action.settings.get("event", "campaign.engagement"))
        fields = {k: v for k, v in action.settings.items() if k != "event"}
        repository.add_events(customer.id, [Event(name, ctx.now, {"campaign": campaign.name, **fields})])

    return track


def standard_handlers(repository: Repository, sender: Sender | None = None) -> dict[str, Handler]:
    """The shipped handlers: ``points``, ``stage`` and ``track`` record in ``repository``; ``email`` and
    ``sms`` go through ``sender`` (left out without one).

    ``points`` adds ``settings["points"]`` to the ``points`` attribute, ``stage``
    sets the ``stage`` attribute, ``track`` adds a ``settings["event"]`` event
    (default ``campaign.engagement``); each records a ``campaign.*`` event. Messages
    go to the ``email`` attribute, or ``mobile_phone``/``phone`` for SMS
    (``settings["to_attribute"]`` overrides), with ``subject`` and ``body`` from settings.

    Example:
        >>> from cohorts.repository import MemoryRepository
        >>> sorted(standard_handlers(MemoryRepository()))
        ['points', 'stage', 'track']
    """
    handlers: dict[str, Handler] = {
        "points": _points_handler(repository),
        "stage": _stage_handler(repository),
        "track": _track_handler(repository),
    }
    if sender is not None:
        if not isinstance(sender, Sender):
            raise TypeError(f"a sender has a send(message) method; {sender!r} does not")
        handlers["email"] = _send_handler(sender, "email")
        handlers["sms"] = _send_handler(sender, "sms")
    return handlers


# -- the report ------------------------------------------------------------------


@attrs.frozen
class Failure:
    """One action that failed for one customer in this run."""

    customer_id: CustomerId
    action: str
    attempt: int
    error: str
    final: bool


@attrs.frozen
class CampaignReport:
    """What one campaign did in one run."""

    name: str
    eligible: bool
    reasons: tuple[str, ...] = ()
    audience: int = 0
    added: int = 0
    done: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    busy: int = 0
    seconds: float = 0.0
    suppressed_reasons: Mapping[str, int] = attrs.field(factory=dict)
    failures: tuple[Failure, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when no action failed and the audience could be evaluated."""
        return self.failed == 0 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "name": self.name,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
            "audience": self.audience,
            "added": self.added,
            "done": self.done,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "deferred": self.deferred,
            "busy": self.busy,
            "seconds": round(self.seconds, 6),
            "suppressed_reasons": dict(self.suppressed_reasons),
            "failures": [
                attrs.asdict(failure) for failure in self.failures
            ],
            "error": self.error,
        }


_COLUMNS = ("campaign", "eligible", "audience", "added", "done", "failed", "suppressed", "deferred", "seconds")


@attrs.frozen
class RunReport:
    """What a cron run did, per campaign: printable as a table and as JSON.

    Example:
        >>> spring = CampaignReport("Spring", False, ("not published",))
        >>> print(RunReport(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), (spring,)))
        campaign  eligible                audience  added  done  failed  suppressed  deferred  seconds
        Spring    no: not published              0      0     0       0           0         0    0.000
    """

    now: dt.datetime
    campaigns: tuple[CampaignReport, ...]
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Actions that failed in this run, over every campaign."""
        return sum(c.failed for c in self.campaigns)

    @property
    def ok(self) -> bool:
        """True when no action failed and every eligible campaign's audience could be evaluated."""
        return all(c.ok for c in self.campaigns)

    def __getitem__(self, name: str) -> CampaignReport:
        for report in self.campaigns:
            if report.name == name:
                return report
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "now": self.now.isoformat(),
            "seconds": round(self.seconds, 6),
            "failed": self.failed,
            "ok": self.ok,
            "campaigns": [c.to_dict() for c in self.campaigns],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = [
            {
                "campaign": c.name,
                "eligible": "yes" if c.eligible else "no: " + "; ".join(c.reasons),
                "audience": c.audience,
                "added": c.added,
                "done": c.done,
                "failed": c.failed,
                "suppressed": c.suppressed,
                "deferred": c.deferred,
                "seconds": f"{c.seconds:.3f}",
            }
            for c in self.campaigns
        ]
        table = html_table(rows, caption=f"campaign run at {self.now.isoformat()}")
        problems = [line for line in str(self).splitlines() if line.startswith("! ")]
        return table + (html_text("\n".join(problems)) if problems else "")

    def __str__(self) -> str:
        rows = [list(_COLUMNS)]
        for c in self.campaigns:
            eligible = "yes" if c.eligible else "no: " + "; ".join(c.reasons)
            rows.append([
                c.name, eligible, *(str(n) for n in (c.audience, c.added, c.done, c.failed, c.suppressed, c.deferred)),
                f"{c.seconds:.3f}",
            ])
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(widths[i + 2]) for i, cell in enumerate(row[2:])]
            lines.append("  ".join(cells).rstrip())
        for c in self.campaigns:
            if c.error is not None:
                lines.append(f"! {c.name}: {c.error}")
            for f in c.failures[:10]:
                final = "; no retry left" if f.final else ""
                who = f"{f.action} failed for {f.customer_id!r} (attempt {f.attempt}{final})"
                lines.append(f"! {c.name}: {who}: {f.error}")
            if c.failed > 10:
                lines.append(f"! {c.name}: ... and {c.failed - 10} more failures (see to_json())")
        return "\n".join(lines)


# -- the cron job --------------------------------------------------------------------


@attrs.define
class _Tally:
    name: str
    done: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    busy: int = 0
    reasons: dict[str, int] = attrs.field(factory=dict)
    failures: list[Failure] = attrs.field(factory=list)

    def suppress(self, reason: str) -> None:
        self.suppressed += 1
        head = reason.split(":", 1)[0]
        self.reasons[head] = self.reasons.get(head, 0) + 1


def _check(campaigns: Sequence[Campaign], handlers: Mapping[str, Handler]) -> None:
    names: set[str] = set()
    for campaign in campaigns:
        if not isinstance(campaign, Campaign):
            raise TypeError(f"run_campaigns() takes Campaign values, not {campaign!r}")
        if campaign.name in names:
            raise CampaignError(f"two campaigns are named {campaign.name!r}; the ledger keys on the name")
        names.add(campaign.name)
        for action in campaign.actions:
            if not callable(handlers.get(action.kind)):
                raise CampaignError(
                    f"campaign {campaign.name!r} has a {action.kind!r} action but no handler for it"
                    f" (handlers: {', '.join(sorted(handlers)) or 'none'})"
                )


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _run_one(
    campaign: Campaign,
    repository: Repository,
    groups: GroupsLike | None,
    handlers: Mapping[str, Handler],
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    progress: ProgressCallback | None = None,
) -> CampaignReport:
    started = time.perf_counter()
    verdict = eligibility(campaign, moment)
    if not verdict.ok:
        return CampaignReport(campaign.name, False, verdict.reasons, seconds=time.perf_counter() - started)
    try:
        members = audience(campaign, repository, groups, moment)
    except CohortsError as exc:  # a deleted group, a rule that no longer compiles: the other campaigns still run
        return CampaignReport(campaign.name, True, seconds=time.perf_counter() - started,
                              error=f"audience not evaluated: {exc}")
    keys = campaign.action_keys()
    by_key = dict(zip(keys, campaign.actions, strict=True))
    specs = [ActionSpec(key, action.kind) for key, action in by_key.items()]
    added = ledger.enroll(campaign.name, members.ids, specs, moment)
    tally = _Tally(campaign.name)
    order = {key: i for i, key in enumerate(keys)}
    work: dict[CustomerId, list[str]] = {}
    for customer_id, key in ledger.due(campaign.name, keys, policy.retries):
        work.setdefault(customer_id, []).append(key)
    stage = f"campaign {campaign.name}"
    for done, (customer_id, customer) in enumerate(_load(repository, work)):
        if progress is not None and done % 100 == 0:
            progress(Progress(done, done / len(work), what="customers", stage=stage))
        for key in sorted(work[customer_id], key=order.__getitem__):
            _run_action(campaign, customer_id, customer, key, by_key[key], handlers, moment, policy, ledger, tally)
    if progress is not None and work:
        progress(Progress(len(work), 1.0, what="customers", stage=stage))
    return CampaignReport(
        campaign.name, True, (), len(members), added, tally.done, tally.failed, tally.suppressed, tally.deferred,
        tally.busy, time.perf_counter() - started, dict(tally.reasons), tuple(tally.failures),
    )


def _load(
    repository: Repository, wanted: Mapping[CustomerId, object]
) -> Iterator[tuple[CustomerId, Customer | None]]:
    """The wanted customers (None for those deleted): one scan when they are many, else one get() each."""
    total = len(repository) if isinstance(repository, Sized) else None
    if total is not None and isinstance(repository, Iterable) and len(wanted) * 4 >= total > 1000:
        seen = set()
        for customer in repository:
            if customer.id in wanted:
                seen.add(customer.id)
                yield customer.id, customer
        for customer_id in _sorted(set(wanted) - seen):
            yield customer_id, repository.get(customer_id)
        return
    for customer_id in _sorted(wanted):
        yield customer_id, repository.get(customer_id)


class _Undo(Exception):
    """Rolls back a claim whose handler raised, with the handler's repository writes."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause


def _run_action(
    campaign: Campaign,
    customer_id: CustomerId,
    customer: Customer | None,
    key: str,
    action: Action,
    handlers: Mapping[str, Handler],
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    try:
        with ledger.claim(campaign.name, customer_id, key, policy.retries) as claim:
            if claim is None:
                tally.busy += 1
                return
            if customer is None:
                claim.skip("customer no longer exists", moment)
                tally.suppress("deleted: customer no longer exists")
                return
            marketing = policy.is_marketing(action)
            if marketing and action.kind in policy.caps:
                claim.lock_customer()
            held = gate(action, customer, policy, moment, functools.partial(ledger.sent, customer_id))
            if held is not None:
                if held.outcome == "deferred":
                    claim.defer(held.reason, moment)
                    tally.deferred += 1
                else:
                    claim.suppress(held.reason, moment)
                    tally.suppress(held.reason)
                return
            ikey = idempotency_key(campaign.name, customer_id, key)
            token = _CURRENT.set(RunContext(moment, campaign.name, customer_id, key, claim.attempts + 1, ikey))
            try:
                handlers[action.kind](customer, action, campaign)
            except Exception as exc:
                raise _Undo(exc) from exc
            finally:
                _CURRENT.reset(token)
            claim.done(moment, action.kind if marketing else None)
            tally.done += 1
    except _Undo as undo:
        # The claim's transaction is rolled back, undoing what the handler wrote in the repository;
        # the outcome is recorded under a new claim (unless another runner took the row meanwhile).
        _record_failure(campaign, customer_id, key, undo.cause, moment, policy, ledger, tally)


def _record_failure(
    campaign: Campaign,
    customer_id: CustomerId,
    key: str,
    cause: Exception,
    moment: dt.datetime,
    policy: Policy,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    with ledger.claim(campaign.name, customer_id, key, policy.retries) as claim:
        if claim is None:
            tally.busy += 1
            return
        if isinstance(cause, Suppressed):
            claim.suppress(cause.reason, moment)
            tally.suppress(cause.reason)
            return
        attempt = claim.attempts + 1
        error = _error_text(cause)
        claim.fail(error, moment)
        tally.failed += 1
        if len(tally.failures) < MAX_FAILURES:
            tally.failures.append(Failure(customer_id, key, attempt, error, attempt > policy.retries))


def run_campaigns(
    campaigns: Iterable[Campaign],
    repository: Repository,
    groups: GroupsLike | None,
    handlers: Mapping[str, Handler],
    now: dt.datetime | None = None,
    *,
    policy: Policy | None = None,
    ledger: Ledger | None = None,
    progress: ProgressCallback | None = None,
) -> RunReport:
    """The cron job: run every eligible campaign's actions once per customer of its audience.

    For each eligible campaign: evaluate the audience, enroll the customers not
    seen before in the campaign's ledger, then run each action that is still due
    for each enrolled customer (new ones, deferred or suppressed ones, failed ones
    within ``policy.retries``). ``handlers`` maps an action kind to
    ``handler(customer, action, campaign)``; an exception marks that action
    failed for that customer (recorded with its error, retried on a later run).

    Each action is claimed in the repository's ledger, in a transaction that
    holds the claim while the handler runs and records its outcome before the
    next one starts: a rerun, two runners at once on one PostgreSQL database or a
    crash between two actions never runs an action twice, and an interrupted
    claim is rolled back, so the next run picks it up. See docs/campaigns.md.
    ``progress``, when given, is called with a :class:`cohorts.Progress` (customers
    done, and the share of the campaign's due work) as each campaign runs.

    Example:
        >>> import datetime as dt
        >>> from cohorts.repository import MemoryRepository
        >>> repo = MemoryRepository([Customer(1), Customer(2)])
        >>> seen = []
        >>> spring = Campaign("Spring", actions=[Action("track")])
        >>> now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
        >>> report = run_campaigns([spring], repo, None, {"track": lambda c, a, k: seen.append(c.id)}, now)
        >>> report["Spring"].done, sorted(seen)
        (2, [1, 2])
        >>> run_campaigns([spring], repo, None, {"track": lambda c, a, k: seen.append(c.id)}, now)["Spring"].done
        0

    .. versionadded:: 0.1
    """
    started = time.perf_counter()
    moment = _now(now)
    chosen = list(campaigns)
    _check(chosen, handlers)
    rules = policy if policy is not None else Policy()
    require(repository, Repository, "run_campaigns")
    store = ledger if ledger is not None else repository.ledger()
    reports = tuple(_run_one(c, repository, groups, handlers, moment, rules, store, progress) for c in chosen)
    return RunReport(moment, reports, time.perf_counter() - started)
