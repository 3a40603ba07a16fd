"""Customer groups: origins, definitions, continuous membership over memory and SQL repositories."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event, GroupError, GroupNotEmptyError, RuleError, UnknownGroupError
from cohorts.groups import Change, Group, Groups, Origin, origins
from cohorts.repository import MemoryRepository, UnknownCustomerError

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
RECENT = "repair_order.closed.last_time < 30 days ago"
M, IMP, R = Origin.MANUAL, Origin.IMPORTED, Origin.RULES


@pytest.fixture
def make_repo(make_repository: Callable[..., Any]) -> Callable[[list[Customer]], Any]:
    """A factory of repositories of each backend (memory, SQLite, PostgreSQL) holding the given customers."""

    def make(customers: list[Customer]) -> Any:
        repo = make_repository()
        repo.upsert(customers)
        return repo

    return make


def _garage() -> list[Customer]:
    return [
        Customer(
            "a", {"vehicle_model": "Ford Escape", "city": "Laval"}, [Event("repair_order.closed", NOW - 10 * DAY)]
        ),
        Customer(
            "b", {"vehicle_model": "Ford Escape", "city": "Québec"}, [Event("repair_order.closed", NOW - 40 * DAY)]
        ),
        Customer("c", {"vehicle_model": "Ford Focus", "city": "Laval"}, [Event("repair_order.closed", NOW - 2 * DAY)]),
        Customer("d", {"vehicle_model": "Kia Rio", "status": "gold"}),
    ]


# -- plain functions ---------------------------------------------------------


def test_origins_of_a_value_group() -> None:
    """origins() combines manual, imported and rule origins, and exclusion empties them."""
    group = Group("VIP", 'customer.status = "gold"', manual=["a"], imported=["a", "b"], excluded=["x"])
    assert origins(group, Customer("a", {"status": "GOLD"})) == {M, IMP, R}
    assert origins(group, Customer("b", {})) == {IMP}
    assert origins(group, Customer("z", {})) == frozenset()
    assert origins(group, Customer("x", {"status": "gold"})) == frozenset()


def test_origins_with_group_references() -> None:
    """A rule's group reference is answered by the groups lookup."""
    group = Group("Escapes not VIP", 'customer not in group "VIP"')
    assert origins(group, Customer(1), groups=lambda name: {2}) == {R}
    assert origins(group, Customer(2), groups=lambda name: {2}) == frozenset()


def test_group_value_rejects_a_single_id() -> None:
    """Group ids are collections; a bare id is a clear TypeError."""
    with pytest.raises(TypeError):
        Group("VIP", manual="abc")  # type: ignore[arg-type]


# -- definitions --------------------------------------------------------------


def test_names_are_unique_case_insensitively(make_repo: Any) -> None:
    """A second group whose name differs only by case is refused."""
    groups = Groups(make_repo(_garage()))
    groups.create("VIP")
    with pytest.raises(GroupError, match="exists already"):
        groups.create(" vip ")
    groups.rename("vip", "Very Important")
    assert groups.names() == ["Very Important"]
    with pytest.raises(UnknownGroupError, match="did you mean 'Very Important'"):
        groups.members("Very Importent", NOW)


def test_invalid_rules_change_nothing(make_repo: Any) -> None:
    """Syntax errors, unknown groups and cycles raise, and the stored rule stays."""
    groups = Groups(make_repo(_garage()))
    groups.create("A", 'customer.city = "Laval"')
    groups.create("B", 'customer in group "A"')
    with pytest.raises(RuleError):
        groups.set_rule("A", "customer.city = ")
    with pytest.raises(UnknownGroupError):
        groups.set_rule("A", 'customer in group "Nope"')
    with pytest.raises(RuleError, match="itself"):
        groups.set_rule("A", 'customer in group "b"')
    with pytest.raises(RuleError, match="itself"):
        groups.set_rule("A", 'customer not in group "A"')
    with pytest.raises(RuleError):
        groups.create("C", "customer.city ==")
    assert groups.definition("A").rule == 'customer.city = "Laval"'
    assert groups.definition("A").version == 1
    assert groups.names() == ["A", "B"]
    assert set(groups.members("B", NOW)) == {"a", "c"}


def test_delete_needs_force_when_not_empty(make_repo: Any) -> None:
    """GroupNotEmptyError counts members by origin; force deletes and reports the leaves."""
    groups = Groups(make_repo(_garage()))
    groups.create("Laval", 'customer.city = "laval"')
    groups.add("Laval", "a", "d")
    with pytest.raises(GroupNotEmptyError) as error:
        groups.delete("laval")
    assert error.value.count == 3
    assert error.value.origins == {"manual": 2, "rules": 2}
    left: list[Change] = []
    groups.subscribe(left.append)
    groups.delete("LAVAL", force=True)
    assert sorted(c.customer_id for c in left) == ["a", "c", "d"]
    assert groups.names() == []
    groups.create("Empty")
    groups.delete("empty")


def test_a_group_used_by_rules_cannot_be_deleted(make_repo: Any) -> None:
    """Deleting a group another rule refers to is a GroupError."""
    groups = Groups(make_repo(_garage()))
    groups.create("VIP")
    groups.create("Not VIP", 'customer not in group "VIP"')
    with pytest.raises(GroupError, match="used by the rules of 'Not VIP'"):
        groups.delete("VIP", force=True)


def test_rename_updates_referring_rules(make_repo: Any) -> None:
    """Renaming a group rewrites the references of other groups' rules."""
    groups = Groups(make_repo(_garage()))
    groups.create("VIP", 'customer.status = "gold"')
    groups.create("Others", 'customer not in group "vip"')
    groups.rename("VIP", "Gold")
    assert groups.definition("Others").rule == 'customer not in group "Gold"'
    assert set(groups.members("Others", NOW)) == {"a", "b", "c"}


# -- origins and manual changes ---------------------------------------------------


def test_manual_members_stay_and_removal_keeps_rules(make_repo: Any) -> None:
    """A manual member stays whatever the rules; removal leaves those the rules match, with RULES alone."""
    groups = Groups(make_repo(_garage()))
    groups.create("Escapes", 'customer.vehicle_model contains "escape"')
    groups.add("Escapes", "a", "d")
    groups.add("Escapes", "c", origin=Origin.IMPORTED)
    assert groups.members("Escapes", NOW) == {"a": {M, R}, "b": {R}, "c": {IMP}, "d": {M}}
    changes = groups.remove("Escapes", "a", "c", "d")
    assert {(c.customer_id, c.kind) for c in changes} == {("a", "changed"), ("c", "left"), ("d", "left")}
    assert groups.members("Escapes", NOW) == {"a": {R}, "b": {R}}
    assert groups.refresh(NOW + DAY) == []
    assert groups.members("Escapes", NOW + DAY) == {"a": {R}, "b": {R}}


def test_removing_a_rule_keeps_manual_members(make_repo: Any) -> None:
    """set_rule(name, None) drops the RULES origin and keeps manual and imported members."""
    groups = Groups(make_repo(_garage()))
    groups.create("Escapes", 'customer.vehicle_model contains "escape"')
    groups.add("Escapes", "a", "d", now=NOW)
    groups.set_rule("Escapes", None)
    changes = groups.refresh(NOW + DAY)
    assert {(c.customer_id, c.kind) for c in changes} == {("a", "changed"), ("b", "left")}
    assert groups.members("Escapes", NOW + DAY) == {"a": {M}, "d": {M}}
    assert groups.definition("Escapes").version == 2


def test_adding_many_customers_at_once(make_repo: Any) -> None:
    """Bulk adds (as imports do) check every id and add all of them, or none."""
    customers = [Customer(i, {"n": i}) for i in range(60)]
    groups = Groups(make_repo(customers))
    groups.create("Imported")
    groups.create("Not imported", 'customer not in group "Imported"')
    with pytest.raises(UnknownCustomerError):
        groups.add("Imported", *range(61), origin=Origin.IMPORTED, now=NOW)
    assert groups.count("Not imported", NOW) == 60
    changes = groups.add("Imported", *range(60), origin=Origin.IMPORTED, now=NOW)
    assert sum(c.joined for c in changes) == 60 and sum(c.left for c in changes) == 60
    assert groups.count("Not imported", NOW) == 0


def test_unknown_customers_change_nothing(make_repo: Any) -> None:
    """add() with one unknown id raises UnknownCustomerError and adds none."""
    groups = Groups(make_repo(_garage()))
    groups.create("VIP")
    with pytest.raises(UnknownCustomerError):
        groups.add("VIP", "a", "nobody")
    assert groups.members("VIP", NOW) == {}
    with pytest.raises(UnknownGroupError):
        groups.add("Nope", "a")
    with pytest.raises(GroupError):
        groups.add("VIP", "a", origin=Origin.RULES)


def test_exclusion_wins_over_every_origin(make_repo: Any) -> None:
    """An excluded customer is never listed, and why() says so; unexclude restores them."""
    groups = Groups(make_repo(_garage()))
    groups.create("Escapes", 'customer.vehicle_model contains "escape"')
    groups.add("Escapes", "a")
    changes = groups.exclude("Escapes", "a")
    assert [(c.customer_id, c.kind) for c in changes] == [("a", "left")]
    assert set(groups.members("Escapes", NOW)) == {"b"}
    why = groups.why("Escapes", "a", NOW)
    assert why.excluded and not why.member
    assert "excluded" in str(why)
    assert groups.refresh(NOW + DAY, customer_ids=["a"]) == []
    groups.unexclude("Escapes", "a")
    assert groups.origins("escapes", "a", NOW + DAY) == {M, R}


def test_groups_of_and_count(make_repo: Any) -> None:
    """groups_of lists every group of a customer with origins; count counts members."""
    groups = Groups(make_repo(_garage()))
    groups.create("Laval", 'customer.city = "Laval"')
    groups.create("Escapes", 'customer.vehicle_model contains "escape"')
    groups.create("Hand picked")
    groups.add("Hand picked", "a")
    assert groups.groups_of("a", NOW) == {"Laval": {R}, "Escapes": {R}, "Hand picked": {M}}
    assert groups.groups_of("d", NOW) == {}
    assert groups.count("escapes", NOW) == 2
    with pytest.raises(UnknownCustomerError):
        groups.groups_of("nobody", NOW)


def test_transaction_rolls_back_group_changes(make_repo: Any) -> None:
    """A failing repository transaction undoes the group changes made inside it, on every backend."""
    repo = make_repo(_garage())
    groups = Groups(repo)
    groups.create("VIP")
    groups.refresh(NOW)
    with pytest.raises(RuntimeError), repo.transaction():
        groups.add("VIP", "a", now=NOW)
        groups.create("Other", 'customer.city = "Laval"')
        assert groups.count("Other", NOW) == 2
        raise RuntimeError("crash")
    assert groups.members("VIP", NOW) == {}
    assert groups.names() == ["VIP"]
    groups.create("Later")  # the rolled-back definitions are not served from a cache
    assert groups.names() == ["Later", "VIP"]
    assert groups.count("Later", NOW) == 0


# -- rules over time ------------------------------------------------------------


def test_members_leave_as_time_passes(make_repo: Any) -> None:
    """With last_time < 30 days ago, a customer leaves 30 days after the repair without a data change."""
    groups = Groups(make_repo(_garage()))
    groups.create("Recent", RECENT)
    assert set(groups.members("Recent", NOW)) == {"a", "c"}
    left = groups.refresh(NOW + 21 * DAY)
    assert [(c.customer_id, c.kind, c.before) for c in left] == [("a", "left", {R})]
    assert set(groups.members("Recent", NOW + 27 * DAY)) == {"c"}
    assert groups.count("Recent", NOW + 40 * DAY) == 0


def test_members_are_right_at_any_now_without_refresh(make_repo: Any) -> None:
    """Reads at later and earlier moments agree with evaluating the rule afresh."""
    customers = _garage()
    groups = Groups(make_repo(customers))
    groups.create("Recent", RECENT)
    for days in (0, 25, 3, 31, 100, 9, 8):
        at = NOW + days * DAY
        expected = {c.id for c in customers if origins(Group("Recent", RECENT), c, at)}
        assert set(groups.members("Recent", at)) == expected, days


def test_refresh_at_a_later_now_revisits_only_due_memberships() -> None:
    """Moving now ahead re-reads only the customers whose answer could have changed."""
    customers = [Customer(i, {"n": i}, [Event("repair_order.closed", NOW - i * DAY)]) for i in range(200)]
    customers += [Customer(1000 + i, {"n": i}) for i in range(200)]
    repo = _CountingRepository(customers)
    groups = Groups(repo)
    groups.create("Recent", RECENT)
    groups.create("Static", "customer.n >= 100")
    groups.refresh(NOW)
    repo.gets = 0
    changes = groups.refresh(NOW + DAY)
    assert [c.customer_id for c in changes] == [29]
    assert repo.gets <= 2
    assert groups.refresh(NOW + DAY) == []


def test_time_rule_with_a_static_false_part_stores_nothing_pending() -> None:
    """A customer another condition rules out is not revisited as time passes."""
    customers = [
        Customer(i, {"vehicle_model": "Focus"}, [Event("repair_order.closed", NOW - i * DAY)]) for i in range(50)
    ]
    repo = _CountingRepository(customers)
    groups = Groups(repo)
    groups.create("Recent Escapes", RECENT + ' AND customer.vehicle_model contains "Escape"')
    groups.refresh(NOW)
    repo.gets = 0
    assert groups.refresh(NOW + 365 * DAY) == []
    assert repo.gets == 0


class _CountingRepository(MemoryRepository):
    """A memory repository that counts the customers read one by one or in batches."""

    gets = 0

    def get(self, customer_id: Any) -> Customer | None:
        self.gets += 1
        return super().get(customer_id)

    def get_many(self, customer_ids: Any) -> dict[Any, Customer]:
        found = super().get_many(customer_ids)
        self.gets += len(found)
        return found


TIME_RULES = [
    RECENT,
    "repair_order.closed.last_time > 2 months ago",
    "repair_order.closed.first_time >= 1 year ago",
    "repair_order.closed.at = 3 days ago",
    "repair_order.closed.at in [yesterday, today]",
    "repair_order.closed.at within last 36 hours",
    "customer.renewal within next 1 month",
    "customer.renewal between 10 days ago and in 10 days",
    "customer.renewal before tomorrow AND NOT customer.renewal < 20 days ago",
    "customer.renewal = today OR repair_order.closed.count >= 2",
    "customer.renewal > now",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=st.sampled_from(TIME_RULES),
    zone=st.sampled_from(["UTC", "America/Montreal"]),
    offsets=st.lists(st.integers(-90 * 24, 90 * 24), min_size=1, max_size=6),
    renewals=st.lists(st.one_of(st.none(), st.integers(-60 * 24, 60 * 24)), min_size=6, max_size=6),
    steps=st.lists(st.integers(0, 40 * 24), min_size=1, max_size=6),
)
def test_incremental_membership_equals_fresh_evaluation(
    rule: str, zone: str, offsets: list[int], renewals: list[int | None], steps: list[int]
) -> None:
    """Catching up at later and later nows gives the same members as evaluating afresh each time."""
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime(2026, 3, 1, 12, tzinfo=tz)
    customers = []
    for i, renewal in enumerate(renewals):
        events = [
            Event("repair_order.closed", start + dt.timedelta(hours=h * (i + 1) // 3)) for h in offsets[: i % 3 + 1]
        ]
        attributes = {} if renewal is None else {"renewal": start + dt.timedelta(hours=renewal)}
        customers.append(Customer(i, attributes, events))
    _assert_catching_up_agrees(rule, customers, tz, start, steps, refresh=False)


def _assert_catching_up_agrees(
    rule: str, customers: list[Customer], tz: dt.tzinfo, start: dt.datetime, steps: list[int], refresh: bool
) -> None:
    """At later and later nows (reading, or refreshing first), members equal a fresh evaluation's."""
    groups = Groups(MemoryRepository(customers, tz=tz))
    groups.create("G", rule)
    definition = Group("G", rule)
    at = start
    for step in steps:
        at = at + dt.timedelta(hours=step, minutes=step % 7)
        if refresh:
            groups.refresh(at)
        expected = {c.id for c in customers if origins(definition, c, at, tz=tz)}
        assert set(groups.members("G", at)) == expected, at


# -- data changes -----------------------------------------------------------------


def test_refresh_of_changed_customers_reads_only_affected_groups(
    make_repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a data change, refresh(customer_ids) re-evaluates only the groups reading what changed.

    What each customer's rules read is recorded when it is evaluated on its own; a full refresh
    computed by the database (SQL) records nothing, so a customer's first change after it
    re-evaluates every group for that customer.
    """
    repo = make_repo(_garage())
    groups = Groups(repo)
    groups.create("Laval", 'customer.city = "Laval"')
    groups.create("Escapes", 'customer.vehicle_model contains "escape"')
    groups.create("Recent", RECENT)
    groups.create("Laval escapes", 'customer in group "Laval" AND customer in group "Escapes"')
    groups.refresh(NOW)
    groups.refresh(NOW, customer_ids=["b", "d"])  # each evaluated on its own: what they read is recorded
    evaluated: list[str] = []
    from cohorts import timing as module

    original = module.Plan.matches

    def spy(self: Any, customer: Customer, now: dt.datetime, lookup: Any) -> bool:
        evaluated.append(self.definition.name)
        return original(self, customer, now, lookup)

    monkeypatch.setattr(module.Plan, "matches", spy)
    customer = repo.get("b")
    repo.upsert([customer.with_attributes(city="Laval")])
    changes = groups.refresh(NOW, customer_ids=["b"])
    assert sorted(evaluated) == ["Laval", "Laval escapes"]
    assert {(c.group, c.kind) for c in changes} == {("Laval", "joined"), ("Laval escapes", "joined")}
    evaluated.clear()
    assert groups.refresh(NOW, customer_ids=["b"]) == []
    assert evaluated == []
    repo.add_events("d", [Event("repair_order.closed", NOW - DAY)])
    changes = groups.refresh(NOW, customer_ids=["d"])
    assert evaluated == ["Recent"]
    assert [(c.group, c.customer_id, c.kind) for c in changes] == [("Recent", "d", "joined")]


def test_new_and_deleted_customers(make_repo: Any) -> None:
    """refresh(customer_ids) evaluates new customers and drops deleted ones."""
    repo = make_repo(_garage())
    groups = Groups(repo)
    groups.create("Laval", 'customer.city = "Laval"')
    groups.add("Laval", "d")
    groups.refresh(NOW)
    repo.upsert([Customer("e", {"city": "LAVAL"})])
    repo.delete("a", "d")
    changes = groups.refresh(NOW, customer_ids=["e", "a", "d"])
    assert {(c.customer_id, c.kind) for c in changes} == {("e", "joined"), ("a", "left"), ("d", "left")}
    assert set(groups.members("Laval", NOW)) == {"c", "e"}
    with pytest.raises(UnknownCustomerError):
        groups.refresh(NOW, customer_ids=["zzz"])


def test_rule_change_is_a_diff_with_versions(make_repo: Any) -> None:
    """A new rule version shows up as joins and leaves; why() names the version that admitted a member."""
    groups = Groups(make_repo(_garage()))
    groups.create("G", 'customer.city = "Laval"')
    groups.refresh(NOW)
    preview = groups.preview("G", 'customer.vehicle_model contains "escape"', NOW)
    assert (preview.before, preview.after, preview.joining, preview.leaving) == (2, 2, 1, 1)
    assert preview.joining_sample == ("b",) and preview.leaving_sample == ("c",)
    assert groups.count("G", NOW) == 2  # nothing saved
    groups.set_rule("G", 'customer.vehicle_model contains "escape"')
    changes = groups.refresh(NOW + DAY)
    assert {(c.customer_id, c.kind) for c in changes} == {("b", "joined"), ("c", "left")}
    why = groups.why("G", "a", NOW + DAY)
    assert why.matched_version == 2 and why.since == NOW
    assert why.explanation is not None and why.explanation.matched
    assert "matched rule version 2 since 2026-11-22" in str(why)
    why_not = groups.why("G", "c", NOW + DAY)
    assert not why_not.member and why_not.matched_version is None
    assert groups.refresh(NOW + DAY) == []


def test_subscribers_hear_joins_and_leaves(make_repo: Any) -> None:
    """Callbacks receive joins and leaves of their group, not other changes."""
    groups = Groups(make_repo(_garage()))
    groups.create("Recent", RECENT)
    groups.create("Other")
    joins: list[Change] = []
    leaves: list[Change] = []
    groups.subscribe(joins.append, group="recent", leaves=False)
    stop = groups.subscribe(leaves.append, joins=False)
    groups.refresh(NOW)
    assert sorted(c.customer_id for c in joins) == ["a", "c"]
    groups.add("Recent", "a")  # a change of origins, not a join
    groups.add("Other", "b")
    assert len(joins) == 2
    groups.refresh(NOW + 60 * DAY)
    assert sorted(c.customer_id for c in leaves) == ["c"]
    stop()
    groups.remove("Other", "b")
    assert len(leaves) == 1


# -- the command line ------------------------------------------------------------


def test_groups_command(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """cohorts groups create / list / members / why / refresh work on a database file."""
    from cohorts.cli import main
    from cohorts.sql import SQLRepository

    path = str(tmp_path / "g.db")
    SQLRepository(path).upsert(_garage())
    at = ["--db", path, "--now", "2026-11-22T12:00"]
    assert main(["groups", "create", "Recent", RECENT, *at]) == 0
    assert "created group 'Recent': 2 member(s)" in capsys.readouterr().out
    assert main(["groups", "list", *at]) == 0
    assert "Recent        2             1  repair_order.closed.last_time < 30 days ago" in capsys.readouterr().out
    assert main(["groups", "members", "recent", *at, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"customer": "a", "origins": ["rules"]},
        {"customer": "c", "origins": ["rules"]},
    ]
    assert main(["groups", "why", "Recent", "a", *at]) == 0
    out = capsys.readouterr().out
    assert "customer 'a' is in group 'Recent'" in out and "matched rule version 1 since 2026-11-22" in out
    assert main(["groups", "refresh", "--db", path, "--now", "2026-12-13T12:00", "--json"]) == 0
    assert [(c["customer"], c["change"]) for c in json.loads(capsys.readouterr().out)] == [("a", "left")]
    assert main(["groups", "members", "Nope", *at]) == 1
    assert "no group named 'Nope'" in capsys.readouterr().err
    assert main(["groups", "list"]) == 2


def test_groups_command_changes_groups_as_a_user_would(tmp_path: Any) -> None:
    """add / exclude / preview / set-rule / rename / delete, run as the `cohorts` command."""
    import subprocess
    import sys

    from cohorts.sql import SQLRepository

    path = str(tmp_path / "g.db")
    SQLRepository(path).upsert(_garage())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cohorts", "groups", *args, "--db", path, "--now", "2026-11-22T12:00"],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            check=False,
        )

    assert run("create", "Laval", 'customer.city = "Laval"').returncode == 0
    added = run("add", "Laval", "d", "--json")
    assert added.returncode == 0, added.stderr
    assert [(c["customer"], c["change"], c["after"]) for c in json.loads(added.stdout)] == [("d", "joined", ["manual"])]
    excluded = run("exclude", "Laval", "a")
    assert excluded.returncode == 0 and "'a' left 'Laval' (rules -> none)" in excluded.stdout
    preview = run("preview", "Laval", 'customer.vehicle_model contains "escape"', "--json")
    assert json.loads(preview.stdout) | {"joining_sample": None} == {
        "group": "Laval",
        "rule": 'customer.vehicle_model contains "escape"',
        "saved": False,
        "before": 2,
        "after": 2,
        "joining": 1,
        "leaving": 1,
        "joining_sample": None,
        "leaving_sample": ["c"],
    }
    members = run("members", "Laval", "--json")
    assert {m["customer"] for m in json.loads(members.stdout)} == {"c", "d"}  # the preview saved nothing
    saved = run("set-rule", "Laval", 'customer.vehicle_model contains "escape"')
    assert saved.returncode == 0 and "saved: rule version 2" in saved.stdout
    assert run("rename", "Laval", "Escapes").returncode == 0
    refused = run("delete", "Escapes")
    assert refused.returncode == 1 and "2 member" in refused.stderr and "Traceback" not in refused.stderr
    deleted = run("delete", "Escapes", "--force")
    assert deleted.returncode == 0 and "deleted group 'Escapes' (2 member(s))" in deleted.stdout
    bad = run("add", "Nope", "a")
    assert bad.returncode == 1 and "no group named 'Nope'" in bad.stderr


def test_groups_referring_to_time_based_groups_follow_them(make_repo: Any) -> None:
    """When time moves a customer out of a group, groups whose rules refer to it follow."""
    groups = Groups(make_repo(_garage()))
    groups.create("Recent", RECENT)
    groups.create("Lapsed Escapes", 'customer.vehicle_model contains "escape" AND customer not in group "Recent"')
    assert set(groups.members("Lapsed Escapes", NOW)) == {"b"}
    changes = groups.refresh(NOW + 25 * DAY)
    assert {(c.group, c.customer_id, c.kind) for c in changes} == {
        ("Recent", "a", "left"),
        ("Lapsed Escapes", "a", "joined"),
    }
    groups.exclude("Recent", "c", now=NOW + 25 * DAY)
    assert groups.origins("lapsed escapes", "c", NOW + 25 * DAY) == frozenset()  # c has a Focus


def test_reads_before_the_stored_state_are_computed_afresh(make_repo: Any) -> None:
    """Asking about an earlier now than the last refresh answers for that moment, without storing it."""
    groups = Groups(make_repo(_garage()))
    groups.create("Recent", RECENT)
    groups.refresh(NOW + 25 * DAY)
    assert set(groups.members("Recent", NOW)) == {"a", "c"}
    why = groups.why("Recent", "a", NOW)
    assert why.member and why.matched_version == 1 and why.evaluated_at == NOW
    assert groups.groups_of("a", NOW) == {"Recent": {R}}
    assert set(groups.members("Recent", NOW + 25 * DAY)) == {"c"}
    assert groups.refresh(NOW + 25 * DAY) == []


def test_preview_with_group_references(make_repo: Any) -> None:
    """preview evaluates references to other groups with their current members and saves nothing."""
    groups = Groups(make_repo(_garage()))
    groups.create("Laval", 'customer.city = "Laval"')
    groups.create("Target", 'customer.status = "gold"')
    groups.exclude("Target", "c", now=NOW)
    preview = groups.preview("Target", 'customer in group "Laval"', NOW, sample=1)
    assert (preview.before, preview.after, preview.joining, preview.leaving) == (1, 1, 1, 1)
    assert preview.joining_sample == ("a",) and preview.leaving_sample == ("d",)
    assert "1 joining, 1 leaving" in str(preview)
    with pytest.raises(RuleError):
        groups.preview("Laval", 'customer in group "Target" AND customer in group "Laval"', NOW)
    assert groups.definition("Target").rule == 'customer.status = "gold"'


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["add", "import", "remove", "exclude", "unexclude", "later", "change", "event", "rule"]),
        st.sampled_from(["Recent", "Laval", "Both"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 40),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_sql_store_agrees_with_memory_store(operations: list[tuple[str, str, str, int]]) -> None:
    """The same operations on memory and SQLite repositories give the same members and changes."""
    from cohorts.sql import SQLRepository

    def setup(repo: Any) -> Groups:
        repo.upsert(_garage())
        groups = Groups(repo)
        groups.create("Recent", RECENT)
        groups.create("Laval", 'customer.city = "laval"')
        groups.create("Both", 'customer in group "Recent" AND customer in group "Laval"')
        return groups

    sides = [setup(MemoryRepository()), setup(SQLRepository("sqlite://"))]
    at = NOW
    for action, group, customer, number in operations:
        results = []
        for groups in sides:
            repo = groups.repository
            match action:
                case "add":
                    result = groups.add(group, customer, now=at)
                case "import":
                    result = groups.add(group, customer, origin=Origin.IMPORTED, now=at)
                case "remove":
                    result = groups.remove(group, customer, now=at)
                case "exclude":
                    result = groups.exclude(group, customer, now=at)
                case "unexclude":
                    result = groups.unexclude(group, customer, now=at)
                case "later":
                    result = groups.refresh(at + dt.timedelta(hours=number * 7))
                case "change":
                    repo.upsert([repo.get(customer).with_attributes(city="Laval" if number % 2 else "Lévis")])
                    result = groups.refresh(at, customer_ids=[customer])
                case "event":
                    repo.add_events(customer, [Event("repair_order.closed", at - dt.timedelta(days=number))])
                    result = groups.refresh(at, customer_ids=[customer])
                case _:
                    groups.set_rule("Recent", f"repair_order.closed.last_time < {number + 1} days ago")
                    result = groups.refresh(at)
            results.append(sorted(str(c) for c in result))
        if action == "later":
            at = at + dt.timedelta(hours=number * 7)
        assert results[0] == results[1], action
        for name in ("Recent", "Laval", "Both"):
            assert sides[0].members(name, at) == sides[1].members(name, at), name


def test_sqlite_marks_table_without_rowid_and_older_databases(tmp_path: Any) -> None:
    """New SQLite databases keep the group marks WITHOUT ROWID; one made with the older
    layout (a rowid table) keeps its table and is read and written alike."""
    import sqlite3

    from cohorts.sql import SQLRepository

    def marks_sql(path: Any) -> str:
        with sqlite3.connect(path) as conn:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'cohorts_group_marks'").fetchone()
        return str(sql)

    new = tmp_path / "new.db"
    repo = SQLRepository(new)
    repo.upsert(_garage())
    groups = Groups(repo)
    groups.create("Imported")
    groups.add("Imported", "a", "b", origin=Origin.IMPORTED)
    assert "WITHOUT ROWID" in marks_sql(new).upper()
    repo.close()

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute(
            "CREATE TABLE cohorts_group_marks (group_id INTEGER NOT NULL, customer TEXT NOT NULL,"
            " kind VARCHAR(8) NOT NULL, PRIMARY KEY (group_id, customer, kind))"
        )
        conn.execute("CREATE INDEX cohorts_group_marks_customer ON cohorts_group_marks (customer)")
    for path in (old, new):
        repo = SQLRepository(path)
        if path == old:
            repo.upsert(_garage())
        groups = Groups(repo)
        if path == old:
            groups.create("Imported")
        groups.add("Imported", "a", "b", origin=Origin.IMPORTED)
        groups.add("Imported", "c")
        groups.remove("Imported", "b")
        assert groups.members("Imported", NOW) == {"a": {IMP}, "c": {M}}
        assert groups.groups_of("a", NOW) == {"Imported": {IMP}}
        repo.close()
    assert "WITHOUT ROWID" not in marks_sql(old).upper()


def test_times_at_the_ends_of_the_calendar() -> None:
    """Values near the limits of datetime do not break refreshes."""
    far = [
        Customer(1, {}, [Event("repair_order.closed", dt.datetime(9999, 12, 31, 23, tzinfo=dt.UTC))]),
        Customer(2, {}, [Event("repair_order.closed", dt.datetime(1, 1, 2, tzinfo=dt.UTC))]),
    ]
    groups = Groups(MemoryRepository(far))
    groups.create("Recent", "repair_order.closed.last_time < 3 years ago")
    groups.create("Soon", "repair_order.closed.at within next 2 months")
    assert set(groups.members("Recent", NOW)) == {1}
    assert groups.members("Soon", NOW) == {}
    assert groups.refresh(NOW + 400 * DAY) == []


# -- counts in a window over time ---------------------------------------------------------

FREQUENT = "appointment.count(last 90 days) >= 3"


def _regular(visits: list[int], *, customer_id: Any = "r") -> Customer:
    return Customer(customer_id, {}, [Event("appointment", NOW + days * DAY) for days in visits])


def test_a_customer_leaves_a_windowed_count_the_right_day(make_repo: Any) -> None:
    """3+ appointments in the last 90 days: the customer leaves when the oldest one turns 90 days old, with no data
    change, and not a moment before."""
    groups = Groups(make_repo([_regular([-80, -60, -10]), _regular([-5], customer_id="s")]))
    groups.create("Frequent", FREQUENT)
    assert set(groups.members("Frequent", NOW)) == {"r"}
    groups.refresh(NOW)
    assert groups.refresh(NOW + 9 * DAY) == []
    assert groups.refresh(NOW + 10 * DAY) == []  # exactly 90 days: still inside (the window includes its ends)
    left = groups.refresh(NOW + 10 * DAY + dt.timedelta(microseconds=1))
    assert [(c.customer_id, c.kind) for c in left] == [("r", "left")]
    assert groups.count("Frequent", NOW + 11 * DAY) == 0


def test_a_windowed_count_is_revisited_only_when_an_event_crosses_an_edge() -> None:
    """Customers are re-read when an event enters or leaves the window, not at every refresh."""
    customers = [_regular([-80, -60, -10], customer_id=1), _regular([-200], customer_id=2)]
    repo = _CountingRepository(customers)
    groups = Groups(repo)
    groups.create("Frequent", FREQUENT)
    groups.refresh(NOW)
    repo.gets = 0
    assert groups.refresh(NOW + 5 * DAY) == []
    assert repo.gets == 0  # nobody is due: the next edge is 10 days away
    changes = groups.refresh(NOW + 11 * DAY)
    assert [(c.customer_id, c.kind) for c in changes] == [(1, "left")]
    assert repo.gets == 1


def test_a_future_appointment_joins_next_30_days_when_it_comes_near() -> None:
    """A booked appointment enters "appointment.count(next 30 days) > 0" 30 days before it, and leaves once past."""
    groups = Groups(MemoryRepository([_regular([45])]))
    groups.create("Soon", "appointment.count(next 30 days) > 0")
    assert groups.refresh(NOW) == []
    assert groups.refresh(NOW + 15 * DAY - dt.timedelta(microseconds=1)) == []
    assert [c.kind for c in groups.refresh(NOW + 15 * DAY)] == ["joined"]
    assert groups.refresh(NOW + 45 * DAY) == []
    assert [c.kind for c in groups.refresh(NOW + 45 * DAY + dt.timedelta(microseconds=1))] == ["left"]


WINDOW_RULES = [
    "repair_order.closed.count(last 30 days) >= 2",
    "repair_order.closed.count(last 1 month) = 1",
    "repair_order.closed.count(next 2 weeks) > 0",
    "repair_order.closed.count(last 36 hours) = 0",
    "repair_order.closed.count(since 10 days ago) between 1 and 2",
    "repair_order.closed.count(since today) = 0 AND customer.renewal is known",
    "repair_order.closed.count(between yesterday and in 3 days) != 1",
    "repair_order.closed.count(between 2026-03-01 and now) >= 2",
    "repair_order.closed.count(since 2026-03-05) >= 1",
    "NOT repair_order.closed.count(last 2 months) in [1, 3] OR customer.renewal within next 1 month",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=st.sampled_from(WINDOW_RULES),
    zone=st.sampled_from(["UTC", "America/Montreal"]),
    offsets=st.lists(st.integers(-90 * 24, 90 * 24), min_size=1, max_size=6),
    renewals=st.lists(st.one_of(st.none(), st.integers(-60 * 24, 60 * 24)), min_size=6, max_size=6),
    steps=st.lists(st.integers(0, 40 * 24), min_size=1, max_size=6),
)
def test_windowed_count_membership_equals_fresh_evaluation(
    rule: str, zone: str, offsets: list[int], renewals: list[int | None], steps: list[int]
) -> None:
    """With counts in windows, catching up at later nows gives the members a fresh evaluation gives."""
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime(2026, 3, 1, 12, tzinfo=tz)
    customers = []
    for i, renewal in enumerate(renewals):
        events = [Event("repair_order.closed", start + dt.timedelta(hours=h)) for h in offsets[: i % 4 + 1]]
        attributes = {} if renewal is None else {"renewal": start + dt.timedelta(hours=renewal)}
        customers.append(Customer(i, attributes, events))
    _assert_catching_up_agrees(rule, customers, tz, start, steps, refresh=True)


def test_groups_command_notes_attributes_the_schema_lacks(tmp_path: Any) -> None:
    """A misspelt attribute is allowed (custom attributes are) but named on stderr with the nearest one."""
    import subprocess
    import sys

    from cohorts.sql import SQLRepository

    path = str(tmp_path / "g.db")
    SQLRepository(path).upsert(_garage())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cohorts",
            "groups",
            "create",
            "Typo",
            'customer.cty = "Laval" OR customer.city = "X"',
            "--db",
            path,
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "created group 'Typo': 0 member(s)" in done.stdout
    assert done.stderr.splitlines() == [
        "note: customer.cty is not in the schema (did you mean customer.city?); it is read as a custom attribute, "
        "unknown for customers without it"
    ]


def test_why_at_an_earlier_now_says_the_rules_match_an_excluded_customer() -> None:
    """Read before the stored state, an excluded customer the rules match is shown as matching, and kept out."""
    groups = Groups(MemoryRepository(_garage()))
    groups.create("Laval", 'customer.city = "Laval"')
    groups.refresh(NOW + 10 * DAY)
    groups.exclude("Laval", "a", now=NOW + 10 * DAY)
    why = groups.why("Laval", "a", NOW)
    assert why.excluded and not why.member and why.matched_version == 1
    assert "matched rule version 1" in str(why) and "excluded by hand" in str(why)


def test_month_windows_that_step_back_at_month_ends() -> None:
    """``last 1 month`` steps back when it starts clamping (Mar 29 - 1 month = Feb 28): events re-enter."""
    tz = zoneinfo.ZoneInfo("UTC")
    start = dt.datetime(2026, 3, 1, 12, tzinfo=tz)
    customers = [
        Customer(i, {}, [Event("repair_order.closed", start - dt.timedelta(hours=5 * (i + 1)))]) for i in range(6)
    ]
    rule = "repair_order.closed.count(last 1 month) = 1"
    for refresh in (False, True):
        _assert_catching_up_agrees(rule, customers, tz, start, [657, 3, 21, 3, 21, 3, 21, 3, 30], refresh)
        _assert_catching_up_agrees(rule, customers, tz, start, [660, 21, 3, 2, 2, 19, 3], refresh)
