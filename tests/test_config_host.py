"""The ``[host]`` section of the configuration: plain data read without SQLAlchemy, a HostTable built from it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from cohorts.config import ConfigError, HostEventsSpec, HostSpec, JsonFieldSpec, parse_config
from cohorts.schema import AttributeType, default_schema

FULL = """
[host]
table = "crm.clients"
id = "client_no"
updated_at = "modified_at"
tz = "America/Montreal"
region = "ca"
state_prefix = "crm_cohorts_"

[host.columns]
city = "town"
cell = "mobile"
tags = { column = "extra", keys = ["tags"] }
channel = { column = "extra", keys = ["prefs", "channel"] }

[host.schema]
customer = { cell = "phone" }
visit = { room = "text" }

[host.events.appointment]
table = "appointments"
customer = "client_no"
at = "starts_at"
fields = { service = "service" }

[host.events.repair_order.closed]
table = "repair_orders"
customer = "client_no"
at = "closed_at"
where = { status = ["closed", "invoiced"], deleted = false, since = 2020-01-01 }
fields = { total = "amount", advisor = { column = "details", keys = ["advisor"] } }
updated_at = "modified_at"

[host.events."repair_order.opened"]
table = "repair_orders"
customer = "client_no"
at = "opened_at"
"""

MINIMAL = '[host]\ntable = "clients"\nid = "client_no"\ncolumns = { city = "town" }\n'


def test_the_host_section_is_plain_data() -> None:
    """Every key of HostTable, HostEvents and JsonField is read as it is written; nested and quoted tables
    both name dotted categories; region is upper-cased and the schema extends the default one."""
    host = parse_config(FULL, "host.toml").host
    assert host == HostSpec(
        "crm.clients",
        "client_no",
        {
            "city": "town",
            "cell": "mobile",
            "tags": JsonFieldSpec("extra", ("tags",)),
            "channel": JsonFieldSpec("extra", ("prefs", "channel")),
        },
        {
            "appointment": HostEventsSpec("appointments", "client_no", "starts_at", fields={"service": "service"}),
            "repair_order.closed": HostEventsSpec(
                "repair_orders",
                "client_no",
                "closed_at",
                where={"status": ("closed", "invoiced"), "deleted": False, "since": dt.date(2020, 1, 1)},
                fields={"total": "amount", "advisor": JsonFieldSpec("details", ("advisor",))},
                updated_at="modified_at",
            ),
            "repair_order.opened": HostEventsSpec("repair_orders", "client_no", "opened_at"),
        },
        updated_at="modified_at",
        tz="America/Montreal",
        region="CA",
        schema=default_schema().add("customer", "cell", "phone").add("visit", "room", "text"),
        state_prefix="crm_cohorts_",
    )
    assert host.source == "host.toml"
    assert host.events["repair_order.closed"].place == "host.events.repair_order.closed"
    assert host.events["repair_order.opened"].place == 'host.events."repair_order.opened"'


def test_without_a_host_section_there_is_no_host() -> None:
    """A file with no [host] keeps customers in cohorts' own tables; the defaults are HostTable's."""
    assert parse_config('[[groups]]\nname = "VIP"\n').host is None
    host = parse_config(MINIMAL).host
    assert host is not None
    assert (host.tz, host.region, host.schema, host.updated_at, host.events, host.state_prefix) == (
        "UTC", "US", None, None, {}, "cohorts_"
    )


def test_host_table_builds_the_mapping() -> None:
    """host_table() is the HostTable the section declares, with HostEvents and JsonFields."""
    sql = pytest.importorskip("cohorts.sql")
    host = parse_config(FULL).host
    assert host is not None
    table = host.host_table()
    assert table == sql.HostTable(
        "crm.clients",
        id="client_no",
        columns={"city": "town", "cell": "mobile", "tags": sql.JsonField("extra", "tags"),
                 "channel": sql.JsonField("extra", "prefs", "channel")},
        schema=host.schema,
        tz="America/Montreal",
        region="CA",
        updated_at="modified_at",
        events={
            "appointment": sql.HostEvents("appointments", customer="client_no", at="starts_at",
                                          fields={"service": "service"}),
            "repair_order.closed": sql.HostEvents(
                "repair_orders", customer="client_no", at="closed_at",
                where={"status": ["closed", "invoiced"], "deleted": False, "since": dt.date(2020, 1, 1)},
                fields={"total": "amount", "advisor": sql.JsonField("details", "advisor")},
                updated_at="modified_at"),
            "repair_order.opened": sql.HostEvents("repair_orders", customer="client_no", at="opened_at"),
        },
    )
    assert table.schema is not None and table.schema.categories["customer"]["cell"] is AttributeType.PHONE


def _fails(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        host = parse_config(text, "host.toml").host
        assert host is not None
        host.host_table()
    return caught.value


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("[hots]\n", "hots", "unknown key; did you mean 'host'?"),
        ('host = "clients"\n', "host", "expected a table, got str"),
        (MINIMAL + 'update_at = "m"\n', "host.update_at", "unknown key; did you mean 'updated_at'?"),
        ('[host]\ntable = "clients"\ncolumns = {}\n', "host", "needs 'id': the customers table, its id column and"
         ' the columns, e.g. table = "clients", id = "client_no", columns = { city = "town" }'),
        (MINIMAL.replace('"client_no"', "3"), "host.id", "expected a non-blank string, got 3"),
        (MINIMAL.replace('"clients"', '"  "'), "host.table", "expected a non-blank string, got '  '"),
        (MINIMAL.replace('"town"', "true"), "host.columns.city",
         'expected a column name or { column = "...", keys = [...] }, got True'),
        (MINIMAL.replace('"town"', '{ column = "extra", key = ["a"] }'), "host.columns.city.key",
         "unknown key; did you mean 'keys'?"),
        (MINIMAL.replace('"town"', '{ column = "extra" }'), "host.columns.city",
         'a JSON field needs a column and its keys: { column = "extra", keys = ["tags"] }'),
        (MINIMAL.replace('"town"', '{ column = "extra", keys = [1] }'), "host.columns.city.keys",
         'expected a non-empty array of keys, such as ["prefs", "channel"], got [1]'),
        (MINIMAL + 'tz = "Mars/Olympus"\n', "host.tz", "unknown time zone 'Mars/Olympus'"),
        (MINIMAL + 'region = "XX"\n', "host.region", "unknown region 'XX' (a two-letter country code such as 'US',"
         " 'CA', 'FR')"),
        (MINIMAL + 'schema = { customer = { cell = "fone" } }\n', "host.schema",
         "'fone' is not a valid AttributeType (types: text, number, boolean, date, datetime, phone, list)"),
        (MINIMAL + 'schema = { customer = "phone" }\n', "host.schema.customer", "expected a table, got str"),
        (MINIMAL + "events = 3\n", "host.events", "expected a table, got int"),
        (MINIMAL + '[host.events.visit]\ntable = "visits"\ncustomer = "c"\ntime = "at"\n', "host.events.visit.time",
         "unknown key (allowed: at, customer, fields, table, updated_at, where)"),
        (MINIMAL + '[host.events.visit]\ntable = "visits"\ncustomer = "c"\n', "host.events.visit",
         "needs 'at': the events table, its customer column and its time column, e.g. table = \"appointments\","
         ' customer = "client_no", at = "starts_at"'),
        (MINIMAL + '[host.events.visit]\ntable = "v"\ncustomer = "c"\nat = "a"\nwhere = { s = 10:30:00 }\n',
         "host.events.visit.where.s", "a filter value is text, a number, a boolean, a date or an array of them,"
         " not datetime.time(10, 30)"),
        (MINIMAL + '[host.events.visit]\ntable = "v"\ncustomer = "c"\nat = "a"\nwhere = { s = [[1]] }\n',
         "host.events.visit.where.s", "a filter value is text, a number, a boolean, a date or an array of them,"
         " not [1]"),
        (MINIMAL + '[host.events.visit]\ntable = "v"\ncustomer = "c"\nat = "a"\nfields = { "a b" = 4 }\n',
         'host.events.visit.fields."a b"', 'expected a column name or { column = "...", keys = [...] }, got 4'),
        (MINIMAL + '[host.events."visit.done"]\ntable = "v"\ncustomer = "c"\nat = "a"\n'
         '[host.events.visit.done]\ntable = "v"\ncustomer = "c"\nat = "a"\n', "host.events.visit.done",
         "the events 'visit.done' are declared twice"),
    ],
)
def test_mistakes_are_config_errors_naming_the_place(text: str, where: str, reason: str) -> None:
    """Each mistake is a ConfigError with the file, the place in it and why, read without a database."""
    error = _fails(text)
    assert (error.source, error.where, error.reason) == ("host.toml", where, reason)
    assert str(error) == f"host.toml: {where}: {reason}"


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        (MINIMAL.replace('"clients"', '"my clients"'), "host",
         "'my clients' is not a plain SQL name (letters, digits, _; optionally schema.table)"),
        (MINIMAL.replace('"town"', '"town; drop"'), "host",
         "attribute 'city' of clients: 'town; drop' is not a plain SQL column name (letters, digits and _)"),
        (MINIMAL.replace('"town"', '{ column = "extra x", keys = ["a"] }'), "host.columns.city",
         "JsonField: 'extra x' is not a plain SQL column name (letters, digits and _)"),
        (MINIMAL + '[host.events.customer]\ntable = "v"\ncustomer = "c"\nat = "a"\n', "host",
         "'customer' is not an event category: 'customer' names the customer's attributes"),
        (MINIMAL + '[host.events.visit]\ntable = "v"\ncustomer = "c"\nat = "a-b"\n', "host.events.visit",
         "the time column of v: 'a-b' is not a plain SQL column name (letters, digits and _)"),
        (MINIMAL + '[host.events.visit]\ntable = "v"\ncustomer = "c"\nat = "a"\nfields = { n = { column = "d",'
         ' keys = [""] } }\n', "host.events.visit.fields.n",
         "JsonField('d'): a key is non-empty text without NUL or lone surrogate, not ''"),
    ],
)
def test_what_the_host_table_refuses_names_the_place(text: str, where: str, reason: str) -> None:
    """The names HostTable, HostEvents and JsonField refuse are ConfigErrors at the entry that holds them."""
    pytest.importorskip("cohorts.sql")
    error = _fails(text)
    assert (error.where, error.reason) == (where, reason)


def test_the_host_section_is_read_without_sqlalchemy() -> None:
    """The sql extra is optional: the file is read without SQLAlchemy, and only host_table() needs it."""
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "from cohorts.config import parse_config\n"
        f"host = parse_config({MINIMAL!r}).host\n"
        "print(host.columns)\n"
        "try:\n"
        "    host.host_table()\n"
        "except ModuleNotFoundError as error:\n"
        "    print('needs', error.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'city': 'town'}\nneeds sqlalchemy\n"
