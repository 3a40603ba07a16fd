"""Progress of long work: callbacks from refreshes and campaign runs, and a bar only on a terminal."""

from __future__ import annotations

import datetime as dt
import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

import cohorts
from cohorts.progress import Progress, TerminalBar

NOW = dt.datetime(2026, 11, 16, 14, tzinfo=dt.UTC)


def people(n: int) -> list[cohorts.Customer]:
    return [cohorts.Customer(i, {"status": "active", "tags": ["vip"] if i % 3 == 0 else []}) for i in range(n)]


def test_refresh_reports_rules_then_customers() -> None:
    seen: list[cohorts.Progress] = []
    groups = cohorts.Groups(cohorts.MemoryRepository(people(2500)), progress=seen.append)
    groups.create("VIP", 'customer.tags contains "vip"')
    groups.create("Active", 'customer.status = "active"')
    groups.refresh(NOW, full=True)
    stages = [p.stage for p in seen]
    assert stages.index("refresh: customers") > stages.index("refresh: rules")
    rules = [p for p in seen if p.stage == "refresh: rules"]
    assert [int(p) for p in rules] == [0, 1] and all(p.what == "groups" for p in rules)
    customers = [p for p in seen if p.stage == "refresh: customers"]
    assert customers[-1] == 2500 and customers[-1].fraction == 1.0
    assert [int(p) for p in customers] == sorted(int(p) for p in customers)  # never goes backwards


def test_campaign_run_reports_customers_done() -> None:
    seen: list[cohorts.Progress] = []
    repository = cohorts.MemoryRepository(people(250))
    campaign = cohorts.Campaign("Hello", published=True, actions=[cohorts.Action("track")])
    report = cohorts.run_campaigns([campaign], repository, None, {"track": lambda *_: None}, NOW, progress=seen.append)
    assert report["Hello"].done == 250
    assert [int(p) for p in seen] == [0, 100, 200, 250]
    assert seen[-1].fraction == 1.0 and seen[-1].stage == "campaign Hello"
    seen.clear()
    cohorts.run_campaigns([campaign], repository, None, {"track": lambda *_: None}, NOW, progress=seen.append)
    assert seen == []  # nothing due: nothing to show


def test_bar_draws_on_one_line_and_only_on_a_terminal() -> None:
    out = io.StringIO()
    assert TerminalBar.for_terminal(out) is None  # not a terminal
    bar = TerminalBar(out)
    bar(cohorts.Progress(0, 0.0, what="groups", stage="refresh: rules"))
    bar(cohorts.Progress(5, 1.0, what="groups", stage="refresh: rules"))
    bar(cohorts.Progress(10, None, what="customers", stage="refresh: customers"))
    bar.done()
    lines = out.getvalue().split("\n")
    assert len(lines) == 3 and lines[-1] == ""  # one line per stage, redrawn with \r
    assert "[##############################] 100% refresh: rules: 5 groups" in lines[0]
    assert "refresh: customers: 10 customers" in lines[1] and "[" not in lines[1]


def _refresh(db: Path, stderr: int | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cohorts", "groups", "refresh", "--db", str(db), "--full", "--now", NOW.isoformat()],
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        timeout=120,
        check=False,
    )


def test_cli_refresh_shows_a_bar_on_a_terminal_and_is_quiet_otherwise(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    db = tmp_path / "customers.db"
    repository = cohorts.SQLRepository(f"sqlite:///{db}")
    repository.upsert(people(50))
    cohorts.Groups(repository).create("VIP", 'customer.tags contains "vip"')
    repository.engine.dispose()

    quiet = _refresh(db, None)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""
    assert b"17 change(s)" in quiet.stdout

    leader, follower = pty.openpty()
    try:
        shown = _refresh(db, follower)
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert shown.returncode == 0
    assert b"refresh: rules: 1 groups" in drawn  # SQL: the rules' pass is all there is, computed by SQLite


def test_the_bar_shows_the_current_rate_and_the_time_left() -> None:
    """Rate and ETA come from the last seconds of progress: a slow start does not skew them."""
    moments = iter([0.0, 0.0, 10.0, 20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0])
    out = io.StringIO()
    bar = TerminalBar(out, clock=lambda: next(moments))
    bar(Progress(0, 0.0, what="rows", stage="import"))
    bar(Progress(10, 0.01, what="rows", stage="import"))  # 1 row/s at the start
    bar(Progress(20, 0.02, what="rows", stage="import"))
    for done in (120, 220, 320, 420, 520):  # then 100 rows/s
        bar(Progress(done, done / 1000, what="rows", stage="import"))
    last = out.getvalue().split("\r")[-1]
    assert "520 rows (100/s, ETA 5s)" in last  # 480 rows left at 100/s, not at the average since the start
    bar(Progress(1000, 1.0, what="rows", stage="import"))
    assert "ETA" not in out.getvalue().split("\r")[-1]


def test_durations() -> None:
    from cohorts.progress import _duration

    assert [_duration(s) for s in (0.4, 59, 61, 3599, 7260)] == ["0s", "59s", "1m01s", "59m59s", "2h01m"]
