"""What a campaign is: its audience, schedule and :class:`Action` steps, and the :class:`Policy` over every campaign.

Each value checks its fields as it is built and raises :class:`CampaignError`
(a ValueError) for a bad one. The policy's :class:`FrequencyCap` and
:class:`Hours` say how often and when marketing messages may go out;
:mod:`cohorts.campaign.eligibility` applies them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ..errors import CohortsError
from ..model import Customer
from ..values import resolve_tz, to_bool

__all__ = [
    "ADDRESS_ATTRIBUTES",
    "AUDIENCES",
    "ON_LEAVE",
    "SEND_TO",
    "STATUSES",
    "STATUS_ATTRIBUTE",
    "SUBSCRIBED_ATTRIBUTE",
    "TRIGGERS",
    "Action",
    "Campaign",
    "CampaignError",
    "FrequencyCap",
    "Hours",
    "Policy",
    "RunnerBusyError",
    "aware_now",
    "period_text",
]

AUDIENCES = ("customers",)
STATUSES = ("active", "inactive", "all")
#: Who of the group a campaign sends to: all of them, or those with a usable address on its channels.
SEND_TO = ("all", "reachable")
#: The attributes the shipped email and SMS handlers send to, in order (``to_attribute`` overrides).
ADDRESS_ATTRIBUTES: dict[str, tuple[str, ...]] = {"email": ("email",), "sms": ("mobile_phone", "phone")}
#: Who a campaign runs for: everyone in its audience, or the customers who joined its group since it started.
TRIGGERS = ("audience", "joined")
#: What happens to the actions still owed to a customer who left the audience: run them, or stop them.
ON_LEAVE = ("finish", "stop")
#: The customer attribute read by the status filter ("active" / "inactive", compared casefolded).
STATUS_ATTRIBUTE = "status"
#: The customer attribute that says whether a customer accepts marketing messages.
SUBSCRIBED_ATTRIBUTE = "subscribed"


class CampaignError(CohortsError, ValueError):
    """A campaign cannot be built or run as given (a bad field, a lead audience, a missing handler)."""

    __module__ = "cohorts.campaigns"  # its public home: tracebacks and pickles name cohorts.campaigns.CampaignError


class RunnerBusyError(CohortsError):
    """An exclusive campaign run found another run holding the database's runner lock: it did nothing."""

    __module__ = "cohorts.campaigns"


def aware_now(now: dt.datetime | None) -> dt.datetime:
    """``now`` as an aware datetime (a naive one is read as UTC); the current time for None."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if not isinstance(now, dt.datetime):
        raise TypeError(f"now is a datetime, not {type(now).__name__}")
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


# -- actions and campaigns ---------------------------------------------------


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
    every customer; a group name targets its members of every origin.
    ``send_to="reachable"`` keeps those with a usable address on one of the
    campaign's channels: a known ``email`` for an email action, a ``mobile_phone``
    or ``phone`` that reads as a phone number for an SMS action (or the action's
    ``to_attribute``); it needs an email or SMS action. ``status``
    keeps ``"active"`` or ``"inactive"`` customers (the ``status`` attribute),
    or ``"all"``. The campaign runs while ``published`` and ``start <= now <
    end`` (``None`` leaves that side open; a date compares with today's date in
    UTC, a naive datetime is read as UTC).

    ``trigger="audience"`` (the default) runs the actions for everyone in the
    audience, members from before the campaign started included;
    ``trigger="joined"`` only for the members who joined the group at or after
    ``start`` (a date: midnight UTC), read from the group's membership history,
    so "welcome to the VIP programme" reaches each new VIP once and none of the
    old ones. It needs a group and a start.

    ``on_leave`` says what happens to actions still owed to a customer who has
    left the audience (its group, or the status filter) when they come due (a
    deferred SMS, a failed action to retry): ``"finish"`` (the default) runs
    them; ``"stop"`` records them as skipped, with the reason, and never runs them.

    Example:
        >>> c = Campaign("Spring", group="VIP", status="active", actions=[Action("email")])
        >>> c.action_keys()
        ('email-1',)
        >>> Campaign("Welcome", group="VIP", start="2026-12-01", trigger="joined").started_at()
        datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.timezone.utc)
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
    trigger: str = attrs.field(default="audience", converter=_lower, validator=_choice(TRIGGERS))
    on_leave: str = attrs.field(default="finish", converter=_lower, validator=_choice(ON_LEAVE))

    def __attrs_post_init__(self) -> None:
        keys = self.action_keys()
        if len(set(keys)) != len(keys):
            raise CampaignError(f"campaign {self.name!r} has two actions with the same id: {keys}")
        if self.send_to == "reachable" and not self.address_attributes():
            raise CampaignError(
                f"campaign {self.name!r} sends to customers reachable on its channels (send_to='reachable'),"
                " but it has no email or sms action"
            )
        if self.trigger == "joined" and (self.group is None or self.start is None):
            missing = " and ".join(n for n, v in (("a group", self.group), ("a start", self.start)) if v is None)
            raise CampaignError(
                f"campaign {self.name!r} runs for customers who joined its group since it started"
                f" (trigger='joined'): it needs {missing}"
            )

    def address_attributes(self) -> tuple[str, ...]:
        """The customer attributes this campaign's email and SMS actions send to (``to_attribute`` first)."""
        found: dict[str, None] = {}
        for action in self.actions:
            fields = ADDRESS_ATTRIBUTES.get(action.kind)
            if fields is None:
                continue
            field = action.settings.get("to_attribute")
            found.update(dict.fromkeys((field,) if isinstance(field, str) and field.strip() else fields))
        return tuple(found)

    def started_at(self) -> dt.datetime | None:
        """``start`` as an aware instant (a date is midnight UTC, a naive datetime UTC); None when open."""
        start = self.start
        if start is None:
            return None
        if not isinstance(start, dt.datetime):
            return dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        return start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)

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
        return f"at most {self.limit} per {period_text(self.period)}"


def period_text(period: dt.timedelta) -> str:
    """A period in the largest whole unit: ``7 days``, ``1 hour``, ``90 seconds``."""
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
    if value is None:
        return
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
      time zone (the ``timezone_attribute``, else ``default_timezone``; by
      default the repository's time zone, else UTC).
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
    default_timezone: str | dt.tzinfo | None = attrs.field(default=None, validator=_default_tz)

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
        return resolve_tz(self.default_timezone)  # None: UTC, unless a run gave the repository's

    def in_zone(self, tz: dt.tzinfo | None) -> Policy:
        """This policy with ``tz`` as its default time zone, when it names none itself."""
        if self.default_timezone is not None or tz is None:
            return self
        return attrs.evolve(self, default_timezone=tz)
