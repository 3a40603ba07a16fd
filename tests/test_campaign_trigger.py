"""Campaigns triggered by joining a group (issue #18): ``trigger="joined"`` runs for the members who joined
the group since the campaign started, read from the membership history, once each; not for older members.

On memory, SQLite and PostgreSQL, with writes through the repository, marks by hand and moves of
time, every run through :func:`cohorts.run_campaigns` (no refresh anywhere).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cohorts import Action, Campaign, CampaignError, Customer, Groups, audience, run_campaigns
from cohorts.config import ConfigError, parse_config

T0 = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
VIP = 'customer.tags contains "vip"'


def _welcome(**options: Any) -> Campaign:
    return Campaign("Welcome", group="VIP", start=T0, trigger="joined", actions=[Action("track")], **options)


class Runner:
    """The cron: each run calls the handler of the customers it reaches, and remembers them."""

    def __init__(self, repository: Any, campaign: Campaign) -> None:
        self.repository = repository
        self.campaign = campaign
        self.reached: list[Any] = []

    def run(self, now: dt.datetime) -> set[Any]:
        seen: list[Any] = []
        handlers = {"track": lambda customer, action, campaign: seen.append(customer.id)}
        report = run_campaigns([self.campaign], self.repository, Groups(self.repository), handlers, now)
        assert report[self.campaign.name].error is None
        self.reached += seen
        return set(seen)


def test_only_members_who_joined_since_the_start_are_reached(repository: Any) -> None:
    repository.upsert([Customer(1, {"tags": ["VIP"]}), Customer(2, {"tags": ["vip"]}), Customer(3, {"tags": []})])
    groups = Groups(repository)
    groups.create("VIP", VIP)
    assert set(groups.members("VIP", T0 - HOUR)) == {1, 2}  # found before the campaign starts
    cron = Runner(repository, _welcome())
    assert cron.run(T0 - HOUR / 2) == set()  # not started yet
    assert cron.run(T0 + HOUR) == set()  # 1 and 2 were members before: no welcome
    repository.upsert([Customer(3, {"tags": ["vip"]})])  # joins by the rule
    Groups(repository).add("VIP", 1, now=T0 + 2 * HOUR)  # an old member gains an origin: not a join
    repository.upsert([Customer(5, {"tags": []})])
    Groups(repository).add("VIP", 5, now=T0 + 2 * HOUR)  # joins by hand
    assert cron.run(T0 + 3 * HOUR) == {3, 5}
    assert cron.run(T0 + 4 * HOUR) == set()  # once each
    repository.upsert([Customer(2, {"tags": []})])  # an old member leaves ...
    assert cron.run(T0 + 5 * HOUR) == set()
    repository.upsert([Customer(2, {"tags": ["vip"]})])  # ... and joins again, after the start
    assert cron.run(T0 + 6 * HOUR) == {2}
    repository.upsert([Customer(3, {"tags": []}), Customer(3, {"tags": ["vip"]})])
    assert cron.run(T0 + 7 * HOUR) == set()
    assert sorted(cron.reached) == [2, 3, 5]


def test_a_member_who_joined_and_left_before_the_run_is_not_reached(repository: Any) -> None:
    repository.upsert([Customer(1, {"tags": []})])
    Groups(repository).create("VIP", VIP)
    cron = Runner(repository, _welcome())
    assert cron.run(T0) == set()
    repository.upsert([Customer(1, {"tags": ["vip"]})])
    assert set(Groups(repository).members("VIP", T0 + HOUR)) == {1}
    repository.upsert([Customer(1, {"tags": []})])
    assert cron.run(T0 + 2 * HOUR) == set()


def test_the_audience_says_when_each_member_joined(repository: Any) -> None:
    repository.upsert([Customer(1, {"tags": ["vip"]}), Customer(2, {"tags": []})])
    groups = Groups(repository)
    groups.create("VIP", VIP)
    groups.members("VIP", T0 - HOUR)
    repository.upsert([Customer(2, {"tags": ["vip"]})])
    found = audience(_welcome(), repository, Groups(repository), T0 + HOUR)
    assert set(found) == {2}
    assert found.joined is not None and found.joined[2] >= T0
    reasons = found.why(2).reasons
    assert reasons[0] == "in group 'VIP' (rules)"
    assert reasons[1].startswith("joined it at ") and reasons[1].endswith(", since the campaign started")
    everyone = audience(Campaign("All", group="VIP"), repository, Groups(repository), T0 + HOUR)
    assert set(everyone) == {1, 2} and everyone.joined is None


def test_a_group_created_after_the_start_welcomes_every_member(repository: Any) -> None:
    """Every member of a group made after the campaign started joined since then."""
    repository.upsert([Customer(1, {"tags": ["vip"]}), Customer(2, {"tags": ["vip"]})])
    cron = Runner(repository, _welcome())
    Groups(repository).create("VIP", VIP)
    assert cron.run(T0 + HOUR) == {1, 2}


def test_a_date_start_is_midnight_utc(repository: Any) -> None:
    repository.upsert([Customer(1, {"tags": []})])
    Groups(repository).create("VIP", VIP)
    Groups(repository).members("VIP", T0 - 10 * HOUR)
    repository.upsert([Customer(1, {"tags": ["vip"]})])
    Groups(repository).members("VIP", dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.UTC))
    campaign = Campaign("Welcome", group="VIP", start=dt.date(2026, 12, 1), trigger="joined", actions=[Action("track")])
    assert Runner(repository, campaign).run(T0) == {1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group": "VIP"}, "it needs a start"),
        ({"start": T0}, "it needs a group"),
        ({}, "it needs a group and a start"),
        ({"group": "VIP", "start": T0, "trigger": "left"}, "trigger must be one of audience, joined"),
    ],
)
def test_a_joined_trigger_needs_a_group_and_a_start(options: dict[str, Any], message: str) -> None:
    with pytest.raises(CampaignError, match=message):
        Campaign("Welcome", **{"trigger": "joined", **options})


def test_groups_without_a_history_are_refused_with_the_reason(repository: Any) -> None:
    class Members:
        def members(self, name: str, now: dt.datetime | None = None) -> dict[Any, frozenset[Any]]:
            return {}

    with pytest.raises(CampaignError, match="pass groups that keep a history"):
        audience(_welcome(), repository, Members(), T0)


def test_the_configuration_takes_a_trigger() -> None:
    text = """
[[campaigns]]
name = "Welcome"
group = "VIP"
start = 2026-12-01
trigger = "joined"
[[campaigns.actions]]
kind = "track"
"""
    config = parse_config(text)
    assert config.campaigns[0].trigger == "joined"
    with pytest.raises(ConfigError, match="it needs a start"):
        parse_config(text.replace("start = 2026-12-01\n", ""))


def test_the_command_line_audience_says_who_joined(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cohorts.sql")
    from cohorts.cli import main
    from cohorts.sql import SQLRepository

    path = tmp_path / "crm.db"
    repository = SQLRepository(f"sqlite:///{path}")
    repository.upsert([Customer(1, {"tags": ["vip"]})])
    Groups(repository).create("VIP", VIP)
    Groups(repository).members("VIP", T0 - HOUR)
    repository.upsert([Customer(2, {"tags": ["vip"]})])
    repository.close()
    config = tmp_path / "campaigns.toml"
    config.write_text(
        '[[campaigns]]\nname = "Welcome"\ngroup = "VIP"\nstart = 2026-12-01T09:00:00Z\ntrigger = "joined"\n'
        '[[campaigns.actions]]\nkind = "track"\n',
        encoding="utf-8",
    )
    code = main(["campaigns", "audience", "Welcome", "--db", str(path), "--config", str(config),
                 "--now", (T0 + HOUR).isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "group 'VIP' (members who joined since 2026-12-01 09:00 UTC)" in out
    assert "  2: in group 'VIP' (rules); joined it at 2026-12-01T10:00:00+00:00" in out
    assert "  1:" not in out
