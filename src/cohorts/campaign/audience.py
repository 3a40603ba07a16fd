"""Who a campaign reaches: every customer or one group's members, the status filter, the suppressed.

:func:`audience` runs its filters in the repository (pushed down as SQL on SQL
repositories) and keeps customers who unsubscribed, listed as suppressed for
marketing actions: transactional actions still reach them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol

import attrs

from ..ast import Condition, Node, Op, Path
from ..model import CustomerId
from ..repository import CustomerReader, holds_attribute, require
from .model import STATUS_ATTRIBUTE, SUBSCRIBED_ATTRIBUTE, Campaign, CampaignError, aware_now

__all__ = ["Audience", "AudienceMember", "GroupsLike", "audience", "sorted_ids"]


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
        for customer_id in sorted_ids(self.ids):
            yield self.why(customer_id)


_STATUS = Path("customer", STATUS_ATTRIBUTE)
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
        if campaign.status != "all":
            ids &= set(repository.select(_status_rule(campaign.status), moment))
    # A repository that cannot hold an attribute (host tables map only some) has it unknown for everyone.
    subscriptions = holds_attribute(repository, SUBSCRIBED_ATTRIBUTE)
    unsub = set(repository.select(_UNSUBSCRIBED, moment)) & ids if ids and subscriptions else set()
    return Audience(campaign.name, frozenset(ids), campaign.group, campaign.status, origins, frozenset(unsub))
