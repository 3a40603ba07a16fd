"""Issue #18: what happens to actions owed to a customer who left the audience (``on_leave``), and runs with
a budget (``max_actions``, ``max_seconds``) that leave the rest for the next run, on every backend."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from cohorts import (
    Action,
    Campaign,
    CampaignError,
    Customer,
    Groups,
    Removal,
    RunReport,
    remove_from_campaign,
    run_campaigns,
)
from cohorts.config import parse_config

NOW = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
LAVAL = 'customer.city = "laval"'


class Flaky:
    """A handler that fails for the ids in ``failing`` and records every call."""

    def __init__(self, failing: set[Any] | None = None) -> None:
        self.failing = set(failing or ())
        self.calls: list[Any] = []

    def __call__(self, customer: Customer, action: Action, campaign: Campaign) -> None:
        self.calls.append(customer.id)
        if customer.id in self.failing:
            raise RuntimeError("the provider is down")


def _setup(repository: Any) -> Groups:
    repository.upsert([Customer(1, {"city": "Laval"}), Customer(2, {"city": "Laval"})])
    groups = Groups(repository)
    groups.create("Laval", LAVAL)
    return groups


@pytest.mark.parametrize(("on_leave", "runs_again"), [("finish", True), ("stop", False)])
def test_actions_owed_to_a_customer_who_left(repository: Any, on_leave: str, runs_again: bool) -> None:
    _setup(repository)
    campaign = Campaign("News", group="Laval", actions=[Action("track")], on_leave=on_leave)
    handler = Flaky({1})
    first = run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)["News"]
    assert (first.done, first.failed, first.stopped) == (1, 1, 0)  # 1 failed: due again on the next run
    repository.upsert([Customer(1, {"city": "Lévis"})])  # ... but it leaves the group
    handler.failing.clear()
    second = run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)["News"]
    assert handler.calls == ([1, 2, 1] if runs_again else [1, 2])
    assert (second.done, second.stopped) == ((1, 0) if runs_again else (0, 1))
    [row] = [e for e in repository.ledger().entries("News") if e.customer_id == 1]
    if runs_again:
        assert row.state == "done"
    else:
        assert (row.state, row.reason) == ("skipped", "stopped: the customer left the audience (on_leave='stop')")
        report = run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)
        assert report["News"].stopped == 0 and handler.calls == [1, 2]  # stopped for good
        assert not report.problems()
        lines = RunReport(NOW, (second,)).problems()
        assert lines == ["- News: 1 action(s) stopped: the customer left the audience"]


def test_a_customer_who_stays_keeps_its_retries_under_stop(repository: Any) -> None:
    _setup(repository)
    campaign = Campaign("News", group="Laval", actions=[Action("track")], on_leave="stop")
    handler = Flaky({1})
    run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)
    handler.failing.clear()
    report = run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)["News"]
    assert (report.done, report.stopped) == (1, 0) and handler.calls == [1, 2, 1]


def test_a_budget_of_actions_leaves_the_rest_for_the_next_run(repository: Any) -> None:
    repository.upsert([Customer(i, {"city": "Laval"}) for i in range(1, 6)])
    campaigns = [Campaign("A", actions=[Action("track")]), Campaign("B", actions=[Action("track")])]
    handler = Flaky()
    runs = []
    for _ in range(4):
        runs.append(run_campaigns(campaigns, repository, None, {"track": handler}, NOW, max_actions=4))
    assert [(r["A"].done, r["A"].left, r["B"].done, r["B"].left) for r in runs] == [
        (4, 1, 0, 5),  # the budget is the run's, over its campaigns
        (1, 0, 3, 2),
        (0, 0, 2, 0),
        (0, 0, 0, 0),
    ]
    assert [r.left for r in runs] == [6, 2, 0, 0]
    assert sorted(handler.calls) == sorted(list(range(1, 6)) * 2)  # each action once, none lost
    assert runs[0].to_dict()["left"] == 6 and runs[0].to_dict()["campaigns"][1]["left"] == 5
    assert "- B: 5 due action(s) left for the next run (budget spent)" in runs[0].problems()


def test_a_budget_of_seconds_stops_before_the_next_action(repository: Any) -> None:
    repository.upsert([Customer(i) for i in range(1, 6)])
    campaign = Campaign("Slow", actions=[Action("track")])
    calls: list[Any] = []

    def slow(customer: Customer, action: Action, campaign: Campaign) -> None:
        calls.append(customer.id)
        time.sleep(0.2)

    first = run_campaigns([campaign], repository, None, {"track": slow}, NOW, max_seconds=0.3)["Slow"]
    assert 1 <= first.done < 5 and first.done + first.left == 5
    rest = run_campaigns([campaign], repository, None, {"track": slow}, NOW)["Slow"]
    assert rest.done == first.left and sorted(calls) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_actions": 0}, "max_actions is a whole number >= 1"),
        ({"max_actions": 1.5}, "max_actions is a whole number >= 1"),
        ({"max_seconds": 0}, "max_seconds is a number of seconds > 0"),
        ({"max_seconds": "10"}, "max_seconds is a number of seconds > 0"),
    ],
)
def test_bad_budgets_are_refused(options: dict[str, Any], message: str) -> None:
    from cohorts import MemoryRepository

    with pytest.raises(CampaignError, match=message):
        run_campaigns([], MemoryRepository(), None, {}, NOW, **options)


def test_on_leave_is_checked_and_configured() -> None:
    with pytest.raises(CampaignError, match="campaign on_leave must be one of finish, stop"):
        Campaign("News", on_leave="pause")
    config = parse_config('[[campaigns]]\nname = "News"\non_leave = "stop"\n')
    assert config.campaigns[0].on_leave == "stop"


def test_the_command_line_takes_a_budget(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cohorts.sql")
    from cohorts.cli import main
    from cohorts.sql import SQLRepository

    path = tmp_path / "crm.db"
    repository = SQLRepository(f"sqlite:///{path}")
    repository.upsert([Customer(i) for i in range(1, 4)])
    repository.close()
    config = tmp_path / "campaigns.toml"
    config.write_text('[[campaigns]]\nname = "Tally"\n[[campaigns.actions]]\nkind = "track"\n', encoding="utf-8")
    args = ["campaigns", "run", "--db", str(path), "--config", str(config), "--now", NOW.isoformat(), "--no-progress"]
    assert main([*args, "--max-actions", "2"]) == 0
    out = capsys.readouterr().out
    assert "- Tally: 1 due action(s) left for the next run (budget spent)" in out
    assert main([*args, "--max-actions", "2", "--json"]) == 0
    assert '"left": 0' in capsys.readouterr().out
    assert main([*args, "--max-seconds", "0"]) == 2
    assert "--max-seconds: a number above 0" in capsys.readouterr().err


# -- removing one customer by hand -------------------------------------------------------------


def test_a_removed_customer_never_gets_what_was_left(repository: Any) -> None:
    """Mautic #6815: take one contact out of a campaign; the ledger keeps what was done."""
    _setup(repository)
    campaign = Campaign("News", group="Laval", actions=[Action("track", id="first"), Action("track", id="second")])
    handler = Flaky()
    failing = Flaky({1})
    both = {"track": lambda c, a, k: (failing if a.id == "second" else handler)(c, a, k)}
    run_campaigns([campaign], repository, Groups(repository), both, NOW)
    assert sorted(handler.calls) == [1, 2] and sorted(failing.calls) == [1, 2]  # 1's second step failed
    removal = remove_from_campaign(campaign, 1, repository, NOW, reason="asked by phone")
    assert removal == Removal("News", 1, ("second",))
    rows = {(e.customer_id, e.action): (e.state, e.reason) for e in repository.ledger().entries("News")}
    assert rows[1, "first"] == ("done", None)  # what was done stays
    assert rows[1, "second"] == ("skipped", "removed: asked by phone")
    failing.failing.clear()
    report = run_campaigns([campaign], repository, Groups(repository), both, NOW)["News"]
    assert report.done == 0 and failing.calls == [1, 2]
    assert remove_from_campaign(campaign, 1, repository, NOW).stopped == ()  # nothing left to stop


def test_removing_a_customer_not_enrolled_yet_keeps_it_out(repository: Any) -> None:
    _setup(repository)
    campaign = Campaign("News", group="Laval", actions=[Action("track")])
    assert remove_from_campaign(campaign, 2, repository, NOW).stopped == ("track-1",)
    handler = Flaky()
    report = run_campaigns([campaign], repository, Groups(repository), {"track": handler}, NOW)["News"]
    assert handler.calls == [1] and report.added == 1 and report.audience == 2


def test_a_removal_needs_a_campaign_and_a_reason(repository: Any) -> None:
    with pytest.raises(TypeError, match="takes a Campaign"):
        remove_from_campaign("News", 1, repository, NOW)  # type: ignore[arg-type]
    with pytest.raises(CampaignError, match="non-blank text"):
        remove_from_campaign(Campaign("News"), 1, repository, NOW, reason=" ")


def test_the_command_line_removes_a_customer(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cohorts.sql")
    from cohorts.cli import main
    from cohorts.sql import SQLRepository

    path = tmp_path / "crm.db"
    repository = SQLRepository(f"sqlite:///{path}")
    repository.upsert([Customer(1), Customer("007")])
    repository.close()
    config = tmp_path / "campaigns.toml"
    config.write_text('[[campaigns]]\nname = "Tally"\n[[campaigns.actions]]\nkind = "track"\n', encoding="utf-8")
    common = ["--db", str(path), "--config", str(config), "--now", NOW.isoformat()]
    assert main(["campaigns", "remove", "tally", "007", *common, "--reason", "asked by phone"]) == 0
    assert capsys.readouterr().out == "removed '007' from campaign 'Tally': 1 action(s) stopped (track-1)\n"
    assert main(["campaigns", "remove", "Tally", "007", *common]) == 0
    assert capsys.readouterr().out == "removed '007' from campaign 'Tally': no action was left to run\n"
    assert main(["campaigns", "run", *common, "--no-progress", "--json"]) == 0
    assert '"done": 1' in capsys.readouterr().out
    entries = {e.customer_id: (e.state, e.reason) for e in SQLRepository(f"sqlite:///{path}").ledger().entries()}
    assert entries == {1: ("done", None), "007": ("skipped", "removed: asked by phone")}
    assert main(["campaigns", "remove", "Talley", "1", *common]) == 1
    assert "did you mean 'Tally'?" in capsys.readouterr().err
