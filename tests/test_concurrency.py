"""Processes sharing one database (issue #15, item 6): writers, readers, group refreshes and campaign
runners at once never see a raw database error, and no handler holds a lock on SQLite while it runs.

Real processes: the test starts this file as a script (``python test_concurrency.py <role> ...``); each
one waits for a start file, so that they all begin together, then prints one JSON line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
SRC = str(Path(__file__).parent.parent / "src")


def _engine(url: str, schema: str) -> Any:
    import sqlalchemy as sa

    options = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema != "-" else {}
    return sa.create_engine(url, **options)


def _wait(go: str) -> None:
    Path(f"{go}.ready.{os.getpid()}").touch()
    while not os.path.exists(go):
        time.sleep(0.002)


def upserter(url: str, schema: str, go: str) -> None:
    """Upsert the same new ids as the other processes, round after round."""
    from cohorts import Customer, Event
    from cohorts.sql import SQLRepository

    engine = _engine(url, schema)
    repo = SQLRepository(engine)
    _wait(go)
    for round_ in range(6):
        ids = range(1000 * round_, 1000 * round_ + 150)
        repo.upsert(Customer(i, {"score": os.getpid() % 100}, (Event("visit", NOW),)) for i in ids)
    print(json.dumps({"ok": True}))
    engine.dispose()


def mixed(url: str, schema: str, go: str, seed: str, log: str) -> None:
    """Writes, group definitions, reads and campaign runs in a random order, for a few seconds."""
    import random

    from cohorts import Action, Campaign, Customer, Groups, current_run, run_campaigns
    from cohorts.errors import GroupError
    from cohorts.repository import UnknownCustomerError
    from cohorts.sql import SQLRepository

    rnd = random.Random(int(seed))
    engine = _engine(url, schema)
    repo = SQLRepository(engine)
    groups = Groups(repo)
    campaign = Campaign("vip", group="vip", actions=[Action("track")])

    def handler(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = current_run()
        assert ctx is not None
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{customer.id} {ctx.action_key}\n")
        time.sleep(rnd.choice([0.0, 0.0, 0.005, 0.05]))

    own = f"g{seed}"
    _wait(go)
    ops: Counter[str] = Counter()
    end = time.monotonic() + 4
    while time.monotonic() < end:
        op = rnd.choice(["upsert", "upsert", "delete", "add", "define", "shared", "read", "refresh", "run"])
        try:
            if op == "upsert":
                repo.upsert([Customer(rnd.randrange(120), {"score": rnd.randrange(100)})
                             for _ in range(rnd.choice([1, 30]))])
            elif op == "delete":
                repo.delete(rnd.randrange(120))
            elif op == "add":
                groups.add("vip", rnd.randrange(120))
            elif op == "define":  # a group of this process's own, created then changed
                rule = f"customer.score > {rnd.randrange(100)}"
                if own in groups.names():
                    groups.set_rule(own, rule)
                else:
                    groups.create(own, rule)
            elif op == "shared":  # the same new names from every process: one wins each
                name = f"shared{rnd.randrange(1000)}"
                try:
                    groups.create(name, "customer.score < 10")
                except GroupError as error:
                    assert "exists already" in str(error)
            elif op == "read":
                groups.members("vip")
                groups.count("low")
            elif op == "refresh":
                groups.refresh()
            else:
                run_campaigns([campaign], repo, groups, {"track": handler})
        except UnknownCustomerError:  # added by hand after another process deleted it
            pass
        ops[op] += 1
    print(json.dumps(dict(ops)))
    engine.dispose()


def _start(role: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, __file__, role, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _together(go: Path, processes: list[subprocess.Popen[str]]) -> list[Any]:
    """Start the processes at once; their JSON lines, each having exited 0."""
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob(f"{go.name}.ready.*"))) < len(processes):
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, [
            p.communicate()[1][-3000:] for p in processes if p.poll() is not None
        ]
        time.sleep(0.01)
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-4000:]
        results.append(json.loads(out.splitlines()[-1]))
    return results


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A database several processes reach: a SQLite file, or a fresh PostgreSQL schema (URL, schema)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}", "-"
    engine = request.getfixturevalue("postgres_engine")
    with engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    return request.getfixturevalue("postgres_url"), str(schema)


def test_processes_upserting_the_same_new_customers(shared_database: tuple[str, str], tmp_path: Path) -> None:
    """Three processes insert the same new ids at once: none fails (on PostgreSQL the loser of each race
    reads the winner's row and updates it), and each customer is stored once with its events merged."""
    from cohorts.sql import SQLRepository

    url, schema = shared_database
    SQLRepository(_engine(url, schema)).engine.dispose()  # the tables exist before the race
    go = tmp_path / "go"
    _together(go, [_start("upserter", url, schema, str(go)) for _ in range(3)])
    repo = SQLRepository(_engine(url, schema))
    assert len(repo) == 6 * 150
    assert all(len(c.events) == 1 for c in repo)  # the same event from each process is one event
    repo.engine.dispose()


def test_processes_writing_reading_and_running_campaigns_at_once(
    shared_database: tuple[str, str], tmp_path: Path
) -> None:
    """Three processes mix upserts, deletes, hand adds, group creates and rule changes (some racing for
    the same new name), reads, refreshes and campaign runs for four seconds: no raw database error
    (SQLite waits for its lock; PostgreSQL queues group writes and retries the loser of an insert
    race), every action ran at most once, and the groups read afterwards agree with the data."""
    from cohorts import Customer, Groups
    from cohorts.sql import SQLRepository

    url, schema = shared_database
    repo = SQLRepository(_engine(url, schema))
    repo.upsert(Customer(i, {"score": i % 100}) for i in range(120))
    groups = Groups(repo)
    groups.create("vip", "customer.score > 50")
    groups.create("low", "customer.score < 20")
    go, log = tmp_path / "go", tmp_path / "log"
    log.touch()
    results = _together(go, [_start("mixed", url, schema, str(go), str(seed), str(log)) for seed in range(3)])
    assert all(sum(r.values()) > 10 for r in results), results
    sent = Counter(log.read_text(encoding="utf-8").splitlines())
    assert sent and max(sent.values()) == 1  # each (customer, action) once at most
    names = groups.names()
    assert len(names) == len({n.lower() for n in names})
    members = groups.members("vip")
    ruled = {c.id for c in repo if (c.attributes.get("score") or 0) > 50}
    assert ruled <= set(members)  # hand adds may keep others in
    repo.engine.dispose()


def test_a_hanging_handler_holds_no_sqlite_lock(tmp_path: Path) -> None:
    """While a campaign handler blocks, another connection writes customers and reads groups at once:
    the claim was committed before the handler started, so the database's write lock is free."""
    from cohorts import Action, Campaign, Customer, Groups, run_campaigns
    from cohorts.ledger import ledger_for
    from cohorts.sql import SQLRepository

    url = f"sqlite:///{tmp_path / 'c.db'}"
    runner_repo = SQLRepository(url)
    runner_repo.upsert([Customer(1, {"score": 90})])
    started, release = threading.Event(), threading.Event()

    def hang(customer: Customer, action: Action, campaign: Campaign) -> None:
        started.set()
        assert release.wait(30)

    run = threading.Thread(
        target=run_campaigns, args=([Campaign("slow", actions=[Action("track")])], runner_repo, None, {"track": hang})
    )
    run.start()
    try:
        assert started.wait(30)
        other = SQLRepository(url)
        began = time.monotonic()
        other.upsert([Customer(i, {"score": i}) for i in range(2, 50)])
        groups = Groups(other)
        groups.create("high", "customer.score > 40")
        assert set(groups.members("high")) == {1, *range(41, 50)}
        assert time.monotonic() - began < 5  # SQLite's busy timeout is 10 s: nothing waited for the handler
        (entry,) = ledger_for(other).entries("slow")
        assert entry.state == "running"
    finally:
        release.set()
        run.join(30)
    (entry,) = ledger_for(other).entries("slow")
    assert (entry.state, entry.attempts) == ("done", 0)
    other.engine.dispose()
    runner_repo.engine.dispose()


def _hold_slot(database: str) -> tuple[subprocess.Popen[str], str]:
    """A process that takes a claimant slot on ``database``, prints its name, and lives until stdin closes."""
    script = (
        "import sys\nfrom cohorts.sql.claimants import Claimants\n"
        f"claimants = Claimants({database!r})\nprint(claimants.me(), flush=True)\nsys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SRC}, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_a_row_running_in_a_live_process_waits_and_one_of_a_dead_process_is_due(tmp_path: Path) -> None:
    """A row marked running by a process that still runs is left to it; once that process is gone (its
    slot file unlocked), the next run takes the row at once. A name nobody holds is dead too."""
    import sqlalchemy as sa

    from cohorts import Action, Campaign, Customer, run_campaigns
    from cohorts.ledger import ledger_for
    from cohorts.sql import SQLRepository

    path = str(tmp_path / "c.db")
    repo = SQLRepository(f"sqlite:///{path}")
    repo.upsert([Customer(1), Customer(2)])
    campaign = Campaign("c", actions=[Action("track")])
    ledger = ledger_for(repo)
    assert run_campaigns([campaign], repo, None, {"track": lambda *a: 1 / 0}, NOW)["c"].failed == 2
    holder, alive = _hold_slot(path)
    actions = sa.table("cohorts_campaign_actions", sa.column("customer"), sa.column("state"),
                       sa.column("claimed_by"))
    with repo.engine.begin() as conn:
        conn.execute(sa.update(actions).where(actions.c.customer == "i:1").values(state="running", claimed_by=alive))
        conn.execute(sa.update(actions).where(actions.c.customer == "i:2")
                     .values(state="running", claimed_by="9999:" + "0" * 32))
    ran: list[object] = []
    track = {"track": lambda customer, *a: ran.append(customer.id)}
    try:
        assert ledger.due("c", ["track-1"], 3) == [(2, "track-1")]
        assert run_campaigns([campaign], repo, None, track, NOW)["c"].done == 1 and ran == [2]
    finally:
        holder.communicate(timeout=30)  # it ends, and its lock with it
    assert ledger.due("c", ["track-1"], 3) == [(1, "track-1")]
    assert run_campaigns([campaign], repo, None, track, NOW)["c"].done == 1 and ran == [2, 1]
    states = {e.customer_id: (e.state, e.attempts) for e in ledger.entries("c")}
    assert states == {1: ("done", 1), 2: ("done", 1)}  # the failed try before is kept
    repo.engine.dispose()


def test_a_handler_that_raises_puts_its_running_row_back(tmp_path: Path) -> None:
    """On SQLite the row a raising handler had marked running goes back, and its failure is recorded;
    the handler's own repository writes are undone with it."""
    from cohorts import Action, Campaign, Customer, run_campaigns
    from cohorts.ledger import ledger_for
    from cohorts.sql import SQLRepository

    repo = SQLRepository(f"sqlite:///{tmp_path / 'c.db'}")
    repo.upsert([Customer(1)])

    def half(customer: Customer, action: Action, campaign: Campaign) -> None:
        repo.upsert([customer.with_attributes(stage="half")])
        raise RuntimeError("boom")

    report = run_campaigns([Campaign("c", actions=[Action("stage")])], repo, None, {"stage": half}, NOW)
    assert report["c"].failed == 1
    (entry,) = ledger_for(repo).entries("c")
    assert (entry.state, entry.attempts, entry.error) == ("failed", 1, "RuntimeError: boom")
    assert "stage" not in repo.get(1).attributes
    repo.engine.dispose()


def test_a_ledger_made_before_claims_were_named_gains_the_column(tmp_path: Path) -> None:
    """A ledger table without ``claimed_by`` (cohorts before this change) gets it; its rows stay."""
    import sqlalchemy as sa

    from cohorts.ledger import ledger_for
    from cohorts.sql import SQLRepository

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE cohorts_campaign_actions (campaign VARCHAR(200), customer VARCHAR(200), action VARCHAR(200),"
            " kind VARCHAR(100) NOT NULL, state VARCHAR(20) NOT NULL, attempts INTEGER NOT NULL, reason TEXT,"
            " error TEXT, updated_at VARCHAR(40), done_at VARCHAR(40), PRIMARY KEY (campaign, customer, action))"
        )
        conn.exec_driver_sql(
            "INSERT INTO cohorts_campaign_actions VALUES ('c', 'i:1', 'track-1', 'track', 'done', 0, NULL, NULL,"
            " '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
        )
    engine.dispose()
    repo = SQLRepository(url)
    (entry,) = ledger_for(repo).entries()
    assert (entry.customer_id, entry.state) == (1, "done")
    columns = {c["name"] for c in sa.inspect(repo.engine).get_columns("cohorts_campaign_actions")}
    assert "claimed_by" in columns
    repo.engine.dispose()


if __name__ == "__main__" and len(sys.argv) > 1:
    {"upserter": upserter, "mixed": mixed}[sys.argv[1]](*sys.argv[2:])


def test_the_busy_timeout_comes_from_the_url(tmp_path: Path) -> None:
    """SQLite waits 10 s for another connection's write lock, or the URL's ``?timeout=SECONDS``; a second
    writer that waits longer than that gets the database's error."""
    import sqlalchemy as sa

    from cohorts import Customer
    from cohorts.sql import SQLRepository

    path = tmp_path / "c.db"
    default, short = SQLRepository(f"sqlite:///{path}"), SQLRepository(f"sqlite:///{path}?timeout=0.3")
    for repo, expected in ((default, 10_000), (short, 300)):
        with repo.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == expected
    with default.transaction():
        default.upsert([Customer(1)])  # holds the write lock until the block ends
        began = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            short.upsert([Customer(2)])
        assert 0.25 < time.monotonic() - began < 5
    default.engine.dispose()
    short.engine.dispose()
