"""The ``cohorts`` command, run as a subprocess the way a user runs it (or in this process, with ``run``)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

NOW = "2026-11-16T14:00:00+00:00"


def cohorts(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cohorts ARGS`` and capture its output."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "cohorts", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=False,
    )


def write_lines(path: Path, records: list[Any]) -> Path:
    """Write records as JSON lines (strings are written as they are)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def customers_file(tmp_path: Path) -> Path:
    """Four customers in both record shapes, with accents and events."""
    return write_lines(
        tmp_path / "customers.jsonl",
        [
            {
                "id": "a1",
                "attributes": {"first_name": "Amélie", "city": "Saint-Jérôme", "vehicle_model": "Ford Escape"},
                "events": [{"name": "repair_order.closed", "at": "2026-03-01T10:00", "attributes": {"total": 250}}],
            },
            {"id": "a2", "first_name": "Benoît", "city": "LAVAL", "vehicle_model": "Escape", "tags": ["VIP"]},
            {"id": 3, "city": "saint-jérôme", "vehicle_model": "Civic", "phone": "(514) 555 0199"},
            {
                "id": "a4",
                "vehicle_model": "Ford Escape Hybrid",
                "events": [{"name": "repair_order.closed", "at": "2020-01-05"}],
            },
        ],
    )


def test_check_prints_canonical_form() -> None:
    """check prints the canonical form of a valid rule and exits 0."""
    result = cohorts("check", 'customer.city = "Laval"   and NOT customer.vehicle_year >= 2019')
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'customer.city = "Laval" AND NOT customer.vehicle_year >= 2019\n'
    assert result.stderr == ""


def test_check_syntax_error_shows_caret_and_exits_1() -> None:
    """A syntax error is one message with the rule, a caret under the fault and a suggestion."""
    result = cohorts("check", 'customer.city contans "Laval"')
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: Unexpected 'contans' at line 1, column 15:"
    assert lines[1] == 'customer.city contans "Laval"'
    assert lines[2] == " " * 14 + "^"
    assert 'did you mean "contains"?' in result.stderr
    assert "Traceback" not in result.stderr


def test_check_unknown_attribute_suggests_and_underlines() -> None:
    """An unknown attribute names the nearest one and underlines the condition."""
    result = cohorts("check", 'customer.city = "x" or customer.vehicle_modle contains "Escape"')
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: unknown attribute 'customer.vehicle_modle'; did you mean 'customer.vehicle_model'?"
    assert lines[2] == " " * 23 + "^" * len('customer.vehicle_modle contains "Escape"')
    assert "--schema-free" in result.stderr


def test_check_type_error_exits_1() -> None:
    """A condition that cannot work on its types is an error, not a silent false."""
    result = cohorts("check", "customer.vehicle_year contains 5")
    assert result.returncode == 1
    assert "contains does not apply to a number" in result.stderr


def test_check_schema_free_and_schema_file(tmp_path: Path) -> None:
    """Custom attributes pass with --schema-free, or when a schema file declares them."""
    rule = "customer.`Date de renouvellement`.month = january"
    assert cohorts("check", rule).returncode == 1
    free = cohorts("check", "--schema-free", rule)
    assert free.returncode == 0 and free.stdout.strip() == rule
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"customer": {"Date de renouvellement": "date"}}), encoding="utf-8")
    assert cohorts("check", "--schema", str(schema), rule).returncode == 0
    typed = cohorts("check", "--schema", str(schema), 'customer.`Date de renouvellement` contains "x"')
    assert typed.returncode == 1 and "does not apply to a date" in typed.stderr


def test_check_bad_schema_file_is_an_error(tmp_path: Path) -> None:
    """A schema file with an unknown type is reported with the types that exist."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"customer": {"pet": "animal"}}), encoding="utf-8")
    result = cohorts("check", "--schema", str(schema), 'customer.pet = "cat"')
    assert result.returncode == 1
    assert "text, number" in result.stderr


def test_check_reads_rule_from_stdin() -> None:
    """RULE - reads the rule from standard input, even on several lines."""
    result = cohorts("check", "-", stdin='customer.tags contains "VIP"\n  or customer.city = "Laval"\n')
    assert result.returncode == 0
    assert result.stdout == 'customer.tags contains "VIP" OR customer.city = "Laval"\n'


def test_check_json_success_and_error() -> None:
    """--json prints the canonical rule, or the error's facts, on stdout."""
    ok = cohorts("check", "--json", "customer.vehicle_year = 2019")
    assert ok.returncode == 0
    assert json.loads(ok.stdout) == {"ok": True, "rule": "customer.vehicle_year = 2019"}
    bad = cohorts("check", "--json", "customer.city =")
    assert bad.returncode == 1
    error = json.loads(bad.stdout)["error"]
    assert error["type"] == "RuleSyntaxError"
    assert (error["line"], error["column"]) == (1, 16)
    assert "a string" in error["expected"]


def test_check_sql_prints_query_or_says_why_not() -> None:
    """--sql prints the SQL and its parameters, or explains that SQL support is missing."""
    result = cohorts("check", "--sql", "--dialect", "sqlite", 'customer.city = "Laval"')
    try:
        importlib.import_module("cohorts.sql")
    except ImportError:
        assert result.returncode == 1
        assert "--sql" in result.stderr and "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'customer.city = "Laval"'
    assert lines[1] == "-- SQL (sqlite)"
    assert "SELECT" in result.stdout.upper()
    assert "Laval" not in "\n".join(lines[2:-2])  # the value is a bound parameter
    assert "laval" in lines[-1].lower()


def test_usage_errors_exit_2() -> None:
    """Unknown commands, missing arguments and bad options exit with 2."""
    assert cohorts("frobnicate").returncode == 2
    assert cohorts("check").returncode == 2
    assert cohorts("check", "--dialect", "oracle", "--sql", "customer.x = 1").returncode == 2
    assert cohorts().returncode == 2
    missing = cohorts("eval", "customer.x = 1")
    assert missing.returncode == 2 and "FILE" in missing.stderr


def test_help_and_version() -> None:
    """--help shows examples and exit codes; --version the package version."""
    result = cohorts("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "exit codes" in result.stdout
    assert "cohorts check" in cohorts("check", "--help").stdout
    assert cohorts("--version").stdout.startswith("cohorts ")


def test_eval_prints_matching_ids(customers_file: Path) -> None:
    """eval prints the ids of matching customers, one a line, in file order."""
    rule = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'
    result = cohorts("eval", rule, str(customers_file), "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["a1"]
    town = cohorts("eval", 'customer.city = "Saint-Jérôme"', str(customers_file), "--now", NOW)
    assert town.stdout.splitlines() == ["a1", "3"]
    count = cohorts("eval", 'customer.vehicle_model contains "escape"', str(customers_file), "--count")
    assert count.stdout == "3\n"


def test_eval_now_decides_relative_times(customers_file: Path) -> None:
    """The same rule gives other answers at another --now."""
    rule = "repair_order.closed.at within last 7 years"
    early = cohorts("eval", rule, str(customers_file), "--now", "2026-11-16")
    late = cohorts("eval", rule, str(customers_file), "--now", "2033-02-01")
    assert early.stdout.splitlines() == ["a1", "a4"]
    assert late.stdout.splitlines() == ["a1"]


def test_eval_tz_reads_calendar_words(tmp_path: Path) -> None:
    """--tz decides which day a naive time falls on."""
    path = write_lines(tmp_path / "c.jsonl", [{"id": 1, "events": [{"name": "note", "at": "2026-11-16T02:00"}]}])
    rule = "note.at.day = 16"
    assert cohorts("eval", rule, str(path), "--now", NOW).stdout == "1\n"
    # A naive time is read in --tz: 02:00 in Montréal is still the 16th there.
    assert cohorts("eval", rule, str(path), "--now", NOW, "--tz", "America/Montreal").stdout == "1\n"
    aware = write_lines(tmp_path / "d.jsonl", [{"id": 1, "events": [{"name": "note", "at": "2026-11-16T02:00+00:00"}]}])
    assert cohorts("eval", rule, str(aware), "--now", NOW, "--tz", "America/Montreal").stdout == ""
    assert cohorts("eval", rule, str(aware), "--tz", "Mars/Olympus").returncode == 2


def test_eval_explain(customers_file: Path) -> None:
    """--explain ID prints the explanation tree with the values compared."""
    result = cohorts("eval", 'customer.city != "Laval"', str(customers_file), "--explain", "a4", "--explain", "3")
    assert result.returncode == 0, result.stderr
    assert "a4 does not match" in result.stdout
    assert '[unknown] customer.city != "Laval"  (value: unknown' in result.stdout
    assert "3 matches" in result.stdout
    missing = cohorts("eval", "customer.city is known", str(customers_file), "--explain", "zz")
    assert missing.returncode == 1 and "no customer with id 'zz'" in missing.stderr


def test_eval_json_with_explanation(customers_file: Path) -> None:
    """--json prints matches, counts and explanations as data."""
    rule = 'customer.tags contains "vip" or customer.phone = "+1 514-555-0199"'
    result = cohorts("eval", rule, str(customers_file), "--now", NOW, "--json", "--explain", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["matches"] == ["a2", 3]
    assert (data["count"], data["customers"]) == (2, 4)
    assert data["now"] == NOW
    [explained] = data["explanations"]
    assert explained["id"] == 3 and explained["result"] is True
    assert [c["result"] for c in explained["children"]] == [None, True]
    assert explained["children"][1]["value"] == "+15145550199"


def test_eval_bad_lines_are_reported_with_numbers(tmp_path: Path) -> None:
    """Bad lines fail the command with their line numbers, or are skipped with --skip-bad."""
    path = write_lines(
        tmp_path / "bad.jsonl",
        [{"id": 1, "city": "Laval"}, "{not json", {"city": "Laval"}, "", {"id": 1}, {"id": 5, "events": "x"}],
    )
    result = cohorts("eval", 'customer.city = "Laval"', str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    for line, words in ((2, "not JSON"), (3, 'no "id"'), (5, "repeats line 1"), (6, '"events" is not a list')):
        assert f"{path}:{line}: " in result.stderr and words in result.stderr
    skipped = cohorts("eval", 'customer.city = "Laval"', str(path), "--skip-bad")
    assert skipped.returncode == 0
    assert skipped.stdout == "1\n"
    assert f"{path}:2: skipped" in skipped.stderr


def test_eval_data_and_rule_errors_exit_1(tmp_path: Path, customers_file: Path) -> None:
    """A missing file, a bad rule or a group condition are one-line errors with exit code 1."""
    gone = cohorts("eval", "customer.city is known", str(tmp_path / "nope.jsonl"))
    assert gone.returncode == 1 and "no such file" in gone.stderr
    bad_rule = cohorts("eval", "customer.city is", str(customers_file))
    assert bad_rule.returncode == 1 and "^" in bad_rule.stderr
    group = cohorts("eval", 'customer in group "VIP"', str(customers_file))
    assert group.returncode == 1 and 'group "VIP"' in group.stderr
    assert cohorts("eval", "customer.x = 1", str(customers_file), "--now", "soon").returncode == 2
    for result in (gone, bad_rule, group):
        assert "Traceback" not in result.stderr


def test_eval_reads_customers_from_stdin() -> None:
    """FILE - reads the JSON lines from standard input."""
    result = cohorts(
        "eval", "customer.vehicle_year >= 2019", "-", stdin='{"id": 1, "vehicle_year": "2020"}\n{"id": 2}\n'
    )
    assert result.returncode == 0
    assert result.stdout == "1\n"


def test_debug_shows_traceback() -> None:
    """--debug, anywhere on the line, adds the traceback to an error."""
    result = cohorts("check", "customer.city =", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuleSyntaxError" in result.stderr


def test_demo_runs_quickly(tmp_path: Path) -> None:
    """demo prints every scenario with a count and an explanation, and its files land in --dir."""
    result = cohorts("demo", "--dir", str(tmp_path), "--size", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "customer.`Date de renouvellement`.month = january" in result.stdout
    assert "Demo finished" in result.stdout
    assert (tmp_path / "customers.jsonl").exists()
    lines = (tmp_path / "customers.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 300


# -- the database of --db, as a cron job meets it ------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``cohorts ARGS`` in this process; the exit status, standard output and standard error."""
    from cohorts.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A SQLite database of three customers in Laval and Lévis, with a group Laval."""
    sql = pytest.importorskip("cohorts.sql")
    import cohorts

    path = tmp_path / "customers.db"
    repository = sql.SQLRepository(path)
    repository.upsert([cohorts.Customer(i, {"city": city}) for i, city in enumerate(["Laval", "Lévis", "Laval"])])
    cohorts.Groups(repository).create("Laval", 'customer.city = "Laval"')
    repository.close()
    return path


@pytest.mark.parametrize("url", ["postgresql://nobody@nohost/x", "notadb://x", "/nonexistent/dir/x.db"])
def test_a_bad_database_is_a_one_line_error(url: str) -> None:
    """A database that cannot be opened is a user error: one line and exit 1, or JSON on stdout with --json."""
    pytest.importorskip("sqlalchemy")
    result = cohorts("groups", "list", "--db", url)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "bug" not in result.stderr
    as_json = cohorts("report", "--db", url, "--json")
    assert as_json.returncode == 1
    error = json.loads(as_json.stdout)["error"]
    assert error["message"].startswith(("cannot open the database", "--db needs"))


def test_a_database_password_is_never_shown() -> None:
    """The URL in the message hides its password."""
    pytest.importorskip("sqlalchemy")
    result = cohorts("groups", "list", "--db", "postgresql://me:secret@nohost/x")
    assert result.returncode == 1
    assert "secret" not in result.stderr


def test_reading_commands_never_create_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """groups list/members/why, report and campaigns run/audience say a mistyped database does not exist."""
    pytest.importorskip("cohorts.sql")
    config = tmp_path / "campaigns.toml"
    config.write_text('[[campaigns]]\nname = "Hello"\n[[campaigns.actions]]\nkind = "points"\npoints = 1\n',
                      encoding="utf-8")
    missing = tmp_path / "custmers.db"
    for url in (str(missing), f"sqlite:///{missing}"):
        for command in (
            ["groups", "list"],
            ["groups", "members", "Laval"],
            ["groups", "why", "Laval", "1"],
            ["groups", "refresh"],
            ["report"],
            ["campaigns", "run", "--config", str(config)],
            ["campaigns", "audience", "Hello", "--config", str(config)],
        ):
            code, out, err = run(capsys, *command, "--db", url)
            assert (code, out) == (1, ""), command
            assert err == (
                f"error: cannot open the database {url}: it does not exist "
                "(check the path; cohorts import and cohorts groups create make a new database)\n"
            )
            assert not missing.exists()


def test_creating_commands_make_the_database_and_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """groups create and import make a missing SQLite file, with a note; a missing folder is an error."""
    pytest.importorskip("cohorts.sql")
    path = tmp_path / "new.db"
    code, out, err = run(capsys, "groups", "create", "VIP", "--db", f"sqlite:///{path}")
    assert code == 0 and out == "created group 'VIP': 0 member(s)\n"
    assert err == f"note: created the database {path}\n"
    assert path.exists()
    assert run(capsys, "groups", "create", "Other", "--db", str(path))[2] == ""  # it exists now
    nowhere = tmp_path / "nowhere" / "new.db"
    code, _, err = run(capsys, "groups", "create", "VIP", "--db", str(nowhere))
    assert code == 1 and f"the folder {nowhere.parent} does not exist" in err


def test_db_comes_from_cohorts_db_and_the_flag_wins(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db, COHORTS_DB names the database; --db wins over it; neither is a usage error."""
    monkeypatch.delenv("COHORTS_DB", raising=False)
    code, _, err = run(capsys, "groups", "list")
    assert code == 2 and "--db is required" in err and "COHORTS_DB" in err
    monkeypatch.setenv("COHORTS_DB", str(database))
    code, out, _ = run(capsys, "groups", "members", "Laval", "--json")
    assert code == 0 and [m["customer"] for m in json.loads(out)] == [0, 2]
    code, _, err = run(capsys, "groups", "list", "--db", str(tmp_path / "other.db"))
    assert code == 1 and "other.db: it does not exist" in err
    assert "COHORTS_DB" in cohorts("report", "--help").stdout


def test_members_limit_and_csv(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """groups members --limit N lists the first N by id; --format csv prints CSV; with --json it is a usage error."""
    code, out, _ = run(capsys, "groups", "members", "Laval", "--db", str(database), "--limit", "1")
    assert code == 0
    assert out == "customer  origins\n--------  -------\n       0  rules\n... and 1 more (--limit N to see more)\n"
    code, out, _ = run(capsys, "groups", "members", "Laval", "--db", str(database), "--format", "csv")
    assert code == 0 and out == "customer,origins\n0,rules\n2,rules\n"
    assert run(capsys, "groups", "add", "Laval", "2", "--db", str(database))[0] == 0
    code, out, _ = run(capsys, "groups", "members", "Laval", "--db", str(database), "--format", "csv", "--limit", "5")
    assert out == 'customer,origins\n0,rules\n2,"manual, rules"\n'
    code, out, _ = run(capsys, "groups", "members", "Laval", "--db", str(database), "--json", "--limit", "1")
    assert code == 0 and json.loads(out) == [{"customer": 0, "origins": ["rules"]}]
    code, out, _ = run(capsys, "groups", "members", "Laval", "--db", str(database), "--json", "--format", "csv")
    assert code == 2 and "choose one" in json.loads(out)["error"]["message"]
    assert run(capsys, "groups", "members", "Laval", "--db", str(database), "--limit", "0")[0] == 2


def test_tables_fit_the_terminal(
    database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal (or with COLUMNS), wide text columns are cut with an ellipsis; in a pipe nothing is cut."""
    description = "customers of the Laval branch, who get the newsletter of the branch and its invitations " * 3
    import cohorts
    from cohorts.sql import SQLRepository

    with SQLRepository(database) as repository:
        cohorts.Groups(repository).create("Long", 'customer.city = "Laval" or customer.city = "Lévis"', description)
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run(capsys, "groups", "list", "--db", str(database))
    assert code == 0 and description.strip() in out  # standard output is no terminal here
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run(capsys, "groups", "list", "--db", str(database))
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 100
    assert lines[0].split() == ["group", "members", "rule", "version", "rule", "description"]
    assert lines[3].startswith("Long         3             1  customer.city = ") and lines[3].endswith("…")
    monkeypatch.setenv("COLUMNS", "20")  # too narrow for every column: text is cut to 10 characters, no further
    code, out, _ = run(capsys, "groups", "list", "--db", str(database))
    assert code == 0 and "customer.…" in out and "customers…" in out


def test_report_measure_is_checked_against_the_schema(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt measure names the nearest event or field (exit 1); --schema declares custom ones."""
    db = ["report", "--db", str(database)]
    code, out, err = run(capsys, *db, "--measure", "sum(invoice.totl)")
    assert (code, out) == (1, "")
    assert err == (
        "error: unknown attribute 'invoice.totl'; did you mean 'invoice.total'?\n"
        "(declare custom events and fields with --schema FILE)\n"
    )
    code, _, err = run(capsys, *db, "--measure", "count(invoic)")
    assert code == 1 and "unknown event 'invoic'; did you mean 'invoice'?" in err
    code, _, err = run(capsys, *db, "--measure", "average(invoice.status)")
    assert code == 1 and "average(invoice.status) needs a number, and invoice.status is text" in err
    code, out, _ = run(capsys, *db, "--measure", "sum(invoice.totl)", "--json")
    assert code == 1 and json.loads(out)["error"]["suggestion"] == "invoice.total"
    assert run(capsys, *db, "--measure", "sum(time_entry.minutes)")[0] == 1
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"time_entry": {"minutes": "number"}}), encoding="utf-8")
    code, out, _ = run(capsys, *db, "--measure", "sum(time_entry.minutes)", "--schema", str(schema))
    assert code == 0 and "sum(time_entry.minutes)" in out
