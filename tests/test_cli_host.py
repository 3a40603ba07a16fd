"""The command line over the host's own tables: ``--db URL`` with the ``[host]`` section of ``--config``.

Each test makes the host's tables (``clients``, ``repair_orders``) with plain SQL on SQLite (a
temporary file) and on PostgreSQL (a schema of the session's throwaway cluster), writes a
``host.toml`` mapping them, and runs ``cohorts`` in this process.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sa = pytest.importorskip("sqlalchemy")

from cohorts.cli import main  # noqa: E402 - after the skip: the CLI's host mode needs SQLAlchemy

NOW = "2026-11-16T14:00:00+00:00"
_SCHEMAS = itertools.count(1)

DDL = {
    "sqlite": [
        "CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, email TEXT, extra TEXT, modified_at TEXT)",
        "CREATE TABLE repair_orders (id INTEGER PRIMARY KEY, client_no INTEGER, status TEXT, closed_at TEXT,"
        " amount NUMERIC, modified_at TEXT)",
    ],
    "postgresql": [
        "CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT, email TEXT, extra JSONB,"
        " modified_at TIMESTAMPTZ)",
        "CREATE TABLE repair_orders (id SERIAL PRIMARY KEY, client_no INTEGER, status TEXT, closed_at TIMESTAMPTZ,"
        " amount NUMERIC, modified_at TIMESTAMPTZ)",
    ],
}
ROWS = [
    "INSERT INTO clients VALUES (1, 'LAVAL', 'one@example.com', '{\"tags\": [\"VIP\"]}', '2026-01-01T00:00:00+00:00'),"
    " (2, 'Lévis', 'two@example.com', NULL, '2026-01-01T00:00:00+00:00'),"
    " (3, ' laval ', 'three@example.com', '{\"tags\": []}', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO repair_orders (client_no, status, closed_at, amount, modified_at) VALUES"
    " (1, 'closed', '2026-03-01T10:00:00+00:00', 420, '2026-01-01T00:00:00+00:00'),"
    " (1, 'open', NULL, 99, '2026-01-01T00:00:00+00:00'),"
    " (3, 'closed', '2026-10-30T10:00:00+00:00', 60, '2026-01-01T00:00:00+00:00'),"
    " (2, 'closed', '2020-05-01T10:00:00+00:00', 75, '2026-01-01T00:00:00+00:00')",
]

HOST = """
[host]
table = "clients"
id = "client_no"
updated_at = "modified_at"
tz = "America/Montreal"
columns = { city = "town", email = "email", tags = { column = "extra", keys = ["tags"] } }

[host.events.repair_order.closed]
table = "repair_orders"
customer = "client_no"
at = "closed_at"
where = { status = "closed" }
fields = { total = "amount" }
updated_at = "modified_at"
"""

CAMPAIGNS = """
[[groups]]
name = "Laval"
rule = 'customer.city = "laval"'

[[campaigns]]
name = "Laval news"
group = "Laval"
start = 2026-11-01

[[campaigns.actions]]
kind = "email"
subject = "News from the garage"
"""

SENDER_MODULE = """
import json, os

class FileSender:
    def send(self, message):
        with open(os.environ["COHORTS_TEST_OUTBOX"], "a") as out:
            out.write(json.dumps([message.customer_id, message.to]) + "\\n")
"""


class Host:
    """A database holding the host's tables: its ``url`` for ``--db``, an ``engine`` for the host's own writes."""

    def __init__(self, url: str, engine: Any, folder: Path) -> None:
        self.url = url
        self.engine = engine
        self.folder = folder

    def sql(self, *statements: str) -> None:
        """Write with plain SQL, as the host does, in one transaction."""
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())

    def config(self, text: str, name: str = "host.toml") -> str:
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return str(path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Host]:
    """The host's tables with three clients and their repair orders, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = str(tmp_path / "crm.db")
        engine = sa.create_engine(f"sqlite:///{url}")
        admin = None
    else:
        base: str = request.getfixturevalue("postgres_url")
        schema = f"cli_host_{os.getpid()}_{next(_SCHEMAS)}"
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = f"{base}?options=-csearch_path%3D{schema}"
        engine = sa.create_engine(url)
    found = Host(url, engine, tmp_path)
    found.sql(*DDL[request.param], *ROWS)
    try:
        yield found
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``cohorts ARGS`` in this process; the exit status, standard output and standard error."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def members(capsys: pytest.CaptureFixture[str], host: Host, config: str, group: str) -> list[Any]:
    code, out, err = run(capsys, "groups", "members", group, "--db", host.url, "--config", config, "--now", NOW,
                         "--json")
    assert code == 0, err
    return [m["customer"] for m in json.loads(out)]


def test_groups_and_report_read_the_host_tables(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    """groups create/members/why/list and report run on the mapped columns, JSON keys and event rows in place;
    cohorts writes only its own prefixed tables beside them."""
    config = host.config(HOST)
    db = ("--db", host.url, "--config", config, "--now", NOW)
    code, out, err = run(capsys, "groups", "create", "Laval", 'customer.city = "laval"', *db)
    assert (code, out, err) == (0, "created group 'Laval': 2 member(s)\n", "")
    rule = 'repair_order.closed.last_time within last 365 days and customer.tags is unknown'
    assert run(capsys, "groups", "create", "Recent", rule, *db)[0] == 0
    assert run(capsys, "groups", "create", "VIP", 'customer.tags contains "vip"', *db)[0] == 0
    assert members(capsys, host, config, "Laval") == [1, 3]
    assert members(capsys, host, config, "Recent") == [3]
    assert members(capsys, host, config, "VIP") == [1]
    code, out, _ = run(capsys, "groups", "why", "VIP", "1", *db)
    assert code == 0 and out.startswith("customer 1 is in group 'VIP'")
    assert """[true] customer.tags contains "vip"  (value: ['VIP']""" in out
    code, out, _ = run(capsys, "report", *db, "--measure", "sum(repair_order.closed.total)", "--json")
    assert code == 0
    totals = {row["group"]: (row["customers"], float(row["sum(repair_order.closed.total)"])) for row in json.loads(out)}
    assert totals == {"Laval": (2, 480.0), "Recent": (1, 60.0), "VIP": (1, 420.0)}
    tables = host.tables()
    assert {"clients", "repair_orders", "cohorts_groups", "cohorts_changes"} <= tables
    assert "cohorts_customers" not in tables  # no copy of the customers: they are read in place
    assert all(t in ("clients", "repair_orders") or t.startswith("cohorts_") for t in tables)


def test_a_host_write_with_a_watermark_is_seen_by_the_next_command(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    """The host updates a row with plain SQL and stamps updated_at; the next `groups members` (another
    process, as from cron) sees it, for the customers table and for an events table."""
    config = host.config(HOST)
    db = ("--db", host.url, "--config", config, "--now", NOW)
    assert run(capsys, "groups", "create", "Laval", 'customer.city = "laval"', *db)[0] == 0
    assert run(capsys, "groups", "create", "Big", "repair_order.closed.total > 400", *db)[0] == 0
    assert members(capsys, host, config, "Laval") == [1, 3]
    host.sql("UPDATE clients SET town = 'Laval', modified_at = '2026-02-01T00:00:00+00:00' WHERE client_no = 2",
             "UPDATE clients SET town = 'Montréal', modified_at = '2026-02-01T00:00:00+00:00' WHERE client_no = 3")
    assert members(capsys, host, config, "Laval") == [1, 2]
    assert members(capsys, host, config, "Big") == [1]
    host.sql("UPDATE repair_orders SET amount = 500, modified_at = '2026-02-01T00:00:00+00:00' WHERE client_no = 2")
    assert members(capsys, host, config, "Big") == [1, 2]


def test_campaigns_run_and_audience_over_the_host_tables(
    host: Host, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message-only campaign needs no writer: `campaigns run` sends once per member of a group declared
    in the same file, a second run sends nothing, and `audience` lists who it reaches."""
    (host.folder / "host_sender_mod.py").write_text(SENDER_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(host.folder))
    outbox = host.folder / "outbox"
    monkeypatch.setenv("COHORTS_TEST_OUTBOX", str(outbox))
    config = host.config(HOST + CAMPAIGNS)
    argv = ["campaigns", "run", "--db", host.url, "--config", config, "--now", NOW,
            "--sender", "host_sender_mod:FileSender"]
    code, out, err = run(capsys, *argv)
    assert code == 0, out + err
    assert "note: created group 'Laval'" in err and "Laval news" in out
    sent = [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines()]
    assert sorted(sent) == [[1, "one@example.com"], [3, "three@example.com"]]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0 and json.loads(out)["campaigns"][0]["done"] == 0
    assert len(outbox.read_text(encoding="utf-8").splitlines()) == 2
    code, out, _ = run(capsys, "campaigns", "audience", "Laval news", "--db", host.url, "--config", config,
                       "--now", NOW, "--json")
    assert code == 0 and [m["id"] for m in json.loads(out)["members"]] == [1, 3]


def test_writes_to_the_host_customers_are_refused(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a writer (the CLI has none), a campaign with a points action is refused before anything runs,
    and `cohorts import` is refused, each with the library's message; exit 1 and the host's rows unchanged."""
    config = host.config(HOST + '[[campaigns]]\nname = "Bonus"\n[[campaigns.actions]]\nkind = "points"\npoints = 5\n')
    code, out, err = run(capsys, "campaigns", "run", "--db", host.url, "--config", config, "--now", NOW)
    assert (code, out) == (1, "")
    assert err == (
        "error: campaign 'Bonus' has a 'points' action, which writes to customers: the HostRepository over clients"
        " has no writer: writes to the host's customers go through HostRepository(..., writer=...), a"
        " cohorts.HostWriter the host supplies\n"
    )
    rows = host.folder / "clients.csv"
    rows.write_text("id,city\n4,Laval\n", encoding="utf-8")
    code, out, err = run(capsys, "import", str(rows), "--group", "New", "--db", host.url, "--config", config)
    assert (code, out) == (1, "")
    assert err.startswith("error: import_file writes customers, and the HostRepository over clients has no writer")
    with host.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM clients").scalar_one() == 3


def test_a_mapping_the_database_lacks_is_a_one_line_config_error(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing table or column of the mapping names the file, the section and the mapping entry: exit 1,
    no traceback, and no state tables are made."""
    bad_column = host.config(HOST.replace('city = "town"', 'city = "twn"'), "column.toml")
    code, out, err = run(capsys, "groups", "list", "--db", host.url, "--config", bad_column)
    assert (code, out) == (1, "")
    assert err == f"error: {bad_column}: host: attribute 'city': the table clients has no column 'twn'\n"
    bad_table = host.config(HOST.replace('table = "repair_orders"', 'table = "repair_order"'), "table.toml")
    code, out, err = run(capsys, "report", "--db", host.url, "--config", bad_table)
    assert (code, out) == (1, "")
    assert err == (
        f"error: {bad_table}: host: events 'repair_order.closed' (customer column): the table repair_order"
        " does not exist\n"
    )
    code, out, _ = run(capsys, "groups", "list", "--db", host.url, "--config", bad_column, "--json")
    assert code == 1 and json.loads(out)["error"]["type"] == "ConfigError"
    assert host.tables() == {"clients", "repair_orders"}


def test_state_prefix_names_cohorts_tables(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    """state_prefix is the HostRepository's: cohorts' tables start with it."""
    config = host.config(HOST.replace('id = "client_no"', 'id = "client_no"\nstate_prefix = "crm_cohorts_"'))
    assert run(capsys, "groups", "create", "Laval", 'customer.city = "laval"', "--db", host.url, "--config",
               config)[0] == 0
    assert {t for t in host.tables() if "groups" in t} == {"crm_cohorts_groups"}


# -- the file and the database, before anything is opened (SQLite only) ----------------------------------------


@pytest.mark.parametrize(
    ("change", "where", "reason"),
    [
        (("time", "at"), "host.events.repair_order.closed.time", "unknown key (allowed: at, customer, fields, table,"
         " updated_at, where)"),
        (('id = "client_no"', "id = 7"), "host.id", "expected a non-blank string, got 7"),
        (('table = "clients"', 'tabel = "clients"'), "host.tabel", "unknown key; did you mean 'table'?"),
        (('keys = ["tags"]', 'keys = "tags"'), "host.columns.tags.keys",
         """expected a non-empty array of keys, such as ["prefs", "channel"], got 'tags'"""),
        (('table = "repair_orders"\n', ""), "host.events.repair_order.closed",
         "needs 'table': the events table, its customer column and its time column, e.g. table = \"appointments\","
         ' customer = "client_no", at = "starts_at"'),
        (('at = "closed_at"', 'at = "closed at"'), "host.events.repair_order.closed",
         "the time column of repair_orders: 'closed at' is not a plain SQL column name (letters, digits and _)"),
    ],
)
def test_config_errors_name_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], where: str, reason: str
) -> None:
    """A wrong [host] section is one ConfigError line naming the file, the place and why (exit 1), before
    any database is opened."""
    old, new = change
    text = HOST.replace('at = "closed_at"', 'time = "closed_at"') if old == "time" else HOST.replace(old, new, 1)
    config = tmp_path / "host.toml"
    config.write_text(text, encoding="utf-8")
    missing = tmp_path / "never.db"
    for command in (["groups", "members", "VIP"], ["report"], ["campaigns", "audience", "X"]):
        code, out, err = run(capsys, *command, "--db", str(missing), "--config", str(config))
        assert (code, out, err) == (1, "", f"error: {config}: {where}: {reason}\n"), command
    assert not missing.exists()


def test_no_command_makes_a_database_for_a_host_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host's tables must exist: with a [host] section even groups create and import say that a mistyped
    SQLite file does not exist, and make none."""
    config = tmp_path / "host.toml"
    config.write_text(HOST, encoding="utf-8")
    rows = tmp_path / "rows.csv"
    rows.write_text("id\n1\n", encoding="utf-8")
    missing = tmp_path / "crm-typo.db"
    for url in (str(missing), f"sqlite:///{missing}"):
        for command in (
            ["groups", "list"],
            ["groups", "create", "VIP"],
            ["report"],
            ["import", str(rows), "--group", "VIP"],
        ):
            code, out, err = run(capsys, *command, "--db", url, "--config", str(config))
            assert (code, out) == (1, ""), command
            assert err == (
                f"error: cannot open the database {url}: it does not exist (check the path: the [host] section maps"
                " existing tables)\n"
            )
    assert not missing.exists()


def test_an_unreachable_database_is_a_database_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A server that cannot be reached is the DatabaseError of any --db (exit 1, password hidden)."""
    config = tmp_path / "host.toml"
    config.write_text(HOST, encoding="utf-8")
    code, out, err = run(capsys, "groups", "list", "--db", "postgresql://me:secret@nohost/x", "--config", str(config))
    assert (code, out) == (1, "")
    assert err.startswith("error: cannot open the database postgresql://me:***@nohost/x: ")
    assert len(err.splitlines()) == 1 and "secret" not in err


def test_a_config_without_host_keeps_cohorts_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config without a [host] section: the SQLRepository of cohorts' own tables, as without --config; a
    [host] section over that database with cohorts' own prefix is refused, saying which prefix to give."""
    config = tmp_path / "groups.toml"
    config.write_text(CAMPAIGNS, encoding="utf-8")
    db = tmp_path / "customers.db"
    code, _, err = run(capsys, "groups", "create", "VIP", "--db", str(db), "--config", str(config))
    assert code == 0 and err == f"note: created the database {db}\n"
    assert "cohorts_customers" in set(sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names())
    with sa.create_engine(f"sqlite:///{db}").begin() as conn:
        for statement in DDL["sqlite"]:
            conn.exec_driver_sql(statement)
    host_config = tmp_path / "host.toml"
    host_config.write_text(HOST, encoding="utf-8")
    code, _, err = run(capsys, "groups", "list", "--db", str(db), "--config", str(host_config))
    assert code == 1
    assert err.startswith(f"error: {host_config}: host: the tables cohorts_* of this database belong to a "
                          "cohorts.SQLRepository: give the HostRepository its own state_prefix")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_check_prints_the_query_over_the_host_tables(
    dialect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check --sql --config`` checks the rule against the mapping and prints SQL over the host's tables."""
    config = tmp_path / "host.toml"
    config.write_text(HOST, encoding="utf-8")
    rule = 'customer.city = "Laval" AND repair_order.closed.count >= 1 AND customer.email matches "@example\\.com$"'
    code, out, _ = run(capsys, "check", "--sql", "--dialect", dialect, "--config", str(config), "--json", rule)
    assert code == 0
    found = json.loads(out)
    assert found["host_table"] == "clients" and found["dialect"] == dialect
    assert "clients" in found["sql"] and "repair_orders" in found["sql"] and "cohorts_customers" not in found["sql"]
    code, out, err = run(capsys, "check", "--config", str(config), 'customer.postal_code = "H7T"')
    assert code == 1 and "postal_code" in err  # the host's mapping has no such attribute
