"""Real exports import right: Shopify, Mailchimp, HubSpot, Salesforce, Google Contacts, Excel (issue 16).

The files under ``tests/fixtures/exports/`` are laid out as each vendor
writes them (``make_exports.py`` beside them writes them, and says what each
row must become); each is imported as CSV and as the workbook Excel makes of
it, with the guessed mapping, and every stored value is checked.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Customer
from cohorts.importers import guess_mapping, import_file, preview_file
from cohorts.imports.cells import date_order, read_flag, read_list, read_phone, split_emails, split_phones
from cohorts.repository import MemoryRepository
from cohorts.schema import default_schema

FIXTURES = Path(__file__).parent / "fixtures" / "exports"
_spec = importlib.util.spec_from_file_location("cohorts_tests_exports", FIXTURES / "make_exports.py")
assert _spec is not None and _spec.loader is not None
exports = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = exports  # dataclasses look their module up
_spec.loader.exec_module(exports)

SCHEMA = default_schema().add("customer", "total_spent", "number")  # a shop's schema: Shopify's Total Spent
LAYOUTS = {export.name: export for export in exports.exports()}
NAMES = list(LAYOUTS)


def _path(export: Any, form: str, tmp_path: Path) -> Path:
    if form == "csv":
        return FIXTURES / export.filename
    pytest.importorskip("openpyxl")
    return exports.write_xlsx(export, tmp_path / export.filename.replace(".csv", ".xlsx"))


def _text(cell: Any) -> str:
    return "" if cell is None else str(cell).lstrip("'")


def _stored(repository: MemoryRepository, export: Any) -> dict[str, Customer]:
    if export.key == "id":
        return {str(c.id): c for c in repository}
    return {str(c.attributes[export.key]).lower(): c for c in repository if export.key in c.attributes}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_files_are_what_the_script_writes(name: str) -> None:
    """The committed files are the script's output, byte for byte (encoding, BOM, line ends)."""
    export = LAYOUTS[name]
    assert (FIXTURES / export.filename).read_bytes() == export.data()


@pytest.mark.parametrize("form", ["csv", "xlsx"])
@pytest.mark.parametrize("name", NAMES)
def test_an_export_imports_with_the_guessed_mapping(name: str, form: str, tmp_path: Path) -> None:
    """The guessed mapping is the right one; every row is stored as it must be, or rejected for its reason."""
    export = LAYOUTS[name]
    repository = MemoryRepository(schema=SCHEMA, region="CA")
    report = import_file(_path(export, form, tmp_path), repository, group=name)
    assert report.mapping == export.mapping
    # Every data row is read and either imported or rejected; title and footer lines are reported, not imported.
    assert report.rows_read == len(export.rows)
    assert report.created + report.updated + report.merged + report.skipped + report.rejected == report.rows_read
    assert len(report.not_data) == export.not_data
    wanted = [e for e in export.expected if e.reject is None]
    refused = {e.key: e for e in export.expected if e.reject is not None}
    position = export.header.index(next(c for c, t in export.mapping.items() if t == f"customer.{export.key}"))
    keys = [_text(r.cells[position]) for r in report.rejects]
    got = {key if export.key == "id" else key.lower(): r for key, r in zip(keys, report.rejects, strict=True)}
    assert set(got) == set(refused)
    for key, reject in got.items():
        assert refused[key].reject in reject.reason and reject.column == refused[key].column
    stored = _stored(repository, export)
    assert len(repository) == len(stored) == len(wanted) == report.created
    for expect in wanted:
        assert stored[expect.key].attributes == expect.attributes, expect.key


def test_phone_extensions_are_kept_in_every_spelling() -> None:
    """x123, ext. 45, poste 204, #12: the number in E.164, the extension beside it."""
    spellings = ["(514) 555-0101 x123", "+1 514-555-0101 ext. 45", "514 555-0101 poste 204", "514-555-0101 #12",
                 "514.555.0101 extension 7", "514 555 0101 p. 33"]
    assert [read_phone(s, "CA") for s in spellings] == [
        ("+15145550101", e) for e in ("123", "45", "204", "12", "7", "33")
    ]


def test_cells_with_several_values_are_split() -> None:
    """Google's ' ::: ', slashes, semicolons; a short part does not split a number."""
    assert split_phones("+1 514-555-0101 ::: +1 438-555-0102") == ["+1 514-555-0101", "+1 438-555-0102"]
    assert split_phones("514 555 0101 ou 450 555 0102") == ["514 555 0101", "450 555 0102"]
    assert split_emails("a@example.com; b@example.org") == ["a@example.com", "b@example.org"]
    assert read_list('"VIP","Newsletter"') == ["VIP", "Newsletter"]
    assert read_list("VIP; Fidèle | Printemps 2026") == ["VIP", "Fidèle", "Printemps 2026"]
    assert read_list("* myContacts ::: * starred ::: Clients") == ["myContacts", "starred", "Clients"]


def test_consent_columns_read_straight_or_inverted() -> None:
    """Opt-outs invert; state words and dates read as what they say; bad words are errors."""
    assert [read_flag(v) for v in ("yes", "Oui", "1", "TRUE", "x", "subscribed", "pending")] == [
        True, True, True, True, True, True, False,
    ]
    assert [read_flag(v, inverted=True) for v in ("1", "0", "true", "unsubscribed", "2024-03-04 15:22:10")] == [
        False, True, False, False, False,
    ]
    with pytest.raises(ValueError, match="not yes or no"):
        read_flag("peut-être")
    assert guess_mapping(["Email", "Email Opt Out", "Accepts SMS Marketing", "Unsubscribed", "Do Not Call"]) == {
        "Email": "customer.email",
        "Email Opt Out": "not customer.email_subscribed",
        "Accepts SMS Marketing": "customer.sms_subscribed",
        "Unsubscribed": "not customer.subscribed",
        "Do Not Call": None,  # the SMS consent has its column: never two columns for one attribute
    }


def test_an_opt_out_is_never_undone_by_an_import(tmp_path: Path) -> None:
    """A stored opt-out stays, whatever the policy; an opt-out in the file wins over a stored opt-in."""
    repository = MemoryRepository([
        Customer("A", {"email": "a@example.com", "email_subscribed": False}),
        Customer("B", {"email": "b@example.com", "email_subscribed": True, "sms_subscribed": True}),
    ])
    path = tmp_path / "consent.csv"
    path.write_text("ID,Email,Accepts Email Marketing,Accepts SMS Marketing\nA,a@example.com,yes,yes\n"
                    "B,b@example.com,no,\n", encoding="utf-8")
    for policy in ("fill", "overwrite"):
        import_file(path, repository, policy=policy)
        assert repository.get("A").attributes["email_subscribed"] is False
        assert repository.get("A").attributes["sms_subscribed"] is True  # another channel: its own consent
        assert repository.get("B").attributes["email_subscribed"] is False
        assert repository.get("B").attributes["sms_subscribed"] is True


def test_dates_in_one_column_read_in_one_order(tmp_path: Path) -> None:
    """03/04/2026 beside 13/04/2026 is the 3rd of April; a column that cannot tell says so."""
    path = tmp_path / "dates.csv"
    path.write_text("ID,Created\n1,03/04/2026\n2,13/04/2026\n3,2026-05-01\n", encoding="utf-8")
    repository = MemoryRepository()
    report = import_file(path, repository)
    assert [repository.get(i).attributes["created_at"] for i in ("1", "2", "3")] == [
        dt.datetime(2026, 4, 3), dt.datetime(2026, 4, 13), dt.datetime(2026, 5, 1)
    ]
    assert report.notes == []
    path.write_text("ID,Created\n1,03/04/2026\n2,05/06/2026\n", encoding="utf-8")
    report = import_file(path, MemoryRepository(), day_first=True)
    assert [str(n) for n in report.notes] == [
        "'Created': the order of day and month cannot be told from the values (such as '03/04/2026'): read day first"
    ]
    path.write_text("ID,Created\n1,13/04/2026\n2,14/04/2026\n3,04/15/2026\n", encoding="utf-8")
    report = import_file(path, MemoryRepository())
    assert report.rejected == 1
    assert "'04/15/2026' is month first, but the column's other dates are day first" in report.rejects[0].reason
    assert date_order("4/15/26 9:30 AM") == "month"


def test_a_bad_cell_can_be_left_out_of_its_row(tmp_path: Path) -> None:
    """on_bad_cell="skip_cell": an invalid phone beside a valid email imports the rest, and says so."""
    path = tmp_path / "clients.csv"
    path.write_text("Email,Phone,Email Opt Out\na@example.com,12,0\nb@example.com,514 555 0101,peut-être\n",
                    encoding="utf-8")
    default = import_file(path, MemoryRepository())
    assert (default.created, default.rejected) == (0, 2)
    repository = MemoryRepository()
    report = import_file(path, repository, on_bad_cell="skip_cell")
    assert (report.created, report.rejected) == (1, 1)  # a bad consent still rejects its row
    assert [c.attributes for c in repository] == [{"email": "a@example.com", "email_subscribed": True}]
    assert [(c.line, c.column) for c in report.skipped_cells] == [(2, "Phone")]
    assert report.rejects[0].column == "Email Opt Out"
    with pytest.raises(ValueError, match="on_bad_cell"):
        import_file(path, repository, on_bad_cell="drop")  # type: ignore[arg-type]


def test_leading_apostrophes_are_text_markers(tmp_path: Path) -> None:
    """Shopify's '7210... and '+1514... import as the workbook's 7210... and +1514...; 'Tis keeps its own."""
    path = tmp_path / "shopify.csv"
    path.write_text("Customer ID,Phone,Last Name\n'7210448301122,'+15145550101,'Tis\n", encoding="utf-8")
    repository = MemoryRepository()
    import_file(path, repository)
    assert repository.get("7210448301122").attributes == {"phone": "+15145550101", "last_name": "'Tis"}


def test_the_preview_shows_what_the_import_will_do() -> None:
    """A preview of the Google export guesses the values, not their labels, and says what it paired."""
    preview = preview_file(FIXTURES / "google_contacts.csv", rows=3)
    assert preview.guessed["E-mail 1 - Value"] == "customer.email" and preview.guessed["E-mail 1 - Type"] is None
    assert any("labels 'Phone 1 - Value'" in str(note) for note in preview.notes)
    assert "note: 'Name': also reads as customer.last_name, which 'Family Name' fills: skipped" in str(preview)


def test_the_report_says_what_was_done() -> None:
    """Multi-value cells, labels, extensions and footers are in the report's notes, with counts."""
    report = import_file(FIXTURES / "google_contacts.csv", MemoryRepository(schema=SCHEMA, region="CA"))
    text = str(report)
    assert "cells held several emails: the first kept, the others in customer.other_emails" in text
    assert "labels named the mobile number: kept in customer.mobile_phone" in text
    sf = import_file(FIXTURES / "salesforce_contacts_report.csv", MemoryRepository(region="CA"))
    assert "not data, lines " in str(sf) and "a footer after the last row" in str(sf)
    assert "extensions kept in customer.phone_extension" in str(sf)


# -- CSV and workbook: the same customers -------------------------------------------------------------------

_NAMES = st.text(st.sampled_from("abcdeéèçÉ -"), min_size=1, max_size=8).filter(lambda s: s.strip(" -"))
_ROWS = st.lists(
    st.tuples(
        _NAMES,
        st.integers(100, 199).map(lambda n: f"+1514555{n:04d}"),
        st.sampled_from([0, 2, 4, 6]),
        st.dates(dt.date(2020, 1, 1), dt.date(2026, 12, 31)),
        st.booleans(),
        st.lists(st.sampled_from(["VIP", "Fidèle", "Newsletter"]), max_size=2, unique=True),
        st.integers(0, 99999).map(lambda n: f"{n / 100:.2f}"),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS, day_first=st.booleans())
def test_a_csv_and_its_workbook_import_the_same_customers(
    tmp_path: Path, rows: list[tuple[Any, ...]], day_first: bool
) -> None:
    """The same data as CSV and as the workbook Excel makes of it give the same customers."""
    header = ["Customer ID", "Last Name", "Phone", "Created", "Accepts Email Marketing", "Tags", "Total Spent"]
    lines = [header]
    for n, (name, phone, style, day, flag, tags, spent) in enumerate(rows):
        created = day.strftime("%d/%m/%Y" if day_first else "%m/%d/%Y")
        written = exports.nanp(phone, style) + (" x12" if style == 2 else "")
        lines.append([f"'{1000 + n}", name, written, created, ["no", "yes"][flag], ", ".join(tags), spent])
    text = "".join(",".join(f'"{c}"' if "," in c else c for c in line) + "\n" for line in lines)
    export = exports.Export("hypothesis", "data.csv", header, [], [], {}, day_first=day_first)
    csv_path = tmp_path / "data.csv"
    csv_path.write_text(text, encoding="utf-8")
    pytest.importorskip("openpyxl")
    export.text = lambda: text  # type: ignore[method-assign]
    xlsx_path = exports.write_xlsx(export, tmp_path / "data.xlsx")
    found = []
    for path in (csv_path, xlsx_path):
        repository = MemoryRepository(schema=SCHEMA, region="CA")
        report = import_file(path, repository, day_first=day_first)
        assert report.rejected == 0, report.rejects
        found.append({c.id: c.attributes for c in repository})
    assert found[0] == found[1]
    assert len(found[0]) == len(rows)


def test_the_fixture_reader_of_excel_values() -> None:
    """The workbook helper types cells as Excel does (a check of the test's own tool)."""
    value = exports.excel_value
    assert value("'+15145550101") == "+15145550101" and value("+15145550101") == 15145550101
    assert value("13/04/2026", day_first=True) == dt.datetime(2026, 4, 13)
    assert value("1\u00a0234,56", decimal_comma=True) == 1234.56 and value("true") is True
    assert list(csv.reader(["a,b"])) == [["a", "b"]]


def test_long_files_tell_the_date_order_from_all_their_rows(tmp_path: Path) -> None:
    """Past the first rows: undecided columns are read whole; decided ones reject a later date of the other order."""
    unsure = [f"{n},0{1 + n % 9}/0{1 + (n + 1) % 9}/2026" for n in range(300)] + ["300,25/12/2026", "301,03/04/2026"]
    path = tmp_path / "long.csv"
    path.write_text("ID,Created\n" + "\n".join(unsure) + "\n", encoding="utf-8")
    repository = MemoryRepository()
    report = import_file(path, repository)
    assert report.rejected == 0 and report.notes == []
    assert repository.get("301").attributes["created_at"] == dt.datetime(2026, 4, 3)  # day first, told by line 302
    told = [f"{n},{13 + n % 15}/04/2026" for n in range(300)] + ["300,04/13/2026"]
    path.write_text("ID,Created\n" + "\n".join(told) + "\n", encoding="utf-8")
    report = import_file(path, MemoryRepository())
    assert [r.line for r in report.rejects] == [302] and "is month first" in report.rejects[0].reason


def test_a_mailchimp_unsubscribed_export_imports_nobody_as_contactable(tmp_path: Path) -> None:
    """UNSUB_TIME (a time: it happened) is an email opt-out; OPTIN_TIME and the UNSUB_* details are not consents."""
    header = ("Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,"
              "LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,"
              "UNSUB_REASON,UNSUB_REASON_OTHER,LAST_CHANGED,LEID,EUID,NOTES,TAGS")
    rows = [
        "ana@example.com,Ana,Roy,2,2024-03-04 15:22:10,,2024-03-04 15:24:01,,,,,,,,,2025-06-01 08:00:00,"
        "Infolettre juin,8c1a2b,NORMAL,,2025-06-01 08:00:00,1,a1,,",
        "bo@example.com,Bo,Côté,3,2024-05-06 10:00:00,,2024-05-06 10:01:00,,,,,,,,,2025-07-02 09:30:00,"
        "Infolettre juillet,8c1a2c,SPAM,,2025-07-02 09:30:00,2,a2,,",
    ]
    path = tmp_path / "unsubscribed_members_export_8c1a.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    repository = MemoryRepository()
    report = import_file(path, repository)
    assert report.mapping["UNSUB_TIME"] == "not customer.email_subscribed"
    assert [report.mapping[c] for c in ("OPTIN_TIME", "UNSUB_REASON", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID")] == [
        None, None, None, None,
    ]
    assert report.rejected == 0
    assert [c.attributes.get("email_subscribed") for c in repository] == [False, False]
    assert not any(c.attributes.get("subscribed") for c in repository)
