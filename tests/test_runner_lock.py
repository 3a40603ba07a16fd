"""One campaign run at a time (issue #18): ``run_campaigns(..., exclusive=True)`` holds the database's runner
lock; a second run raises RunnerBusyError having done nothing, or waits with ``wait=True``. Proven across
processes on a SQLite file and PostgreSQL, and in memory; the CLI exits 0 with a note."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cohorts import Action, Campaign, Customer, MemoryRepository, RunnerBusyError, run_campaigns

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
TALLY = Campaign("Tally", actions=[Action("track")])
SRC = str(Path(__file__).parent.parent / "src")


def _run(repository: Any, **options: Any) -> int:
    calls: list[Any] = []
    handlers = {"track": lambda customer, action, campaign: calls.append(customer.id)}
    report = run_campaigns([TALLY], repository, None, handlers, NOW, exclusive=True, **options)
    return report["Tally"].done


def _sql(url_or_engine: Any) -> Any:
    from cohorts.sql import SQLRepository

    return SQLRepository(url_or_engine)


def test_a_second_run_does_nothing_while_the_lock_is_held() -> None:
    repository = MemoryRepository([Customer(1), Customer(2)])
    with repository.runner_lock() as got:
        assert got
        with pytest.raises(RunnerBusyError, match="another campaign run holds this database's runner lock"):
            _run(repository)
        assert repository.ledger().entries() == []  # nothing enrolled, nothing run
    assert _run(repository) == 2
    assert _run(repository) == 0


def test_wait_waits_for_the_run_holding_the_lock() -> None:
    repository = MemoryRepository([Customer(1)])
    taken, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with repository.runner_lock():
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=other_run)
    holder.start()
    taken.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    assert _run(repository, wait=True) == 1
    assert time.monotonic() - started >= 0.25
    holder.join()


def _hold_in_another_process(code: str, *args: str) -> subprocess.Popen[str]:
    """A process that takes the runner lock, prints "held", and keeps it until its standard input closes."""
    env = {**os.environ, "PYTHONPATH": SRC}
    script = (
        "import sys\nfrom cohorts.sql import SQLRepository\n" + code +
        "\nwith repository.runner_lock() as got:\n    print('held' if got else 'busy', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def _release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    assert process.wait(30) == 0
    process.stdout.close()


def test_the_lock_of_a_sqlite_file_is_seen_by_other_processes(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    path = tmp_path / "crm.db"
    repository = _sql(f"sqlite:///{path}")
    repository.upsert([Customer(1)])
    holder = _hold_in_another_process("repository = SQLRepository(sys.argv[1])", f"sqlite:///{path}")
    try:
        with pytest.raises(RunnerBusyError):
            _run(repository)
        assert repository.ledger().entries() == []
    finally:
        _release(holder)
    assert _run(repository) == 1


@pytest.mark.postgres
def test_the_postgres_lock_is_seen_by_other_processes(postgres_url: str) -> None:
    import sqlalchemy as sa

    schema = f"lock_{os.getpid()}"
    admin = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        repository = _sql(engine)
        repository.upsert([Customer(1)])
        code = (
            "import sqlalchemy as sa\n"
            "engine = sa.create_engine(sys.argv[1], connect_args={'options': '-csearch_path=' + sys.argv[2]})\n"
            "repository = SQLRepository(engine)"
        )
        holder = _hold_in_another_process(code, postgres_url, schema)
        try:
            with pytest.raises(RunnerBusyError):
                _run(repository)
            assert repository.ledger().entries() == []
        finally:
            _release(holder)
        assert _run(repository) == 1
        with repository.runner_lock() as first, _sql(engine).runner_lock() as second:
            assert (first, second) == (True, False)  # one database, one lock, whichever object asks
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def test_the_command_line_run_takes_the_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sqlalchemy")
    from cohorts.cli import main

    path = tmp_path / "crm.db"
    repository = _sql(f"sqlite:///{path}")
    repository.upsert([Customer(1), Customer(2)])
    config = tmp_path / "campaigns.toml"
    config.write_text('[[campaigns]]\nname = "Tally"\n[[campaigns.actions]]\nkind = "track"\n', encoding="utf-8")
    args = ["campaigns", "run", "--db", str(path), "--config", str(config), "--now", NOW.isoformat(), "--no-progress"]
    with repository.runner_lock():
        assert main(args) == 0
        out, err = capsys.readouterr()
        assert out == "" and "note: another campaign run holds this database's runner lock" in err
        assert repository.ledger().entries() == []
        assert main([*args, "--overlap", "--json"]) == 0  # beside the other run: each action still once
        assert '"done": 2' in capsys.readouterr().out
    assert main(args) == 0
    assert "Tally" in capsys.readouterr().out
