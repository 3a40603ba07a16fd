"""The "Send To" field (issue #18): all of the group, or those with a usable address on the campaign's channels; and
what the status filters do with customers who have no status. On memory, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cohorts import Action, Campaign, CampaignError, Customer, Groups, audience

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def _people(repository: Any) -> Groups:
    repository.upsert([
        Customer(1, {"tags": ["vip"], "email": "a@example.com", "status": "Active"}),
        Customer(2, {"tags": ["vip"], "mobile_phone": "514-555-0102", "status": "inactive"}),
        Customer(3, {"tags": ["vip"], "phone": "call me", "email": "  "}),  # no usable address
        Customer(4, {"tags": ["vip"], "phone": "+1 418 555 0104", "status": "ACTIVE"}),
        Customer(5, {"tags": [], "email": "e@example.com"}),
        Customer(6, {"tags": ["vip"], "status": "retired", "work_email": "f@corp.example"}),
    ])
    groups = Groups(repository)
    groups.create("VIP", 'customer.tags contains "vip"')
    return groups


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([Action("email")], {1}),
        ([Action("sms")], {2, 4}),
        ([Action("email"), Action("sms"), Action("points", {"points": 5})], {1, 2, 4}),
        ([Action("email", {"to_attribute": "work_email"})], {6}),
    ],
)
def test_reachable_keeps_members_with_a_usable_address(
    repository: Any, actions: list[Action], expected: set[Any]
) -> None:
    groups = _people(repository)
    campaign = Campaign("News", group="VIP", send_to="reachable", actions=actions)
    found = audience(campaign, repository, groups, NOW)
    assert set(found) == expected
    everyone = audience(Campaign("News", group="VIP", actions=actions), repository, groups, NOW)
    assert set(everyone) == {1, 2, 3, 4, 6}


def test_reachable_says_why(repository: Any) -> None:
    groups = _people(repository)
    campaign = Campaign("News", group="VIP", send_to="reachable", actions=[Action("sms")])
    assert audience(campaign, repository, groups, NOW).why(2).reasons == (
        "in group 'VIP' (rules)",
        "has a usable mobile_phone or phone",
    )


def test_reachable_needs_a_message_action() -> None:
    with pytest.raises(CampaignError, match="has no email or sms action"):
        Campaign("News", send_to="reachable", actions=[Action("points", {"points": 1})])
    with pytest.raises(CampaignError, match="send_to must be one of all, reachable"):
        Campaign("News", send_to="some")


def test_customers_without_a_status_are_in_neither_status_filter(repository: Any) -> None:
    """Status is compared casefolded; no status (or another one) is neither active nor inactive; "all" keeps them."""
    groups = _people(repository)
    ids = {status: set(audience(Campaign("S", group="VIP", status=status), repository, groups, NOW))
           for status in ("active", "inactive", "all")}
    assert ids == {"active": {1, 4}, "inactive": {2}, "all": {1, 2, 3, 4, 6}}
