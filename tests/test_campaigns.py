"""Campaigns: eligibility, audience, caps and quiet hours, and the exactly-once cron job."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts.campaigns import (
    Action,
    Campaign,
    CampaignError,
    FrequencyCap,
    Hours,
    Message,
    Policy,
    RunReport,
    Suppressed,
    audience,
    current_run,
    eligibility,
    gate,
    idempotency_key,
    run_campaigns,
    standard_handlers,
)
from cohorts.config import ConfigError, load_config, parse_config
from cohorts.ledger import ledger_for
from cohorts.model import Customer, CustomerId
from cohorts.repository import MemoryRepository

UTC = dt.UTC
NOON = dt.datetime(2026, 3, 2, 12, tzinfo=UTC)

try:
    from cohorts.sql import SQLRepository
except ImportError:  # pragma: no cover - the SQL repository is an optional extra
    SQLRepository = None


# -- fakes -----------------------------------------------------------------------


class FakeGroups:
    """Group memberships held in a dict: name -> {customer id: origins}."""

    def __init__(self, groups: Mapping[str, Mapping[CustomerId, frozenset[str]]] | None = None) -> None:
        self.groups = {name: dict(members) for name, members in (groups or {}).items()}

    def members(self, name: str, now: dt.datetime | None = None) -> Mapping[CustomerId, frozenset[str]]:
        return dict(self.groups[name])


class Outbox:
    """A recording Sender: keeps every message, delivers each idempotency key once."""

    def __init__(self) -> None:
        self.calls: list[Message] = []
        self.delivered: dict[str, Message] = {}

    def send(self, message: Message) -> None:
        self.calls.append(message)
        self.delivered.setdefault(message.idempotency_key, message)


class Crash(BaseException):
    """A simulated process death (not an Exception, so nothing handles it)."""


def recorder(log: list[tuple[str, CustomerId, str]]) -> Callable[[Customer, Action, Campaign], None]:
    def handler(customer: Customer, action: Action, campaign: Campaign) -> None:
        log.append((campaign.name, customer.id, campaign.key_of(action)))

    return handler


def people(n: int, **attributes: Any) -> list[Customer]:
    return [Customer(i, {"status": "active", "email": f"c{i}@example.com", "phone": "+15145550100", **attributes})
            for i in range(n)]


@contextlib.contextmanager
def sqlite_file_repository(customers: list[Customer]) -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as folder:
        repo = SQLRepository(f"sqlite:///{folder}/c.db")
        repo.upsert(customers)
        try:
            yield repo
        finally:
            repo.engine.dispose()


# -- campaigns and eligibility ------------------------------------------------------


def test_campaign_rejects_bad_fields() -> None:
    """Unknown status or send_to, a blank name, duplicate action ids and a blank kind are ValueErrors."""
    with pytest.raises(ValueError, match="status must be one of active, inactive, all"):
        Campaign("x", status="sleeping")
    with pytest.raises(ValueError, match="send_to"):
        Campaign("x", send_to="some")
    with pytest.raises(ValueError, match="name"):
        Campaign("  ")
    with pytest.raises(ValueError, match="same id"):
        Campaign("x", actions=[Action("email", id="a"), Action("sms", id="a")])
    with pytest.raises(ValueError, match="kind"):
        Action("")


def test_lead_campaigns_are_refused_by_customer_targeting() -> None:
    """A leads audience is a clear ValueError; other audiences too."""
    with pytest.raises(ValueError, match="customer targeting runs customer campaigns only"):
        Campaign("Leads", audience="leads")
    with pytest.raises(CampaignError, match="must be 'customers'"):
        Campaign("Partners", audience="partners")
    assert Campaign("Clients", audience="Customers").audience == "customers"


def test_action_keys_number_each_kind() -> None:
    """Actions without an id are keyed <kind>-<n>, so adding a step of another kind renames nothing."""
    c = Campaign("x", actions=[Action("email"), Action("sms"), Action("email"), Action("points", id="bonus")])
    assert c.action_keys() == ("email-1", "sms-1", "email-2", "bonus")
    assert c.key_of(c.actions[2]) == "email-2"


def test_eligibility_reasons() -> None:
    """Every failed condition is a reason: unpublished, not started, ended."""
    backwards = Campaign("x", published=False, start=dt.date(2026, 4, 1), end=dt.date(2026, 3, 1))
    assert eligibility(backwards, NOON).reasons == ("not published", "starts on 2026-04-01", "ended on 2026-03-01")
    draft = Campaign("x", published=False, start=dt.datetime(2026, 3, 3, tzinfo=UTC))
    result = eligibility(draft, NOON)
    assert not result.ok
    assert result.reasons == ("not published", "starts at 2026-03-03T00:00:00+00:00")


def test_eligibility_boundaries() -> None:
    """start <= now is eligible, end == now is not; dates compare with today's date."""
    assert eligibility(Campaign("x", start=NOON), NOON).ok
    assert not eligibility(Campaign("x", end=NOON), NOON).ok
    assert eligibility(Campaign("x", start=dt.date(2026, 3, 2), end=dt.date(2026, 3, 3)), NOON).ok
    assert eligibility(Campaign("x", end=dt.date(2026, 3, 2)), NOON).reasons == ("ended on 2026-03-02",)
    assert eligibility(Campaign("x", start="2026-03-03"), NOON).reasons == ("starts on 2026-03-03",)


# -- audience ---------------------------------------------------------------------------


def test_audience_all_customers_and_status() -> None:
    """No group targets every customer; the status filter keeps active or inactive ones, unknown status only in all."""
    repo = MemoryRepository([
        Customer(1, {"status": "Active"}), Customer(2, {"status": "inactive"}), Customer(3, {}),
    ])
    assert set(audience(Campaign("x"), repo, None, NOON)) == {1, 2, 3}
    assert set(audience(Campaign("x", status="active"), repo, None, NOON)) == {1}
    assert set(audience(Campaign("x", status="inactive"), repo, None, NOON)) == {2}


def test_audience_group_every_origin_with_status() -> None:
    """A group targets its members of every origin, combined with the status filter, and says why."""
    repo = MemoryRepository([Customer(i, {"status": "active" if i != 3 else "inactive"}) for i in range(1, 6)])
    vip = {1: frozenset({"manual"}), 2: frozenset({"rules", "imported"}), 3: frozenset({"rules"})}
    groups = FakeGroups({"VIP": vip})
    result = audience(Campaign("x", group="VIP", status="active"), repo, groups, NOON)
    assert set(result) == {1, 2}
    assert result.why(2).reasons == ("in group 'VIP' (imported, rules)", "status is active")
    assert set(audience(Campaign("x", group="VIP"), repo, groups, NOON)) == {1, 2, 3}


def test_unsubscribed_customers_are_suppressed_not_dropped() -> None:
    """An unsubscribed customer stays in the audience, listed as suppressed with the reason."""
    repo = MemoryRepository(people(3))
    repo.unsubscribe(1)
    result = audience(Campaign("x"), repo, None, NOON)
    assert set(result) == {0, 1, 2}
    assert set(result.suppressed) == {1}
    assert "unsubscribed" in result.suppressed[1]
    assert result.reachable == {0, 2}
    assert result.why(1).suppressed is not None


def test_group_change_affects_the_next_run() -> None:
    """A customer added to the group after a run is reached by the next run, and only once."""
    repo = MemoryRepository(people(4))
    groups = FakeGroups({"VIP": {0: frozenset({"manual"})}})
    log: list[tuple[str, CustomerId, str]] = []
    c = Campaign("x", group="VIP", actions=[Action("track")])
    assert run_campaigns([c], repo, groups, {"track": recorder(log)}, NOON)["x"].added == 1
    groups.groups["VIP"][2] = frozenset({"rules"})
    report = run_campaigns([c], repo, groups, {"track": recorder(log)}, NOON + dt.timedelta(hours=1))
    assert (report["x"].audience, report["x"].added, report["x"].done) == (2, 1, 1)
    assert [entry[1] for entry in log] == [0, 2]


# -- gates: caps and quiet hours ----------------------------------------------------------


def test_quiet_hours_follow_the_customer_time_zone() -> None:
    """An SMS at 23:30 UTC is fine in Toronto (18:30), deferred in UTC and in a zone with a bad name."""
    late = dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    sms = Action("sms")
    assert gate(sms, Customer(1, {"timezone": "America/Toronto"}), Policy(), late) is None
    held = gate(sms, Customer(1), Policy(), late)
    assert held is not None and held.outcome == "deferred"
    assert held.until == dt.datetime(2026, 3, 3, 8, tzinfo=UTC)
    bad_zone = gate(sms, Customer(1, {"timezone": "Mars/Olympus"}), Policy(), late)
    assert bad_zone is not None and bad_zone.outcome == "deferred"
    custom = Policy(default_timezone="Asia/Tokyo")  # 08:30 in Tokyo
    assert gate(sms, Customer(1), custom, late) is None


def test_hours_window_wrapping_midnight() -> None:
    """A window such as 20:00-02:00 allows the night and refuses the day."""
    night = Hours("20:00", "02:00")
    assert night.allows(dt.time(23)) and night.allows(dt.time(1, 59))
    assert not night.allows(dt.time(2)) and not night.allows(dt.time(12))


def test_transactional_actions_are_never_gated() -> None:
    """points, stage and track pass for unsubscribed customers at night and over any cap."""
    night = dt.datetime(2026, 3, 2, 3, tzinfo=UTC)
    policy = Policy(caps={"email": FrequencyCap(0, dt.timedelta(days=1))}, hours={"email": Hours("09:00", "17:00")})
    for kind in ("points", "stage", "track"):
        assert gate(Action(kind), Customer(1, {"subscribed": False}), policy, night, lambda ch, since: 99) is None
    held = gate(Action("email"), Customer(1, {"timezone": "Asia/Tokyo"}), policy, night, lambda ch, since: 0)
    assert held is not None and held.reason.startswith("frequency cap: 0 email in the last 1 day")
    with pytest.raises(ValueError, match="transactional actions are never capped"):
        Policy(caps={"points": FrequencyCap(1, dt.timedelta(days=1))})


def test_frequency_cap_counts_across_campaigns(repository: Any) -> None:
    """With 1 email per 7 days, a second campaign's email is suppressed, then sent once the period has passed."""
    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(2))
    outbox = Outbox()
    handlers = standard_handlers(repo, outbox)
    policy = Policy(caps={"email": FrequencyCap(1, dt.timedelta(days=7))})
    first = Campaign("first", actions=[Action("email")])
    second = Campaign("second", actions=[Action("email")])
    report = run_campaigns([first, second], repo, None, handlers, NOON, policy=policy)
    assert (report["first"].done, report["second"].done, report["second"].suppressed) == (2, 0, 2)
    assert report["second"].suppressed_reasons == {"frequency cap": 2}
    later = run_campaigns([first, second], repo, None, handlers, NOON + dt.timedelta(days=3), policy=policy)
    assert later["second"].suppressed == 2
    last = run_campaigns([first, second], repo, None, handlers, NOON + dt.timedelta(days=7), policy=policy)
    assert last["second"].done == 2
    assert Counter(m.campaign for m in outbox.calls) == {"first": 2, "second": 2}


def test_sms_deferred_then_sent_on_a_later_run() -> None:
    """An SMS outside 08:00-21:00 is deferred, then sent by the first run inside the window; points run at once."""
    repo = MemoryRepository(people(3, timezone="Europe/Paris"))
    outbox = Outbox()
    c = Campaign("x", actions=[Action("sms", {"body": "Hi"}), Action("points", {"points": 10})])
    night = dt.datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    report = run_campaigns([c], repo, None, standard_handlers(repo, outbox), night)
    assert (report["x"].deferred, report["x"].done) == (3, 3)
    assert outbox.calls == []
    morning = dt.datetime(2026, 3, 3, 7, 30, tzinfo=UTC)  # 08:30 in Paris
    report = run_campaigns([c], repo, None, standard_handlers(repo, outbox), morning)
    assert (report["x"].deferred, report["x"].done) == (0, 3)
    assert len(outbox.calls) == 3
    assert repo.get(0).attributes["points"] == 10


def test_unsubscribed_get_transactional_actions_only() -> None:
    """An unsubscribed customer gets points but no email, with the suppression reason in the ledger."""
    repo = MemoryRepository(people(2))
    repo.unsubscribe(1)
    outbox = Outbox()
    c = Campaign("x", actions=[Action("email"), Action("points", {"points": 5})])
    report = run_campaigns([c], repo, None, standard_handlers(repo, outbox), NOON)
    assert [m.customer_id for m in outbox.calls] == [0]
    assert repo.get(1).attributes["points"] == 5
    assert report["x"].suppressed == 1
    rows = {(e.customer_id, e.action): e for e in ledger_for(repo).entries("x")}
    assert rows[1, "email-1"].state == "suppressed" and "unsubscribed" in (rows[1, "email-1"].reason or "")


# -- the cron job -----------------------------------------------------------------------------


def test_rerun_runs_nothing_twice(repository: Any) -> None:
    """A second run with nothing new adds nobody and runs no action."""
    log: list[tuple[str, CustomerId, str]] = []
    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(5))
    c = Campaign("x", actions=[Action("track"), Action("stage", {"stage": "won"})])
    handlers = {"track": recorder(log), "stage": recorder(log)}
    first = run_campaigns([c], repo, None, handlers, NOON)
    assert (first["x"].audience, first["x"].added, first["x"].done) == (5, 5, 10)
    again = run_campaigns([c], repo, None, handlers, NOON + dt.timedelta(hours=1))
    assert (again["x"].added, again["x"].done, again["x"].failed) == (0, 0, 0)
    assert Counter(log) == dict.fromkeys(log, 1) and len(log) == 10


def test_failed_action_retried_up_to_the_limit(repository: Any) -> None:
    """A failing action is recorded with its error and retried on the next 3 runs, then left alone."""
    calls: list[CustomerId] = []

    def flaky(customer: Customer, action: Action, campaign: Campaign) -> None:
        calls.append(customer.id)
        raise RuntimeError("provider down")

    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(1))
    c = Campaign("x", actions=[Action("track")])
    reports = [run_campaigns([c], repo, None, {"track": flaky}, NOON + dt.timedelta(hours=h)) for h in range(6)]
    assert [r.failed for r in reports] == [1, 1, 1, 1, 0, 0]
    assert reports[3]["x"].failures[0].final and not reports[2]["x"].failures[0].final
    assert len(calls) == 4
    (entry,) = ledger_for(repo).entries("x")
    assert (entry.state, entry.attempts, entry.error) == ("failed", 4, "RuntimeError: provider down")


def test_failure_then_success(repository: Any) -> None:
    """An action that fails once succeeds on the next run, and its retry keeps the idempotency key."""
    keys: list[tuple[str, int]] = []

    def once_broken(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = current_run()
        assert ctx is not None
        keys.append((ctx.idempotency_key, ctx.attempt))
        if ctx.attempt == 1:
            raise ConnectionError("timeout")

    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(1))
    c = Campaign("x", actions=[Action("email")])
    assert not run_campaigns([c], repo, None, {"email": once_broken}, NOON).ok
    assert run_campaigns([c], repo, None, {"email": once_broken}, NOON + dt.timedelta(hours=1)).ok
    assert keys == [(idempotency_key("x", 0, "email-1"), 1), (idempotency_key("x", 0, "email-1"), 2)]


def test_policy_retries_is_configurable() -> None:
    """Policy(retries=0) tries a failing action once."""
    calls: list[CustomerId] = []

    def broken(customer: Customer, action: Action, campaign: Campaign) -> None:
        calls.append(customer.id)
        raise ValueError("bad template")

    repo = MemoryRepository(people(1))
    for h in range(3):
        run_campaigns([Campaign("x", actions=[Action("track")])], repo, None, {"track": broken},
                      NOON + dt.timedelta(hours=h), policy=Policy(retries=0))
    assert calls == [0]


def test_ineligible_campaign_runs_nothing_and_says_why() -> None:
    """An unpublished campaign reports its reasons and enrolls nobody."""
    repo = MemoryRepository(people(2))
    log: list[tuple[str, CustomerId, str]] = []
    report = run_campaigns([Campaign("x", published=False, actions=[Action("track")])], repo, None,
                           {"track": recorder(log)}, NOON)
    assert not report["x"].eligible and report["x"].reasons == ("not published",)
    assert log == [] and ledger_for(repo).entries() == []


def test_missing_handler_is_an_error_before_anything_runs() -> None:
    """A campaign with an action kind no handler covers is refused up front."""
    repo = MemoryRepository(people(1))
    with pytest.raises(CampaignError, match="no handler"):
        run_campaigns([Campaign("x", actions=[Action("fax")])], repo, None, {"email": recorder([])}, NOON)
    assert ledger_for(repo).entries() == []


def test_new_action_reaches_customers_already_enrolled() -> None:
    """Adding an action to a running campaign runs it once for every enrolled customer."""
    repo = MemoryRepository(people(3))
    log: list[tuple[str, CustomerId, str]] = []
    handlers = {"track": recorder(log), "stage": recorder(log)}
    run_campaigns([Campaign("x", actions=[Action("track")])], repo, None, handlers, NOON)
    grown = Campaign("x", actions=[Action("track"), Action("stage", {"stage": "vip"})])
    report = run_campaigns([grown], repo, None, handlers, NOON)
    assert report["x"].done == 3
    assert sorted(log) == sorted([("x", i, "track-1") for i in range(3)] + [("x", i, "stage-1") for i in range(3)])


def test_deleted_customer_is_skipped_with_a_reason() -> None:
    """A customer deleted between enrollment and a deferred send is recorded as skipped, not failed."""
    repo = MemoryRepository(people(2))
    night = dt.datetime(2026, 3, 2, 23, tzinfo=UTC)
    c = Campaign("x", actions=[Action("sms")])
    outbox = Outbox()
    run_campaigns([c], repo, None, standard_handlers(repo, outbox), night)
    repo.delete(1)
    report = run_campaigns([c], repo, None, standard_handlers(repo, outbox), NOON + dt.timedelta(days=1))
    assert (report["x"].done, report["x"].failed, report["x"].suppressed) == (1, 0, 1)
    states = {e.customer_id: e.state for e in ledger_for(repo).entries("x")}
    assert states == {0: "done", 1: "skipped"}


def test_standard_handlers_record_in_the_repository() -> None:
    """points add up, stage is set, track adds an engagement event; messages carry the idempotency key."""
    repo = MemoryRepository(people(1))
    outbox = Outbox()
    c = Campaign("x", actions=[
        Action("points", {"points": 5}), Action("points", {"points": 2.5}), Action("stage", {"stage": "Loyal"}),
        Action("track", {"event": "campaign.opened", "channel": "email"}),
        Action("email", {"subject": "Hello", "body": "Spring service"}),
    ])
    assert run_campaigns([c], repo, None, standard_handlers(repo, outbox), NOON).ok
    customer = repo.get(0)
    assert customer is not None
    assert customer.attributes["points"] == 7.5 and customer.attributes["stage"] == "Loyal"
    assert [e.attributes for e in customer.events_named("campaign.opened")] == [{"campaign": "x", "channel": "email"}]
    (message,) = outbox.calls
    assert (message.to, message.subject, message.idempotency_key) == ("c0@example.com", "Hello", "cohorts:x:0:email-1")


def test_sender_without_address_suppresses() -> None:
    """A customer with no email is suppressed with the reason, not failed."""
    repo = MemoryRepository([Customer(1, {})])
    report = run_campaigns([Campaign("x", actions=[Action("email")])], repo, None,
                           standard_handlers(repo, Outbox()), NOON)
    assert (report["x"].failed, report["x"].suppressed) == (0, 1)
    assert report["x"].suppressed_reasons == {"no address": 1}


def test_handler_may_suppress() -> None:
    """A handler raising Suppressed marks the action suppressed with its reason."""
    def picky(customer: Customer, action: Action, campaign: Campaign) -> None:
        raise Suppressed("do not contact: asked by phone")

    repo = MemoryRepository(people(1))
    report = run_campaigns([Campaign("x", actions=[Action("track")])], repo, None, {"track": picky}, NOON)
    assert report["x"].suppressed_reasons == {"do not contact": 1}


def test_report_prints_and_serialises() -> None:
    """RunReport prints a table with failures and round-trips through JSON."""
    def broken(customer: Customer, action: Action, campaign: Campaign) -> None:
        raise RuntimeError("boom")

    repo = MemoryRepository(people(2))
    report = run_campaigns([Campaign("ok", actions=[Action("track")]), Campaign("draft", published=False)], repo,
                           None, {"track": broken}, NOON)
    text = str(report)
    assert text.splitlines()[0].split() == [
        "campaign", "eligible", "audience", "added", "done", "failed", "suppressed", "deferred", "seconds"]
    assert "no: not published" in text and "! ok: track-1 failed for 0 (attempt 1): RuntimeError: boom" in text
    data = json.loads(report.to_json())
    assert data["failed"] == 2 and data["campaigns"][0]["audience"] == 2
    assert data["campaigns"][1]["reasons"] == ["not published"]
    assert isinstance(report, RunReport) and not report.ok


# -- crashes and concurrency --------------------------------------------------------------------------


def test_crash_between_two_sends(repository: Any) -> None:
    """A process dying before its third send: the next run sends the rest, nobody twice."""
    outbox = Outbox()
    state = {"left": 2}

    class Dying:
        def send(self, message: Message) -> None:
            if state["left"] == 0:
                raise Crash
            state["left"] -= 1
            outbox.send(message)

    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(5))
    c = Campaign("x", actions=[Action("email")])
    with pytest.raises(Crash):
        run_campaigns([c], repo, None, standard_handlers(repo, Dying()), NOON)
    assert len(outbox.calls) == 2
    report = run_campaigns([c], repo, None, standard_handlers(repo, outbox), NOON + dt.timedelta(minutes=5))
    assert report["x"].done == 3
    assert sorted(m.customer_id for m in outbox.calls) == [0, 1, 2, 3, 4]


def test_crash_after_the_provider_accepted(repository: Any) -> None:
    """A death after the provider accepted a message: the retry reuses the key, so the provider delivers it once."""
    outbox = Outbox()
    state = {"crashed": False}

    class AcceptThenDie:
        def send(self, message: Message) -> None:
            outbox.send(message)
            if message.customer_id == 1 and not state["crashed"]:
                state["crashed"] = True
                raise Crash

    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(3))
    c = Campaign("x", actions=[Action("email")])
    with pytest.raises(Crash):
        run_campaigns([c], repo, None, standard_handlers(repo, AcceptThenDie()), NOON)
    run_campaigns([c], repo, None, standard_handlers(repo, AcceptThenDie()), NOON)
    assert [m.customer_id for m in outbox.calls] == [0, 1, 1, 2]
    assert len(outbox.delivered) == 3


def test_threads_share_a_memory_repository() -> None:
    """Four threads running the job at once on one memory repository run each action once."""
    repo = MemoryRepository(people(300))
    log: list[tuple[str, CustomerId, str]] = []
    lock = threading.Lock()

    def slow(customer: Customer, action: Action, campaign: Campaign) -> None:
        with lock:
            log.append((campaign.name, customer.id, campaign.key_of(action)))

    c = Campaign("x", actions=[Action("track"), Action("stage")])
    reports: list[RunReport] = []
    threads = [threading.Thread(target=lambda: reports.append(
        run_campaigns([c], repo, None, {"track": slow, "stage": slow}, NOON))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 600 and len(set(log)) == 600
    assert sum(r["x"].done for r in reports) == 600


# -- the property: random schedules, group changes and crashes ------------------------------------------

step = st.fixed_dictionaries({
    "hours": st.integers(0, 30),
    "join": st.lists(st.integers(0, 11), max_size=4),
    "leave": st.lists(st.integers(0, 11), max_size=4),
    "unsubscribe": st.lists(st.integers(0, 11), max_size=1),
    "crash_after": st.none() | st.integers(0, 8),
    "accepted": st.booleans(),
    "published": st.booleans(),
})
# The campaign's window, in hours after the first run: some runs fall before or after it.
window = st.tuples(st.integers(-10, 40), st.integers(1, 80))


def check_schedule(repo: Any, steps: list[dict[str, Any]], kinds: tuple[str, ...], span: tuple[int, int]) -> None:
    groups = FakeGroups({"G": {i: frozenset({"manual"}) for i in range(0, 12, 3)}})
    outbox = Outbox()
    executed: list[tuple[CustomerId, str]] = []
    in_flight: list[tuple[CustomerId, str]] = []
    moment = dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
    start = moment + dt.timedelta(hours=span[0])
    scheduled = Campaign("p", group="G", start=start, end=start + dt.timedelta(hours=span[1]),
                         actions=[Action(kind) for kind in kinds])
    enrolled: set[CustomerId] = set()
    # The last run finds the campaign published with no end, so whatever is owed is done by then.
    last = {"hours": 24, "join": [], "leave": [], "unsubscribe": [], "crash_after": None, "accepted": False,
            "published": True}
    for index, s in enumerate([*steps, last]):
        moment += dt.timedelta(hours=s["hours"])
        campaign = attrs.evolve(scheduled, published=s["published"], end=None if index == len(steps) else scheduled.end)
        for cid in s["join"]:
            groups.groups["G"][cid] = frozenset({"rules"})
        for cid in s["leave"]:
            groups.groups["G"].pop(cid, None)
        for cid in s["unsubscribe"]:
            repo.unsubscribe(cid)
        budget = {"left": s["crash_after"]}

        def spend(
            accepted: bool,
            send: Callable[[], None],
            key: tuple[CustomerId, str],
            budget: dict[str, int | None] = budget,
        ) -> None:
            left = budget["left"]
            if left is not None and left == 0:
                if accepted:
                    send()
                    in_flight.append(key)
                raise Crash
            send()
            if left is not None:
                budget["left"] = left - 1

        def handler(customer: Customer, action: Action, c: Campaign, s: dict[str, Any] = s) -> None:
            ctx = current_run()
            assert ctx is not None
            assert action.kind not in ("email", "sms") or customer.attributes.get("subscribed") is not False
            message = Message(action.kind, "x", customer.id, c.name, "", "", ctx.idempotency_key)
            key = (customer.id, ctx.action_key)
            spend(s["accepted"], lambda: (executed.append(key), outbox.send(message)), key)

        if eligibility(campaign, moment).ok:
            enrolled |= set(groups.groups["G"])
        with contextlib.suppress(Crash):
            run_campaigns([campaign], repo, groups, dict.fromkeys(kinds, handler), moment)
    keys = scheduled.action_keys()
    delivered = Counter((m.customer_id, m.idempotency_key.rsplit(":", 1)[1]) for m in outbox.delivered.values())
    marketing = {k for k, kind in zip(keys, kinds, strict=True) if kind in ("email", "sms")}
    unsubscribed = {c.id for c in repo if c.attributes.get("subscribed") is False}
    everything = {(cid, k) for cid in enrolled for k in keys}
    required = {(cid, k) for cid, k in everything if not (k in marketing and cid in unsubscribed)}
    assert required <= set(delivered) <= everything  # nobody missed, nobody outside the audience
    # An action runs again only after a process died with it in flight (the provider had accepted it):
    # at most once more per such death (not at all if the customer unsubscribed meanwhile), and the
    # provider, deduplicating on the idempotency key, delivers it once.
    deaths = Counter(in_flight)
    assert all(n <= 1 + deaths[key] for key, n in Counter(executed).items())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=6), kinds=st.sampled_from([("track",), ("email", "points")]),
       span=window)
def test_property_exactly_once_in_memory(
    steps: list[dict[str, Any]], kinds: tuple[str, ...], span: tuple[int, int]
) -> None:
    """Random schedules, group changes and crash points: every member executed once, never missed (memory)."""
    check_schedule(MemoryRepository(people(12)), steps, kinds, span)


@pytest.mark.skipif(SQLRepository is None, reason="no cohorts.sql")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=5), kinds=st.sampled_from([("track",), ("email", "points")]),
       span=window)
def test_property_exactly_once_in_sqlite(
    steps: list[dict[str, Any]], kinds: tuple[str, ...], span: tuple[int, int]
) -> None:
    """The same property on SQLite, where a crash rolls the claim's transaction back."""
    with sqlite_file_repository(people(12)) as repo:
        check_schedule(repo, steps, kinds, span)


# -- configuration ---------------------------------------------------------------------------------------

CONFIG = """
[policy]
retries = 2
caps.email = { limit = 2, period = "7 days" }
hours.sms = { start = "09:00", end = "20:00" }

[[groups]]
name = "VIP"
rule = 'customer.tags contains "vip"'

[[campaigns]]
name = "Spring"
group = "VIP"
status = "active"
start = 2026-03-01
end = 2026-06-01

[[campaigns.actions]]
kind = "email"
subject = "Spring service"

[[campaigns.actions]]
kind = "points"
id = "bonus"
points = 50
"""


def test_config_reads_campaigns_groups_and_policy(tmp_path: Any) -> None:
    """A TOML file declares campaigns, groups with rule strings, caps and hours."""
    path = tmp_path / "campaigns.toml"
    path.write_text(CONFIG, encoding="utf-8")
    config = load_config(path)
    spring = config.campaign("spring")
    assert (spring.group, spring.status, spring.start, spring.end) == ("VIP", "active", dt.date(2026, 3, 1),
                                                                       dt.date(2026, 6, 1))
    expected = (Action("email", {"subject": "Spring service"}), Action("points", {"points": 50}, id="bonus"))
    assert spring.actions == expected
    assert config.policy.caps["email"] == FrequencyCap(2, dt.timedelta(days=7))
    assert str(config.policy.hours["sms"]) == "09:00-20:00" and config.policy.retries == 2
    assert config.groups[0].rule == 'customer.tags contains "vip"'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[campaigns]]\nname = "a"\nstatus = "asleep"', "campaigns[0]: campaign status must be one of"),
        ('[[campaigns]]\nname = "a"\nstats = "active"', "campaigns[0].stats: unknown key; did you mean 'status'?"),
        ('[[groups]]\nname = "g"\nrule = "customer.city = "', "groups[0].rule:"),
        ('[policy]\ncaps.email = { limit = 2, period = "a fortnight" }', "policy.caps.email.period: expected a period"),
        ('[[campaigns]]\nname = "a"\n[[campaigns]]\nname = "A"', "campaigns[1].name: 'A' is already the name"),
        ("[[campaigns]\n", "not valid TOML"),
        ('[[campaigns]]\nname = "a"\naudience = "leads"', "campaigns[0]: audience 'leads' is refused"),
    ],
)
def test_config_errors_name_the_place(text: str, message: str) -> None:
    """Every configuration error names the key it is about."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    assert str(info.value).startswith("c.toml: ")
    assert message in str(info.value)


def test_config_unknown_campaign_suggests() -> None:
    """Asking for a campaign that is not declared suggests the nearest name."""
    with pytest.raises(CampaignError, match="did you mean 'Spring'"):
        parse_config(CONFIG).campaign("Sprung")


# -- the command line --------------------------------------------------------------------------------------

CLI_CONFIG = """
[[groups]]
name = "VIP"
rule = 'customer.tags contains "vip"'

[[campaigns]]
name = "Spring"
group = "VIP"
status = "active"

[[campaigns.actions]]
kind = "email"
subject = "Spring service"

[[campaigns.actions]]
kind = "points"
points = 10
"""

SENDER_MODULE = """
import json, os

class FileSender:
    def send(self, message):
        if message.customer_id == int(os.environ.get("COHORTS_TEST_FAIL_FOR", "-1")):
            raise RuntimeError("mailbox full")
        with open(os.environ["COHORTS_TEST_OUTBOX"], "a") as out:
            out.write(json.dumps([message.customer_id, message.idempotency_key]) + "\\n")
"""


@pytest.fixture
def cli_setup(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A SQLite database of 6 customers (odd ids are VIP), a config and an importable sender module."""
    if SQLRepository is None:  # pragma: no cover
        pytest.skip("no cohorts.sql")
    db = str(tmp_path / "c.db")
    repo = SQLRepository(db)
    repo.upsert([Customer(i, {"status": "active", "email": f"c{i}@example.com", "tags": ["vip"] if i % 2 else []})
                 for i in range(6)])
    repo.engine.dispose()
    (tmp_path / "campaigns.toml").write_text(CLI_CONFIG, encoding="utf-8")
    (tmp_path / "fake_sender_mod.py").write_text(SENDER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COHORTS_TEST_OUTBOX", str(tmp_path / "outbox"))
    return {"db": db, "config": str(tmp_path / "campaigns.toml"), "outbox": str(tmp_path / "outbox")}


def test_cli_run_twice_sends_once(cli_setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`campaigns run` from a crontab: the second run sends nothing; JSON output is parseable."""
    from cohorts.cli import main

    argv = ["campaigns", "run", "--db", cli_setup["db"], "--config", cli_setup["config"],
            "--sender", "fake_sender_mod:FileSender", "--now", "2026-03-02T12:00"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "Spring" in first.out and "created group 'VIP'" in first.err
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["campaigns"][0]["added"] == 0 and data["campaigns"][0]["done"] == 0
    with open(cli_setup["outbox"], encoding="utf-8") as sent:
        assert sorted(json.loads(line)[0] for line in sent) == [1, 3, 5]


def test_cli_run_exits_non_zero_when_an_action_failed(
    cli_setup: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed send makes the run exit 1 and is retried (and sent) by the next run."""
    from cohorts.cli import main

    argv = ["campaigns", "run", "--db", cli_setup["db"], "--config", cli_setup["config"],
            "--sender", "fake_sender_mod:FileSender", "--now", "2026-03-02T12:00"]
    monkeypatch.setenv("COHORTS_TEST_FAIL_FOR", "3")
    assert main(argv) == 1
    assert "email-1 failed for 3 (attempt 1): RuntimeError: mailbox full" in capsys.readouterr().out
    monkeypatch.delenv("COHORTS_TEST_FAIL_FOR")
    assert main(argv) == 0
    with open(cli_setup["outbox"], encoding="utf-8") as sent:
        assert sorted(json.loads(line)[0] for line in sent) == [1, 3, 5]


def test_cli_run_table_fits_the_terminal(
    cli_setup: dict[str, str], tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`campaigns run` cuts its long text columns to the terminal's width, as the other tables; a log keeps all."""
    from cohorts.cli import main

    config = tmp_path / "long.toml"
    config.write_text('[[campaigns]]\nname = "Spring service reminder for every customer of the garage"\n'
                      'published = false\nend = 2026-01-01\n', encoding="utf-8")
    argv = ["campaigns", "run", "--db", cli_setup["db"], "--config", str(config), "--now", "2026-03-02T12:00"]
    monkeypatch.delenv("COLUMNS", raising=False)  # standard output is captured: no terminal, no width
    assert main(argv) == 0
    full = capsys.readouterr().out.splitlines()
    assert full[0].split() == ["campaign", "eligible", "audience", "added", "done", "failed", "suppressed",
                               "deferred", "seconds"]
    assert set(full[1]) == {"-", " "} and "no: not published; ended on 2026-01-01" in full[2]
    assert full[2].startswith("Spring service reminder for every customer of the garage  ")
    monkeypatch.setenv("COLUMNS", "100")
    assert main(argv) == 0
    fitted = capsys.readouterr().out.splitlines()
    assert len(fitted) == 3 and max(len(line) for line in fitted) <= 100 < len(full[2])
    assert fitted[2].startswith("Spring service") and fitted[2].count("…") == 2


def test_report_rows_and_problems() -> None:
    """RunReport.rows() are the table's cells, and problems() the lines printed under it."""
    def broken(customer: Customer, action: Action, campaign: Campaign) -> None:
        raise RuntimeError("boom")

    report = run_campaigns([Campaign("ok", actions=[Action("track")]), Campaign("draft", published=False)],
                           MemoryRepository(people(2)), None, {"track": broken}, NOON)
    first, second = report.rows()
    assert (first["campaign"], first["eligible"], first["audience"], first["failed"]) == ("ok", "yes", 2, 2)
    assert second["eligible"] == "no: not published" and re.fullmatch(r"\d+\.\d{3}", second["seconds"])
    assert report.problems() == [
        "! ok: track-1 failed for 0 (attempt 1): RuntimeError: boom",
        "! ok: track-1 failed for 1 (attempt 1): RuntimeError: boom",
    ]
    assert str(report).splitlines()[3:] == report.problems()


def test_cli_needs_a_sender_for_messages(cli_setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Email actions without --sender are a usage error that says what to pass."""
    from cohorts.cli import main

    assert main(["campaigns", "run", "--db", cli_setup["db"], "--config", cli_setup["config"]]) == 2
    assert "pass --sender MODULE:NAME" in capsys.readouterr().err


def test_cli_audience_explains(cli_setup: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`campaigns audience NAME` lists each customer with why, and suppressed ones with the reason."""
    from cohorts.cli import main

    repo = SQLRepository(cli_setup["db"])
    repo.unsubscribe(5)
    repo.engine.dispose()
    argv = ["campaigns", "audience", "spring", "--db", cli_setup["db"], "--config", cli_setup["config"]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 customer(s), 1 suppressed" in out
    assert "  1: in group 'VIP' (rules); status is active" in out
    assert "  5: in group 'VIP' (rules); status is active  [suppressed: unsubscribed" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in data["members"]] == [1, 3, 5] and data["eligible"] is True
    assert main(["campaigns", "audience", "Sprung", "--db", cli_setup["db"], "--config", cli_setup["config"]]) == 1
    assert "did you mean 'Spring'" in capsys.readouterr().err


# -- with the real Groups ---------------------------------------------------------------------------------------


def test_audience_with_groups_of_every_origin(repository: Any) -> None:
    """A group's rule members and manual members are all reached; a removed one is not, on the next run."""
    from cohorts.groups import Groups

    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert([Customer(i, {"status": "active", "tags": ["vip"] if i < 3 else []}) for i in range(6)])
    groups = Groups(repo)
    groups.create("VIP", 'customer.tags contains "vip"')
    groups.add("VIP", 4, now=NOON)
    c = Campaign("x", group="vip", actions=[Action("track")])
    result = audience(c, repo, groups, NOON)
    assert set(result) == {0, 1, 2, 4}
    assert result.why(4).reasons == ("in group 'vip' (manual)",)
    assert result.why(0).reasons == ("in group 'vip' (rules)",)
    log: list[tuple[str, CustomerId, str]] = []
    run_campaigns([c], repo, groups, {"track": recorder(log)}, NOON)
    groups.remove("VIP", 4, now=NOON)
    groups.add("VIP", 5, now=NOON)
    report = run_campaigns([c], repo, groups, {"track": recorder(log)}, NOON + dt.timedelta(hours=1))
    assert (report["x"].audience, report["x"].added) == (4, 1)
    assert sorted(entry[1] for entry in log) == [0, 1, 2, 4, 5]


def test_config_applies_groups_idempotently() -> None:
    """apply_groups creates declared groups, changes edited rules, and does nothing the second time."""
    from cohorts.groups import Groups

    repo = MemoryRepository(people(2))
    groups = Groups(repo)
    config = parse_config(CONFIG)
    assert config.apply_groups(groups) == ["created group 'VIP'"]
    assert config.apply_groups(groups) == []
    edited = parse_config(CONFIG.replace('contains "vip"', 'contains "gold"'))
    assert edited.apply_groups(groups) == ["changed the rule of group 'VIP'"]
    assert groups.definition("VIP").rule == 'customer.tags contains "gold"'


def test_unknown_group_fails_that_campaign_only() -> None:
    """A campaign whose group does not exist is reported as an error; the other campaigns still run."""
    from cohorts.groups import Groups

    repo = MemoryRepository(people(2))
    log: list[tuple[str, CustomerId, str]] = []
    report = run_campaigns([Campaign("lost", group="Gone", actions=[Action("track")]),
                            Campaign("fine", actions=[Action("track")])], repo, Groups(repo), {"track": recorder(log)},
                           NOON)
    assert report["lost"].error is not None and "Gone" in report["lost"].error
    assert report["fine"].done == 2 and not report.ok
    assert "! lost: audience not evaluated: no group named 'Gone'" in str(report)


def test_memory_transaction_rolls_the_ledger_back() -> None:
    """A run inside repository.transaction() that raises leaves neither ledger rows nor points behind."""
    repo = MemoryRepository(people(3))
    c = Campaign("x", actions=[Action("points", {"points": 1})])
    with pytest.raises(RuntimeError), repo.transaction():
        run_campaigns([c], repo, None, standard_handlers(repo), NOON)
        raise RuntimeError("the host's own work failed")
    assert ledger_for(repo).entries() == [] and "points" not in repo.get(0).attributes
    assert run_campaigns([c], repo, None, standard_handlers(repo), NOON)["x"].done == 3
    assert [repo.get(i).attributes["points"] for i in range(3)] == [1, 1, 1]


def test_failed_handler_writes_are_undone_on_sql(repository: Any) -> None:
    """On SQL repositories a handler that raises leaves none of its repository writes; memory keeps them."""
    repo = repository  # conftest: memory, SQLite and PostgreSQL
    repo.upsert(people(1))

    def half_done(customer: Customer, action: Action, campaign: Campaign) -> None:
        repo.upsert([customer.with_attributes(stage="half")])
        raise RuntimeError("second step failed")

    report = run_campaigns([Campaign("x", actions=[Action("stage")])], repo, None, {"stage": half_done}, NOON)
    assert report["x"].failed == 1
    kept = repo.get(0).attributes.get("stage")
    assert kept == ("half" if isinstance(repo, MemoryRepository) else None)
    (entry,) = ledger_for(repo).entries("x")
    assert (entry.state, entry.attempts) == ("failed", 1)
