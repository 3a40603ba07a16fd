"""Who a campaign reaches: every customer or one group's members, the status filter, the suppressed.

:func:`audience` runs its filters in the repository (pushed down as SQL on SQL
repositories) and keeps customers who unsubscribed, listed as suppressed for
marketing actions: transactional actions still reach them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ..ast import Condition, Node, Op, Or, Path
from ..model import CustomerId
from ..repository import CustomerReader, holds_attribute, require
from .model import STATUS_ATTRIBUTE, SUBSCRIBED_ATTRIBUTE, Campaign, CampaignError, aware_now

__all__ = ["Audience", "AudienceMember", "GroupsLike", "JoinHistory", "audience", "joined_since", "sorted_ids"]


@attrs.frozen
class AudienceMember:
    """One customer of a campaign's audience: why it is in, and why marketing is suppressed, if it is."""

    id: CustomerId
    reasons: tuple[str, ...]
    suppressed: str | None = None


class GroupsLike(Protocol):
    """What :func:`audience` needs of :class:`cohorts.Groups`."""

    def members(self, name: str, now: dt.datetime | None = None) -> Mapping[CustomerId, frozenset[Any]]: ...


class HistoryLike(Protocol):
    """What :func:`joined_since` reads of a :class:`cohorts.HistoryEntry`."""

    @property
    def customer_id(self) -> CustomerId: ...
    @property
    def joined(self) -> bool: ...
    @property
    def origins(self) -> frozenset[Any]: ...
    @property
    def gained(self) -> frozenset[Any]: ...
    @property
    def lost(self) -> frozenset[Any]: ...
    @property
    def at(self) -> dt.datetime: ...


@runtime_checkable
class JoinHistory(Protocol):
    """Groups that keep a membership history (:meth:`cohorts.Groups.history`): campaigns with
    ``trigger="joined"`` read who joined since they started."""

    def history(self, name: str | None = None, *, start: dt.datetime | None = None) -> Sequence[HistoryLike]: ...


def joined_since(
    groups: JoinHistory, group: str, start: dt.datetime, now: dt.datetime
) -> dict[CustomerId, dt.datetime]:
    """Customer id -> when it last joined ``group`` from outside it, for those who did at ``start <= at <= now``.

    A join from outside is an entry that makes the customer a member with only
    new origins (it had none before); a member that gains another origin has not
    joined again.
    """
    found: dict[CustomerId, dt.datetime] = {}
    for entry in groups.history(group, start=start):
        if entry.at > now:
            continue
        if entry.joined and not entry.lost and entry.origins == entry.gained:
            found[entry.customer_id] = entry.at
    return found


def _origin_word(origin: Any) -> str:
    value = getattr(origin, "value", origin)
    return str(value).lower()


def sorted_ids(ids: Iterable[CustomerId]) -> list[CustomerId]:
    """Customer ids in order: numbers first, then texts."""
    return sorted(ids, key=lambda i: (isinstance(i, str), i))


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
    joined: Mapping[CustomerId, dt.datetime] | None = None
    reachable_by: tuple[str, ...] | None = None

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
            if self.joined is not None and customer_id in self.joined:
                reasons.append(f"joined it at {self.joined[customer_id].isoformat()}, since the campaign started")
        if self.status != "all":
            reasons.append(f"status is {self.status}")
        if self.reachable_by is not None:
            reasons.append(f"has a usable {' or '.join(self.reachable_by)}")
        suppressed = self.suppressed.get(customer_id) if customer_id in self.unsubscribed else None
        return AudienceMember(customer_id, tuple(reasons), suppressed)

    def members(self) -> Iterator[AudienceMember]:
        """Every member with its reasons, in id order."""
        for customer_id in sorted_ids(self.ids):
            yield self.why(customer_id)


_STATUS = Path("customer", STATUS_ATTRIBUTE)
_UNSUBSCRIBED: Node = Condition(Path("customer", SUBSCRIBED_ATTRIBUTE), Op.EQ, False)


def _status_rule(status: str) -> Node:
    return Condition(_STATUS, Op.EQ, status)


def _reachable(campaign: Campaign, repository: CustomerReader, moment: dt.datetime) -> set[CustomerId]:
    """The customers with a usable address on the campaign's channels (an attribute the repository cannot
    hold is unknown for everyone, so it reaches no one)."""
    known: list[Node] = [
        Condition(Path("customer", name), Op.IS_KNOWN)
        for name in campaign.address_attributes()
        if holds_attribute(repository, name)
    ]
    if not known:
        return set()
    return set(repository.select(known[0] if len(known) == 1 else Or(tuple(known)), moment))


def audience(
    campaign: Campaign, repository: CustomerReader, groups: GroupsLike | None, now: dt.datetime | None = None
) -> Audience:
    """Who ``campaign`` reaches at ``now``: every customer or its group's members, with the status filter.

    Group members of every origin (manual, imported, rules) are included; with
    ``trigger="joined"``, only those who joined the group since the campaign's
    start (from ``groups.history``, a :class:`JoinHistory`). The
    status filter keeps customers whose ``status`` is ``active`` / ``inactive``
    (``all`` ignores it). The filters run in the repository (pushed down as SQL
    on SQL repositories). Unsubscribed customers stay in the audience,
    suppressed for marketing actions with the reason.

    Example:
        >>> from cohorts.model import Customer
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
    moment = aware_now(now)
    origins: Mapping[CustomerId, frozenset[Any]] | None = None
    joined: dict[CustomerId, dt.datetime] | None = None
    if campaign.status != "all" and not holds_attribute(repository, STATUS_ATTRIBUTE):
        raise CampaignError(
            f"campaign {campaign.name!r} keeps {campaign.status} customers, but the repository maps no"
            f" {STATUS_ATTRIBUTE!r} attribute: map one, or give the campaign status='all'"
        )
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
        if campaign.trigger == "joined":
            if not isinstance(groups, JoinHistory):
                raise CampaignError(
                    f"campaign {campaign.name!r} runs for customers who joined group {campaign.group!r}"
                    f" (trigger='joined'): pass groups that keep a history (cohorts.Groups),"
                    f" not {type(groups).__name__}"
                )
            start = campaign.started_at()
            assert start is not None  # Campaign checks that a joined trigger has a start
            joined = joined_since(groups, campaign.group, start, moment)
            ids &= set(joined)
        if campaign.status != "all":
            ids &= set(repository.select(_status_rule(campaign.status), moment))
    # A repository that cannot hold an attribute (host tables map only some) has it unknown for everyone.
    subscriptions = holds_attribute(repository, SUBSCRIBED_ATTRIBUTE)
    if campaign.send_to == "reachable" and ids:
        ids &= _reachable(campaign, repository, moment)
    unsub = set(repository.select(_UNSUBSCRIBED, moment)) & ids if ids and subscriptions else set()
    return Audience(
        campaign.name, frozenset(ids), campaign.group, campaign.status, origins, frozenset(unsub), joined,
        campaign.address_attributes() if campaign.send_to == "reachable" else None,
    )
