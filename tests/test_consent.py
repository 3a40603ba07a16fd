"""Consent per channel (issue #18): email and SMS unsubscribes are separate, a bounced address is
suppressed with the reason, transactional actions stay exempt, and quiet hours read the repository's
time zone by default; on memory, SQLite, PostgreSQL and the host's own tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from cohorts import (
    Action,
    Campaign,
    Customer,
    HostRepository,
    JsonField,
    MemoryRepository,
    Message,
    Policy,
    run_campaigns,
    standard_handlers,
)
from cohorts.campaigns import gate

NOON = dt.datetime(2026, 12, 1, 17, tzinfo=dt.UTC)  # 12:00 in Montréal


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send(self, message: Message) -> None:
        self.sent.append((message.channel, message.customer_id))


def _people() -> list[Customer]:
    return [
        Customer(1, {"email": "a@example.com", "mobile_phone": "+15145550101"}),
        Customer(2, {"email": "b@example.com", "mobile_phone": "+15145550102"}),
        Customer(3, {"email": "c@example.com", "mobile_phone": "+15145550103"}),
        Customer(4, {"email": "d@example.com", "mobile_phone": "+15145550104", "email_bounced": True}),
    ]


def test_each_channel_has_its_own_consent(repository: Any) -> None:
    repository.upsert(_people())
    repository.unsubscribe(1, channel="email")
    repository.unsubscribe(2, channel="SMS")
    repository.unsubscribe(3)
    assert repository.get(1).attributes["email_subscribed"] is False
    assert repository.get(2).attributes["sms_subscribed"] is False
    campaign = Campaign("Both", actions=[Action("email"), Action("sms"), Action("points", {"points": 1})])
    outbox = Outbox()
    report = run_campaigns([campaign], repository, None, standard_handlers(repository, outbox), NOON)["Both"]
    assert sorted(outbox.sent) == [("email", 2), ("sms", 1), ("sms", 4)]
    assert report.suppressed_reasons == {"unsubscribed from email": 1, "unsubscribed from sms": 1,
                                         "unsubscribed": 2, "bounced": 1}
    assert all(repository.get(i).attributes["points"] == 1 for i in (1, 2, 3, 4))  # transactional: exempt
    rows = {(e.customer_id, e.action): e.reason for e in repository.ledger().entries("Both")}
    assert rows[1, "email-1"] == "unsubscribed from email: no email (marketing) to this customer"
    assert rows[4, "email-1"] == "bounced: the email address of this customer bounced"


def test_a_bad_channel_is_refused(repository: Any) -> None:
    repository.upsert([Customer(1)])
    with pytest.raises(ValueError, match="a channel is a name such as 'email'"):
        repository.unsubscribe(1, channel="e mail")


def test_quiet_hours_read_the_repository_time_zone() -> None:
    """01:00 UTC is 20:00 in Montréal: an SMS goes out from a Montréal repository, not from a UTC one;
    03:00 UTC (22:00 in Montréal) is quiet for both. The policy's own zone, when it names one, wins."""
    people = [Customer(1, {"mobile_phone": "+15145550101"})]
    evening = dt.datetime(2026, 12, 2, 1, tzinfo=dt.UTC)
    late = dt.datetime(2026, 12, 2, 3, tzinfo=dt.UTC)
    campaign = Campaign("Text", actions=[Action("sms")])
    cases = [("America/Montreal", evening, 1), (None, evening, 0), ("America/Montreal", late, 0)]
    for tz, at, sent in cases:
        repository = MemoryRepository(people, tz=tz)
        outbox = Outbox()
        report = run_campaigns([campaign], repository, None, standard_handlers(repository, outbox), at)["Text"]
        assert (len(outbox.sent), report.deferred) == (sent, 1 - sent), (tz, at)
    montreal = MemoryRepository(people, tz="America/Montreal")
    outbox = Outbox()
    policy = Policy(default_timezone="Asia/Tokyo")  # 12:00 in Tokyo
    run_campaigns([campaign], montreal, None, standard_handlers(montreal, outbox), late, policy=policy)
    assert outbox.sent == [("sms", 1)]
    held = gate(Action("sms"), people[0], Policy(), evening)  # gate alone, without a repository: UTC
    assert held is not None and held.outcome == "deferred"


def test_the_host_writer_records_a_channel_unsubscribe(tmp_path: Any) -> None:
    sa = pytest.importorskip("sqlalchemy")
    from . import test_host_repository as host

    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    host._people(engine)
    table = attrs.evolve(host.PEOPLE, columns={**host.PEOPLE.columns,
                                               "email_subscribed": JsonField("doc", "email_subscribed")})
    writer = host.DocWriter()
    repository = HostRepository(engine, table, writer=writer)
    repository.upsert([Customer("a", {"city": "Laval"})])
    repository.unsubscribe("a", channel="email")
    assert writer.calls[-1] == "update a ['email_subscribed']"
    customer = repository.get("a")
    assert customer is not None and customer.attributes["email_subscribed"] is False
