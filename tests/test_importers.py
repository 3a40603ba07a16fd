"""Importing customers from CSV and Excel files (issue 5)."""

from __future__ import annotations

import csv
import datetime as dt
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Customer, Event
from cohorts.importers import (
    ImportFileError,
    ImportReport,
    InvalidValue,
    MappingError,
    Progress,
    Reject,
    guess_mapping,
    guess_target,
    import_file,
    normalise_email,
    normalise_number,
    normalise_phone,
    normalise_time,
    open_table,
    preview_file,
    sniff_delimiter,
)
from cohorts.repository import MemoryRepository
from cohorts.schema import AttributeType, default_schema
from cohorts.values import to_phone

CLIENTS = (
    "Prénom,Nom,Cell,Courriel,Ville\n"
    "Élise,Roy,514 555 0101,elise@example.com,Laval\n"
    "Marc,Tremblay,(514) 555-0102,marc@example.com,Montréal\n"
)


def write(tmp_path: Path, text: str, name: str = "clients.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file))


def by_phone(repository: Any) -> dict[str, Customer]:
    return {c.attributes["phone"]: c for c in repository if "phone" in c.attributes}


def _sql_repository(tmp_path: Path) -> Any:
    sql = importlib.import_module("cohorts.sql")
    return sql.SQLRepository(f"sqlite:///{tmp_path / 'customers.db'}")


REPOSITORIES: dict[str, Callable[[Path], Any]] = {
    "memory": lambda _: MemoryRepository(),
    "sqlite": _sql_repository,
}


@pytest.fixture(params=[*sorted(REPOSITORIES), pytest.param("postgresql", marks=pytest.mark.postgres)])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "postgresql":
        sql = importlib.import_module("cohorts.sql")
        repo = sql.SQLRepository(request.getfixturevalue("postgres_engine"))
    else:
        repo = REPOSITORIES[request.param](tmp_path)
    yield repo
    close = getattr(repo, "close", None)
    if callable(close):
        close()


# -- reading files -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_encodings_read_the_same_accents(tmp_path: Path, encoding: str) -> None:
    """UTF-8 with or without a BOM and Windows-1252 files give the same cells."""
    path = write(tmp_path, CLIENTS, encoding=encoding)
    with open_table(path) as table:
        assert table.columns == ("Prénom", "Nom", "Cell", "Courriel", "Ville")
        rows = list(table)
    assert rows[0].cells[0] == "Élise" and rows[1].cells[4] == "Montréal"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    """Comma, semicolon and tab files are told apart without being told."""
    text = "Nom{d}Montant{d}Ville\nRoy{d}\"12,5\"{d}Laval\nCôté{d}3{d}Lévis\n".replace("{d}", delimiter)
    with open_table(write(tmp_path, text)) as table:
        assert table.delimiter == delimiter
        assert [r.cells for r in table] == [("Roy", "12,5", "Laval"), ("Côté", "3", "Lévis")]


def test_sniffing_prefers_the_consistent_split() -> None:
    """A semicolon file with decimal commas is read as semicolon-separated."""
    assert sniff_delimiter("nom;montant\nA;1,5\nB;2,5\n") == ";"
    assert sniff_delimiter("a,b,c\n1,2,3\n") == ","
    assert sniff_delimiter("only\none\n") == ","


def test_delimiter_can_be_forced(tmp_path: Path) -> None:
    """An explicit delimiter wins over the sniffed one."""
    path = write(tmp_path, "a;b,c\n1;2,3\n")
    with open_table(path, delimiter=",") as table:
        assert table.columns == ("a;b", "c")


def test_quoted_newlines_count_their_lines(tmp_path: Path) -> None:
    """A quoted cell over several lines keeps its line breaks, and later rows keep their true line."""
    text = 'Nom,Notes,Cell\nRoy,"ligne 1\nligne 2\nligne 3",514 555 0101\nCôté,,123\n'
    report = import_file(write(tmp_path, text), MemoryRepository())
    assert report.rejects == [Reject(5, "Cell", report.rejects[0].reason)]
    with open_table(write(tmp_path, text)) as table:
        assert [r.line for r in table] == [2, 5]


def test_crlf_files_count_lines_once(tmp_path: Path) -> None:
    """Windows line ends count one line each."""
    text = "Nom,Cell\r\nRoy,514 555 0101\r\nCôté,abc\r\n"
    report = import_file(write(tmp_path, text), MemoryRepository())
    assert [r.line for r in report.rejects] == [3]


def test_trailing_blank_rows_and_columns_are_ignored(tmp_path: Path) -> None:
    """Empty columns at the right and empty rows at the end are not data."""
    text = "Nom,Cell,,\nRoy,514 555 0101,,\n,,,\n\n,,,\n"
    with open_table(write(tmp_path, text)) as table:
        assert table.columns == ("Nom", "Cell")
        assert [r.cells for r in table] == [("Roy", "514 555 0101")]
    report = import_file(write(tmp_path, text), MemoryRepository())
    assert (report.rows_read, report.created, report.rejected) == (1, 1, 0)


def test_a_value_beyond_the_last_column_is_rejected(tmp_path: Path) -> None:
    """A row longer than the header is reported, not silently cut."""
    report = import_file(write(tmp_path, "Nom,Cell\nRoy,514 555 0101,oops\n"), MemoryRepository())
    assert report.rejected == 1 and report.rejects[0].line == 2 and "beyond the last column" in report.rejects[0].reason


def test_unsupported_files_are_clear_errors(tmp_path: Path) -> None:
    """Missing files, old .xls files and unknown types raise ImportFileError."""
    with pytest.raises(ImportFileError, match="no such file"):
        open_table(tmp_path / "missing.csv")
    with pytest.raises(ImportFileError, match=r"\.xls format"):
        open_table(write(tmp_path, "x", "old.xls"))
    with pytest.raises(ImportFileError, match="unsupported file type"):
        open_table(write(tmp_path, "x", "data.json"))


# -- Excel -----------------------------------------------------------------------------


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    """A workbook as people send them: a title sheet first, numbers typed as numbers, real dates."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Clients"
    first.append(["Prénom", "Mobile", "Rendez-vous", "Année"])
    first.append(["Élise", 5145550101, dt.datetime(2026, 3, 4, 10, 30), 2019])
    first.append([None, None, None, None])
    first.append(["Marc", "450-555-0102", "04/03/2026", 2021.0])
    first.append(["Zoé", "n/a", None, None])
    other = book.create_sheet("Autres")
    other.append(["Courriel"])
    other.append(["zoe@example.com"])
    path = tmp_path / "clients.xlsx"
    book.save(path)
    return path


def test_xlsx_first_sheet(workbook: Path) -> None:
    """The first sheet is read with sheet row numbers, typed cells and real dates."""
    repository = MemoryRepository()
    report = import_file(workbook, repository, day_first=True, region="CA")
    assert (report.rows_read, report.created, report.rejected) == (3, 2, 1)
    assert report.rejects[0].line == 5 and report.rejects[0].column == "Mobile"
    customers = by_phone(repository)
    assert customers["+15145550101"].attributes["vehicle_year"] == 2019
    assert customers["+15145550101"].events == (Event("appointment", dt.datetime(2026, 3, 4, 10, 30)),)
    assert customers["+14505550102"].events[0].at == dt.datetime(2026, 3, 4)
    assert report.sheet == "Clients"


def test_xlsx_named_sheet(workbook: Path) -> None:
    """A named sheet is read instead of the first; a missing one lists those that exist."""
    repository = MemoryRepository()
    report = import_file(workbook, repository, sheet="autres")
    assert report.created == 1 and [c.attributes for c in repository] == [{"email": "zoe@example.com"}]
    with pytest.raises(ImportFileError, match=r"no sheet named 'Nope'.*Clients"):
        import_file(workbook, repository, sheet="Nope")


def test_xlsx_rejects_write_back_as_text(workbook: Path, tmp_path: Path) -> None:
    """Rejected workbook rows are written with their cells as text."""
    report = import_file(workbook, MemoryRepository())
    report.write_rejects(tmp_path / "rejects.csv")
    rows = read_rows(tmp_path / "rejects.csv")
    assert rows[0] == ["Prénom", "Mobile", "Rendez-vous", "Année", "Import error"]
    assert rows[1][:2] == ["Zoé", "n/a"] and rows[1][4].startswith("line 5: Mobile:")


# -- headers and guesses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ("Cell", "customer.mobile_phone"),
        ("Mobile", "customer.mobile_phone"),
        ("Téléphone", "customer.phone"),
        ("TEL.", "customer.phone"),
        ("Courriel", "customer.email"),
        ("E-mail", "customer.email"),
        ("Adresse courriel", "customer.email"),
        ("Prénom", "customer.first_name"),
        ("First Name", "customer.first_name"),
        ("Nom", "customer.last_name"),
        ("Ville", "customer.city"),
        ("Code postal", "customer.postal_code"),
        ("Customer ID", "customer.id"),
        ("No client", "customer.id"),
        ("vehicle_model", "customer.vehicle_model"),
        ("appointment.at", "appointment.at"),
        ("Date du rendez-vous", "appointment.at"),
        ("Import error", None),
        ("Notes", None),
        ("Couleur préférée", None),
        ("", None),
    ],
)
def test_guess_target(header: str, target: str | None) -> None:
    """Common English and French headers are recognised whatever their accents and case."""
    assert guess_target(header) == target


def test_guess_mapping_gives_a_target_once() -> None:
    """A lone mobile column is the phone; two columns never get the same target, but for lists."""
    assert guess_mapping(["Cell", "Courriel"]) == {"Cell": "customer.phone", "Courriel": "customer.email"}
    assert guess_mapping(["Tél.", "Cellulaire", "Mobile"]) == {
        "Tél.": "customer.phone",
        "Cellulaire": "customer.mobile_phone",
        "Mobile": "customer.other_phones",
    }
    assert guess_mapping(["Nom", "Name"]) == {"Nom": "customer.last_name", "Name": None}


def test_preview_shows_rows_and_guesses(tmp_path: Path) -> None:
    """The preview has the first rows, their lines and the guessed mapping; nothing is imported."""
    text = CLIENTS + "Zoé,Côté,450 555 0103,zoe@example.com,Lévis\n"
    preview = preview_file(write(tmp_path, text), rows=2)
    assert preview.columns == ("Prénom", "Nom", "Cell", "Courriel", "Ville")
    assert preview.rows == (
        ("Élise", "Roy", "514 555 0101", "elise@example.com", "Laval"),
        ("Marc", "Tremblay", "(514) 555-0102", "marc@example.com", "Montréal"),
    )
    assert preview.lines == (2, 3)
    assert preview.guessed["Cell"] == "customer.phone" and preview.guessed["Courriel"] == "customer.email"
    assert "Cell -> customer.phone" in str(preview)


def test_preview_without_header_guesses_from_values(tmp_path: Path) -> None:
    """Without a header row columns are positions, guessed from what they hold."""
    text = "Roy,514 555 0101,elise@example.com\nCôté,450 555 0103,zoe@example.com\n"
    preview = preview_file(write(tmp_path, text), header=False)
    assert preview.columns == (0, 1, 2)
    assert preview.guessed == {0: None, 1: "customer.phone", 2: "customer.email"}
    assert preview.lines == (1, 2)
    assert preview_file(write(tmp_path, text), first_row_is_header=False) == preview


def test_no_header_import_maps_positions(tmp_path: Path) -> None:
    """With header=False the mapping uses 0-based positions and the first row is data."""
    repository = MemoryRepository()
    text = "Roy,514 555 0101\nCôté,450 555 0103\n"
    report = import_file(write(tmp_path, text), repository, header=False, mapping={0: "customer.last_name"})
    assert report.created == 2 and report.mapping == {0: "customer.last_name", 1: "customer.phone"}
    assert report.guessed == {1: "customer.phone"}
    assert by_phone(repository)["+14505550103"].attributes["last_name"] == "Côté"


# -- mapping -------------------------------------------------------------------------------


def test_unknown_target_fails_before_any_row(tmp_path: Path) -> None:
    """A target the schema lacks is an error before anything is read or written."""
    repository = MemoryRepository()
    calls: list[int] = []
    with pytest.raises(MappingError, match=r"customer\.policy_number") as caught:
        import_file(
            write(tmp_path, "Nom,Police\nRoy,P-1\n"),
            repository,
            mapping={"Police": "customer.policy_number"},
            progress=calls.append,
        )
    assert caught.value.column == "Police" and caught.value.target == "customer.policy_number"
    assert calls == [] and len(repository) == 0


def test_unknown_target_suggests_a_near_one(tmp_path: Path) -> None:
    """A misspelt target suggests the attribute meant."""
    with pytest.raises(MappingError) as caught:
        import_file(write(tmp_path, CLIENTS), MemoryRepository(), mapping={"Ville": "customer.cty"})
    assert caught.value.suggestion == "customer.city"


def test_unknown_column_in_mapping(tmp_path: Path) -> None:
    """Mapping a column the file lacks names the columns it has."""
    with pytest.raises(MappingError, match="no column named 'Celll'") as caught:
        import_file(write(tmp_path, CLIENTS), MemoryRepository(), mapping={"Celll": "customer.phone"})
    assert caught.value.suggestion == "Cell"


def test_two_columns_to_one_target(tmp_path: Path) -> None:
    """Two columns may not fill one attribute; a guess gives way to an explicit target."""
    with pytest.raises(MappingError, match=r"both map to 'customer\.phone'"):
        import_file(
            write(tmp_path, CLIENTS), MemoryRepository(), mapping={"Nom": "customer.phone", "Cell": "customer.phone"}
        )
    report = import_file(write(tmp_path, CLIENTS), MemoryRepository(), mapping={"Nom": "customer.phone"}, dry_run=True)
    assert report.guessed["Cell"] is None and report.rejected == 2


def test_new_attribute_by_header(tmp_path: Path) -> None:
    """A column named in new_attributes becomes a new text attribute of the schema."""
    repository = MemoryRepository()
    text = "Cell,Policy number\n514 555 0101,00123\n"
    report = import_file(write(tmp_path, text), repository, new_attributes=["Policy number"])
    assert report.added == ("customer.policy_number",)
    assert report.mapping == {"Cell": "customer.phone", "Policy number": "customer.policy_number"}
    assert [c.attributes for c in repository] == [{"phone": "+15145550101", "policy_number": "00123"}]
    assert repository.schema.lookup(_path("customer.policy_number")) is AttributeType.TEXT


def test_new_attribute_by_path(tmp_path: Path) -> None:
    """A path in new_attributes lets the mapping name it."""
    repository = MemoryRepository()
    report = import_file(
        write(tmp_path, "Cell,Police\n514 555 0101,P-1\n"),
        repository,
        mapping={"Police": "customer.policy"},
        new_attributes=["customer.policy"],
    )
    assert report.added == ("customer.policy",) and next(iter(repository)).attributes["policy"] == "P-1"


def test_skipped_columns_and_explicit_mapping(tmp_path: Path) -> None:
    """Explicit targets win, None skips, and only the rest are reported as guessed."""
    repository = MemoryRepository()
    report = import_file(
        write(tmp_path, CLIENTS), repository, mapping={"Cell": "customer.mobile_phone", "Ville": None}
    )
    assert report.mapping["Cell"] == "customer.mobile_phone" and report.mapping["Ville"] is None
    assert "Cell" not in report.guessed and report.guessed["Courriel"] == "customer.email"
    assert all("city" not in c.attributes and "mobile_phone" in c.attributes for c in repository)


def test_event_columns_make_events(tmp_path: Path) -> None:
    """Columns of an event category make one event per row, with its time and fields."""
    repository = MemoryRepository()
    text = "Cell,RDV,Service\n514 555 0101,2026-03-04 09:00,Vidange\n514 555 0101,05/03/2026,Pneus\n"
    report = import_file(
        write(tmp_path, text),
        repository,
        mapping={"RDV": "appointment.at", "Service": "appointment.service"},
        day_first=True,
    )
    assert (report.created, report.merged) == (1, 1)
    (customer,) = list(repository)
    assert customer.events == (
        Event("appointment", dt.datetime(2026, 3, 4, 9), {"service": "Vidange"}),
        Event("appointment", dt.datetime(2026, 3, 5), {"service": "Pneus"}),
    )


def test_event_fields_need_a_time(tmp_path: Path) -> None:
    """Event fields without a time column are a mapping error; a blank time rejects the row."""
    with pytest.raises(MappingError, match=r"appointment.at"):
        import_file(write(tmp_path, "Cell,Service\n514 555 0101,Vidange\n"), MemoryRepository(),
                    mapping={"Service": "appointment.service"})
    text = "Cell,RDV,Service\n514 555 0101,,Vidange\n"
    report = import_file(write(tmp_path, text), MemoryRepository(),
                         mapping={"RDV": "appointment.at", "Service": "appointment.service"})
    assert report.rejected == 1 and report.rejects[0].column == "RDV"


def _path(text: str) -> Any:
    from cohorts.ast import Path as RulePath

    return RulePath.of(text)


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("514 555 0101", "US", "+15145550101"),
        ("+1 (514) 555-0101", "FR", "+15145550101"),
        ("1-514-555-0101", "CA", "+15145550101"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("514.555.0101 ext. 12", "CA", "+15145550101"),
    ],
)
def test_phones_become_e164(text: str, region: str, expected: str) -> None:
    """Phones in local or international spelling become E.164 in the default region."""
    assert normalise_phone(text, region) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("12", "too short"),
        ("call me", "no digits"),
        ("555 0101", "no area code"),
        ("514 555 0101 / 450 555 0102", "two phone numbers"),
        ("5145550101 4505550102", "two phone numbers"),
        ("514 555 0101 ou 514 555 0199", "two phone numbers"),
    ],
)
def test_bad_phones_say_why(text: str, reason: str) -> None:
    """A phone that cannot be read is rejected with the reason."""
    with pytest.raises(InvalidValue, match=reason):
        normalise_phone(text, "CA")


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["", "1", "1 ", "+1", "+1 ", "1-", "+1-", "+1."]),
    area=st.integers(100, 999),
    exchange=st.integers(0, 999),
    line=st.integers(0, 9999),
    style=st.sampled_from(["{a}{e}{l}", "({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "{a} {e} {l}", "({a}){e}{l}"]),
    region=st.sampled_from(["US", "CA"]),
)
def test_fast_phone_path_agrees_with_phonenumbers(
    prefix: str, area: int, exchange: int, line: int, style: str, region: str
) -> None:
    """The fast path for North American numbers gives what phonenumbers gives."""
    text = prefix + style.format(a=f"{area:03}", e=f"{exchange:03}", l=f"{line:04}")
    try:
        ours: str | None = normalise_phone(text, region)
    except InvalidValue:
        ours = None
    number = phonenumbers.parse(text, region)
    possible = phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE
    theirs = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if possible else None
    assert ours == theirs
    if ours is not None:
        assert to_phone(text, region) == ours


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12,5", 12.5), ("1 234,50", 1234.5), ("1.234,50", 1234.5), ("1,234.50", 1234.5), ("1,234,567", 1234567),
     ("7", 7), ("-3", -3), ("$ 19.99", 19.99), ("1\u00a0000", 1000), (".5", 0.5)],
)
def test_numbers_with_decimal_commas(text: str, expected: float) -> None:
    """Numbers read with decimal commas or points and any thousands separator."""
    value = normalise_number(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["abc", "1,2,3", "12%", "1e999", "--1"])
def test_bad_numbers(text: str) -> None:
    """Text that is not a number is rejected."""
    with pytest.raises(InvalidValue, match="not a number"):
        normalise_number(text)


def test_dates_day_first() -> None:
    """Dates follow the day-first option; ISO text is ISO either way; a bare number is not a date."""
    assert normalise_time("03/04/2026") == dt.datetime(2026, 3, 4)
    assert normalise_time("03/04/2026", day_first=True) == dt.datetime(2026, 4, 3)
    assert normalise_time("2026-03-04", day_first=True) == dt.datetime(2026, 3, 4)
    assert normalise_time("4 mars 2026".replace("mars", "March")) == dt.datetime(2026, 3, 4)
    for bad in ("12", "31/31/2026", "tomorrow-ish"):
        with pytest.raises(InvalidValue, match="not a date"):
            normalise_time(bad)


def test_email_shape() -> None:
    """Emails are checked for shape; two in one cell are rejected as such."""
    assert normalise_email("Marie@Example.COM") == "Marie@example.com"
    for bad in ("marie", "marie@", "marie@example", "ma rie@example.com"):
        with pytest.raises(InvalidValue, match="not an email address"):
            normalise_email(bad)
    with pytest.raises(InvalidValue, match="two email addresses"):
        normalise_email("a@example.com; b@example.com")


# -- matching and merging --------------------------------------------------------------------


def test_match_on_phone_fills_blanks(tmp_path: Path) -> None:
    """A matched customer keeps what it has and gains what it lacked (policy fill)."""
    repository = MemoryRepository([Customer("c1", {"phone": "+15145550101", "city": "Lévis"})])
    report = import_file(write(tmp_path, CLIENTS), repository, match_on="phone")
    assert (report.created, report.updated, report.match_on) == (1, 1, "phone")
    assert repository.get("c1") == Customer(
        "c1",
        {"phone": "+15145550101", "city": "Lévis", "first_name": "Élise", "last_name": "Roy",
         "email": "elise@example.com"},
    )


def test_match_on_phone_overwrite(tmp_path: Path) -> None:
    """With policy overwrite the file's values replace the stored ones; blank cells erase nothing."""
    stored = Customer("c1", {"phone": "5145550101", "city": "Lévis", "language": "fr"}, [Event("note", "2026-01-01")])
    repository = MemoryRepository([stored])
    report = import_file(write(tmp_path, CLIENTS), repository, match_on="phone", policy="overwrite")
    customer = repository.get("c1")
    assert report.updated == 1 and customer is not None
    assert customer.attributes["city"] == "Laval" and customer.attributes["language"] == "fr"
    assert customer.events == stored.events


def test_match_on_email_ignores_case(tmp_path: Path) -> None:
    """Emails match whatever their case."""
    repository = MemoryRepository([Customer(7, {"email": "ELISE@example.com"})])
    report = import_file(write(tmp_path, CLIENTS), repository, match_on="email")
    assert report.updated == 1 and repository.get(7) is not None and len(repository) == 2


def test_match_on_id_finds_integer_ids(tmp_path: Path) -> None:
    """An id column matches stored ids, whether stored as text or integers."""
    repository = MemoryRepository([Customer(1001, {"city": "Lévis"}), Customer("A-7", {})])
    text = "No client,Ville\n1001,Laval\nA-7,Québec\nB-9,Gatineau\n"
    report = import_file(write(tmp_path, text), repository)
    assert (report.match_on, report.created, report.updated) == ("id", 1, 2)
    assert repository.get(1001) == Customer(1001, {"city": "Lévis"})
    assert repository.get("A-7") == Customer("A-7", {"city": "Québec"})
    assert repository.get("B-9") == Customer("B-9", {"city": "Gatineau"})


def test_match_on_needs_a_column(tmp_path: Path) -> None:
    """Matching on an attribute no column fills is an error before any row."""
    with pytest.raises(MappingError, match=r"no column maps to 'customer\.postal_code'"):
        import_file(write(tmp_path, CLIENTS), MemoryRepository(), match_on="postal_code")


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_duplicate_rows_are_one_customer(tmp_path: Path, batch_size: int) -> None:
    """Rows for the same customer in one file make one customer, within a batch or across batches."""
    text = "Cell,Prénom,Ville\n514 555 0101,Élise,\n(514) 555-0101,,Laval\n450 555 0102,Marc,\n514.555.0101,Lise,\n"
    repository = MemoryRepository()
    report = import_file(write(tmp_path, text), repository, batch_size=batch_size)
    assert len(repository) == 2 and report.created == 2
    assert report.created + report.updated + report.merged == 4
    assert by_phone(repository)["+15145550101"].attributes == {
        "phone": "+15145550101", "first_name": "Élise", "city": "Laval"
    }


def test_two_stored_customers_with_one_key(tmp_path: Path) -> None:
    """A row matching two stored customers is rejected rather than guessed."""
    repository = MemoryRepository([Customer(1, {"phone": "514 555 0101"}), Customer(2, {"phone": "+15145550101"})])
    report = import_file(write(tmp_path, CLIENTS), repository)
    assert report.rejected == 1 and "matches 2 customers" in report.rejects[0].reason
    assert report.rejects[0].line == 2


# -- nothing lost -------------------------------------------------------------------------------


def test_rejects_name_line_column_reason(tmp_path: Path) -> None:
    """Each problem of a rejected row has its line, column and reason; valid rows land."""
    text = CLIENTS + "Zoé,Côté,12,zoe@,Lévis\n,,,,\nLuc,Roy,450 555 0104,luc@example.com,Laval\n"
    repository = MemoryRepository()
    report = import_file(write(tmp_path, text), repository)
    assert (report.rows_read, report.created, report.rejected, report.skipped) == (4, 3, 1, 0)
    assert [(r.line, r.column) for r in report.rejects] == [(4, "Cell"), (4, "Courriel")]
    assert "too short" in report.rejects[0].reason and "zoe@" in report.rejects[1].reason
    assert len(repository) == 3


def test_rows_with_nothing_to_import_are_skipped(tmp_path: Path) -> None:
    """A row whose mapped cells are all blank is counted as skipped."""
    text = "Cell,Notes\n514 555 0101,a\n,only a note\n"
    report = import_file(write(tmp_path, text), MemoryRepository())
    assert (report.rows_read, report.created, report.skipped) == (2, 1, 1)


def test_write_rejects_round_trip(tmp_path: Path) -> None:
    """The rejects file has a BOM, a reason column and harmless formulas, and imports once fixed."""
    text = "Nom,Cell,Notes\n=HYPERLINK(\"x\"),12,@SUM(A1)\nRoy,+1 514 555 0101,ok\n-Côté,abc,+1\n"
    repository = MemoryRepository()
    report = import_file(write(tmp_path, text), repository)
    target = tmp_path / "rejects.csv"
    assert report.write_rejects(target) == 2
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = read_rows(target)
    assert rows[0] == ["Nom", "Cell", "Notes", "Import error"]
    assert rows[1][:3] == ["'=HYPERLINK(\"x\")", "12", "'@SUM(A1)"]
    assert rows[1][3].startswith("line 2: Cell: not a phone number")
    assert rows[2][0] == "'-Côté" and rows[2][2] == "'+1"
    fixed = target.read_text(encoding="utf-8-sig").replace(",12,", ",450 555 0102,").replace(",abc,", ",450 555 0103,")
    target.write_text(fixed, encoding="utf-8-sig")
    again = import_file(target, repository)
    assert (again.created, again.rejected) == (2, 0) and again.mapping["Import error"] is None
    assert {c.attributes.get("last_name") for c in repository} == {"Roy", '=HYPERLINK("x")', "-Côté"}


def test_atomic_writes_nothing_when_a_row_fails(tmp_path: Path) -> None:
    """atomic=True: one bad row and nothing is written; all good rows and everything is."""
    repository = MemoryRepository([Customer("c1", {"phone": "+15145550101"})])
    bad = write(tmp_path, CLIENTS + "Zoé,Côté,12,,\n")
    report = import_file(bad, repository, atomic=True)
    assert not report.written and report.rejected == 1 and report.created == 0
    assert list(repository) == [Customer("c1", {"phone": "+15145550101"})]
    good = import_file(write(tmp_path, CLIENTS, "good.csv"), repository, atomic=True)
    assert good.written and len(repository) == 2


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    """A dry run reports what would happen and leaves the repository alone."""
    repository = MemoryRepository()
    report = import_file(write(tmp_path, CLIENTS), repository, dry_run=True)
    assert (report.created, report.written, len(repository)) == (2, False, 0)


class _Failing(MemoryRepository):
    """A repository whose disk fills up at the second batch."""

    def __init__(self, customers: Any = ()) -> None:
        self.batches = -1  # let the constructor's own upsert through
        super().__init__(customers)
        self.batches = 0

    def upsert(self, customers: Any) -> None:
        customers = list(customers)
        if customers and self.batches >= 1:
            raise OSError("disk full")
        if customers:
            self.batches += 1
        super().upsert(customers)


def test_an_exception_midway_leaves_the_repository_as_it_was(tmp_path: Path) -> None:
    """An error half-way through rolls back the batches already written."""
    repository = _Failing([Customer("c1", {"phone": "+15145550199"})])
    with pytest.raises(OSError, match="disk full"):
        import_file(write(tmp_path, CLIENTS + "Zoé,Côté,450 555 0103,,\n"), repository, batch_size=1)
    assert list(repository) == [Customer("c1", {"phone": "+15145550199"})]


def test_progress_is_reported(tmp_path: Path) -> None:
    """The progress callback gets the rows read so far, ending with all of them."""
    rows = "".join(f"P{i},514 555 {i:04}\n" for i in range(25))
    seen: list[Progress] = []
    report = import_file(write(tmp_path, "Prénom,Cell\n" + rows), MemoryRepository(), batch_size=10,
                         progress=seen.append)
    assert [int(p) for p in seen] == [10, 20, 25] and seen[-1].fraction == 1.0
    assert report.rows_read == 25


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["514 555 0101", "(450) 555-0102", "12", "", "x", "514 555 0101 / 450 555 0102"]),
            st.text(alphabet="aéZ ,;\"\n=-", max_size=6),
            st.sampled_from(["", "a@example.com", "bad@", "2026-01-02"]),
        ),
        max_size=12,
    ),
    batch_size=st.integers(1, 5),
)
def test_every_row_is_accounted_for(tmp_path: Path, rows: list[tuple[str, str, str]], batch_size: int) -> None:
    """Every non-blank row is created, updated, merged, skipped or rejected; no key is stored twice."""
    path = tmp_path / "random.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Cell", "Nom", "Courriel"])
        writer.writerows(rows)
    repository = MemoryRepository()
    report = import_file(path, repository, batch_size=batch_size)
    non_blank = sum(1 for row in rows if any(cell.strip() for cell in row))
    assert report.rows_read == non_blank
    assert report.created + report.updated + report.merged + report.skipped + report.rejected == non_blank
    key = report.match_on or "phone"
    keys = [str(c.attributes[key]).lower() for c in repository if key in c.attributes]
    assert len(keys) == len(set(keys)) and len(repository) == report.created
    assert {r.line for r in report.rejects} == set(report.rejected_lines())
    assert len(report.rejected_lines()) == report.rejected


def test_report_summary(tmp_path: Path) -> None:
    """The report prints its counts, guesses and first rejects."""
    report = import_file(write(tmp_path, CLIENTS + "Zoé,Côté,12,,\n"), MemoryRepository(), group=None)
    text = str(report)
    assert "created 2" in text and "rejected 1" in text and "'Cell' -> customer.phone" in text
    assert "line 4 (Cell)" in text
    assert isinstance(report, ImportReport) and report.rows == report.read == 3


def test_bad_options(tmp_path: Path) -> None:
    """Unknown policies and regions are errors."""
    path = write(tmp_path, CLIENTS)
    with pytest.raises(ValueError, match="policy"):
        import_file(path, MemoryRepository(), policy="merge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown region"):
        import_file(path, MemoryRepository(), region="XX")


def test_default_schema_is_not_changed(tmp_path: Path) -> None:
    """Creating attributes on one repository leaves the default schema as it was."""
    import_file(write(tmp_path, "Cell,Police\n514 555 0101,P\n"), MemoryRepository(), new_attributes=["Police"])
    assert default_schema().lookup(_path("customer.police")) is None


# -- every repository ---------------------------------------------------------------------------


def test_imported_customers_join_the_group(tmp_path: Path, repository: Any) -> None:
    """Created and updated customers alike join the group with origin IMPORTED."""
    from cohorts.groups import Groups, Origin

    repository.upsert([Customer("c1", {"phone": "+15145550101", "city": "Lévis"})])
    groups = Groups(repository)
    groups.create("Printemps 2026")
    report = import_file(write(tmp_path, CLIENTS), repository, group="printemps 2026")
    assert (report.created, report.updated, report.group) == (1, 1, "Printemps 2026")
    members = Groups(repository).members("Printemps 2026")
    assert len(members) == 2 and set(members.values()) == {frozenset({Origin.IMPORTED})}
    assert "c1" in members


def test_a_missing_group_is_created(tmp_path: Path, repository: Any) -> None:
    """Importing into a group that does not exist yet creates it."""
    from cohorts.groups import Groups

    import_file(write(tmp_path, CLIENTS), repository, group="Nouveaux")
    assert Groups(repository).names() == ["Nouveaux"] and Groups(repository).count("Nouveaux") == 2


def test_same_customer_across_batches(tmp_path: Path, repository: Any) -> None:
    """A customer repeated in later batches is updated, never created twice, in every repository."""
    rows = "".join(f"P{i},514 555 {i % 7:04}\n" for i in range(30))
    report = import_file(write(tmp_path, "Prénom,Cell\n" + rows), repository, batch_size=4)
    assert len(repository) == 7 and report.created == 7
    assert report.created + report.updated + report.merged == 30
    assert {c.attributes["first_name"] for c in repository} == {f"P{i}" for i in range(7)}


def test_match_and_update_in_every_repository(tmp_path: Path, repository: Any) -> None:
    """Matching on email finds stored customers whatever the case, and fills their blanks."""
    repository.upsert([Customer(42, {"email": "Marc@Example.com", "city": "Lévis"})])
    report = import_file(write(tmp_path, CLIENTS), repository, match_on="email")
    assert (report.created, report.updated) == (1, 1)
    stored = repository.get(42)
    assert stored.attributes["city"] == "Lévis" and stored.attributes["phone"] == "+15145550102"


def test_atomic_and_failures_roll_back_everything(tmp_path: Path, repository: Any) -> None:
    """atomic rejects and exceptions leave customers and groups as they were."""
    from cohorts.groups import Groups

    repository.upsert([Customer("c1", {"phone": "+15145550199"})])
    report = import_file(write(tmp_path, CLIENTS + "Zoé,Côté,12,,\n"), repository, group="G", atomic=True)
    assert not report.written and [c.id for c in repository] == ["c1"] and Groups(repository).names() == []

    def boom(progress: Progress) -> None:
        if progress == 2:
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError, match="connection lost"):
        import_file(write(tmp_path, CLIENTS + "Zoé,Côté,450 555 0103,,\n"), repository, group="G", batch_size=2,
                    progress=boom)
    assert [c.id for c in repository] == ["c1"] and Groups(repository).names() == []


def test_groups_with_rules_follow_the_imported_data(tmp_path: Path, repository: Any) -> None:
    """Customers an import creates or changes join and leave rule groups at once; a failed import changes none."""
    from cohorts.groups import Groups, Origin

    repository.upsert([Customer("x", {"city": "Laval"}), Customer("y", {"city": "Laval"})])
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "Laval"')
    assert set(groups.members("Laval")) == {"x", "y"}
    rows = "id,city\nn1,Laval\nx,Lévis\n"
    report = import_file(write(tmp_path, rows), repository, group="Spring", match_on="id", policy="overwrite")
    assert (report.created, report.updated) == (1, 1)
    assert dict(Groups(repository).members("Laval")) == {"y": {Origin.RULES}, "n1": {Origin.RULES}}
    assert set(Groups(repository).members("Spring")) == {"n1", "x"}

    failing = "id,city\ny,Lévis\nz,Laval\nw,Laval,extra\n"
    report = import_file(write(tmp_path, failing), repository, match_on="id", policy="overwrite", atomic=True)
    assert not report.written
    assert set(Groups(repository).members("Laval")) == {"y", "n1"}


def test_new_attributes_reach_the_repository_schema(tmp_path: Path, repository: Any) -> None:
    """A created attribute is in the repository's schema, and rules can use it; a rollback takes it back."""
    text = "Cell,Police\n514 555 0101,P-1\n450 555 0102,P-2\n"
    import_file(write(tmp_path, text), repository, new_attributes=["Police"], dry_run=True)
    assert repository.schema.lookup(_path("customer.police")) is None
    import_file(write(tmp_path, text), repository, new_attributes=["Police"])
    assert repository.schema.lookup(_path("customer.police")) is AttributeType.TEXT
    assert len(repository.select('customer.police = "p-2"')) == 1


# -- the command line ------------------------------------------------------------------------------


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cohorts import writes to the database, reports rejects and exits with 1 when rows were rejected."""
    from cohorts.cli import main

    pytest.importorskip("sqlalchemy")
    path = write(tmp_path, "Cell,Police,Notes\n514 555 0101,P-1,x\n12,P-2,y\n")
    db = tmp_path / "c.db"
    rejects = tmp_path / "rejects.csv"
    code = main(["import", str(path), "--db", str(db), "--group", "VIP", "--new-attribute", "Police",
                 "--skip", "Notes", "--region", "CA", "--rejects", str(rejects), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "created 1" in out and "rejected 1" in out and "rejects.csv" in out
    assert read_rows(rejects)[1][:2] == ["12", "P-2"]
    sql = importlib.import_module("cohorts.sql")
    repository = sql.SQLRepository(f"sqlite:///{db}")
    assert [c.attributes for c in repository] == [{"phone": "+15145550101", "police": "P-1"}]


def test_cli_map_dry_run_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--map and --dry-run with --json report without writing."""
    from cohorts.cli import main

    pytest.importorskip("sqlalchemy")
    path = write(tmp_path, CLIENTS)
    db = tmp_path / "c.db"
    code = main(["import", str(path), "--db", str(db), "--group", "VIP", "--map", "Cell=customer.mobile_phone",
                 "--dry-run", "--json"])
    import json

    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["created"] == 2 and data["written"] is False
    assert data["mapping"]["Cell"] == "customer.mobile_phone" and "Cell" not in data["guessed"]


def test_cli_preview_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--preview prints the guessed mapping; a bad target is an error with exit code 1."""
    from cohorts.cli import main

    path = write(tmp_path, CLIENTS)
    assert main(["import", str(path), "--preview"]) == 0
    assert "Cell -> customer.phone" in capsys.readouterr().out
    db = str(tmp_path / "c.db")
    assert main(["import", str(path), "--db", db, "--group", "G", "--map", "Cell=customer.fone"]) == 1
    assert "did you mean 'customer.phone'" in capsys.readouterr().err
    assert main(["import", str(path), "--group", "G"]) == 2
    assert main(["import", str(path), "--db", str(tmp_path / "c.db"), "--group", "G", "--map", "Cell"]) == 2


def test_cli_no_header_positions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --no-header, --map takes column numbers."""
    from cohorts.cli import main

    path = write(tmp_path, "Roy,514 555 0101\n")
    code = main(["import", str(path), "--db", str(tmp_path / "c.db"), "--group", "G", "--no-header",
                 "--map", "0=customer.last_name", "--json"])
    import json

    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["mapping"] == {"0": "customer.last_name", "1": "customer.phone"}


def test_sample_import_has_one_bad_row() -> None:
    """The bundled sample spreadsheet imports with exactly one rejected row (a short phone), on its true line."""
    from importlib.resources import files

    sample = files("cohorts") / "data" / "sample_import.csv"
    repository = MemoryRepository(region="CA")
    report = import_file(str(sample), repository, group="Imported")
    assert (report.rows_read, report.created, report.rejected) == (10, 9, 1)
    assert report.rejects[0].line == 7 and "too short" in report.rejects[0].reason
    assert sum(len(c.events) for c in repository) == 7


def test_ids_beside_another_key(tmp_path: Path) -> None:
    """Matching on phone, a row's id still finds its customer when the phone is blank, and is never reused."""
    repository = MemoryRepository([Customer("A-1", {"city": "Lévis"}), Customer("A-2", {"phone": "+14505550102"})])
    text = (
        "No client,Cell,Ville\n"
        "A-1,,Laval\n"  # no phone: found by its id, blanks filled
        "A-1,514 555 0101,\n"  # same id again: merged, phone added
        "A-2,514 555 0199,\n"  # the id belongs to a customer with another phone
        "B-1,450 555 0103,Gatineau\n"
        "B-1,450 555 0104,\n"  # same id as the row above, another phone
    )
    report = import_file(write(tmp_path, text), repository, match_on="phone")
    assert (report.updated, report.merged, report.created, report.rejected) == (1, 1, 1, 2)
    assert repository.get("A-1") == Customer("A-1", {"city": "Lévis", "phone": "+15145550101"})
    assert [r.line for r in report.rejects] == [4, 6]
    assert "another phone" in report.rejects[0].reason and "line 5" in report.rejects[1].reason


def test_cli_progress_bar() -> None:
    """The progress bar shows the share of the file, the rows and the rejects."""
    import io

    from cohorts.progress import TerminalBar

    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar(Progress(1500, 0.5, 2))
    bar(Progress(3000, 1.0, 3))
    bar.done()
    text = stream.getvalue()
    assert "[###############...............]  50% 1,500 rows" in text and "3 rejected" in text
    assert text.endswith("\n") and "100% 3,000 rows" in text


def test_cli_column_positions_with_a_header() -> None:
    """#N names a column by position even when the file has a header."""
    import argparse

    from cohorts.cli.imports import mapping_of

    args = argparse.Namespace(map=["#2=customer.phone", "Nom="], skip=["#0"], header=True)
    assert mapping_of(args) == {2: "customer.phone", "Nom": None, 0: None}


def test_large_repositories_use_the_bloom_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the exact-index limit, stored and created keys are still found (SQLite)."""
    from cohorts.imports import writing

    monkeypatch.setattr(writing, "_EXACT_LIMIT", -1)
    repository = _sql_repository(tmp_path)
    repository.upsert([Customer("c1", {"phone": "514 555 0101", "city": "Lévis"})])
    rows = "".join(f"P{i},514 555 {101 + i % 5:04}\n" for i in range(12))
    report = import_file(write(tmp_path, "Prénom,Cell\n" + rows), repository, batch_size=3)
    assert len(repository) == 5 and report.created == 4 and report.updated + report.merged == 8
    assert repository.get("c1").attributes == {"phone": "514 555 0101", "city": "Lévis", "first_name": "P0"}


@settings(max_examples=50, deadline=None)
@given(keys=st.sets(st.text(max_size=12), max_size=200), others=st.sets(st.text(max_size=12), max_size=200))
def test_bloom_filter_has_no_false_negatives(keys: set[str], others: set[str]) -> None:
    """Every key added is found; a small filter may say maybe for others, but not for all of them."""
    from cohorts.imports.writing import _Bloom

    bloom = _Bloom(bits=1 << 16)
    for key in keys:
        bloom.add(key)
    assert all(key in bloom for key in keys)
    unknown = others - keys
    if len(unknown) > 20:
        assert sum(key in bloom for key in unknown) < len(unknown)
