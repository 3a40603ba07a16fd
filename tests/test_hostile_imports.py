"""A corpus of malformed files (issue #15): every row is imported or reported, and hostile files stay bounded.

Each file is made here, in ``tmp_path``. For each, the counts are exact and add up:
``rows_read == created + updated + merged + skipped + rejected``, and every reject
has its line and reason.
"""

from __future__ import annotations

import codecs
import resource
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cohorts import MemoryRepository
from cohorts.importers import ImportFileError, ImportReport, import_file, preview_file

HEADER = "id,first_name,last_name,email"


def people(count: int, bad: dict[int, str] | None = None, newline: str = "\n") -> str:
    """A CSV of ``count`` customers; ``bad`` replaces the lines of some rows (row 1 is on line 2)."""
    bad = bad or {}
    lines = [HEADER]
    for i in range(1, count + 1):
        lines.append(bad.get(i, f"c{i},Pre{i},Nom{i},u{i}@example.com"))
    return newline.join(lines) + newline


def unclosed(i: int) -> str:
    return f'c{i},Pre{i},"Nom{i} never closed,u{i}@example.com'


def run(path: Path, **options: object) -> tuple[ImportReport, MemoryRepository]:
    repository = MemoryRepository()
    report = import_file(path, repository, **options)  # type: ignore[arg-type]
    assert report.rows_read == report.created + report.updated + report.merged + report.skipped + report.rejected
    assert report.rejected == len(report.rejected_lines())
    assert len(repository) == report.created
    return report, repository


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# -- unbalanced quotes --------------------------------------------------------------------------------------------

QUOTES = {
    "start": (1, 2, "not closed within 100 lines"),
    "middle": (11, 12, "not closed within 100 lines"),
    "end": (1000, 1001, "not closed before the end of the file"),
    "near the end": (950, 951, "not closed before the end of the file"),
}


@pytest.mark.parametrize("where", QUOTES)
def test_an_unclosed_quote_rejects_its_row_and_the_rows_after_it_are_read(tmp_path: Path, where: str) -> None:
    row, line, reason = QUOTES[where]
    path = write(tmp_path, "quote.csv", people(1000, {row: unclosed(row)}))
    report, repository = run(path)
    assert (report.rows_read, report.created, report.rejected) == (1000, 999, 1)
    assert [(r.line, r.column) for r in report.rejects] == [(line, None)]
    assert f"opened on line {line}" in report.rejects[0].reason and reason in report.rejects[0].reason
    assert report.rejects[0].cells[:2] == (f"c{row}", f"Pre{row}")
    assert all("\n" not in str(value) for c in repository for value in c.attributes.values())


def test_an_unclosed_quote_in_the_header_is_said(tmp_path: Path) -> None:
    path = write(tmp_path, "head.csv", people(300).replace("last_name", '"last_name', 1))
    report, _ = run(path)  # the header ends at the quote: each row has a value beyond it, and is rejected
    assert (report.rows_read, report.created, report.rejected) == (300, 0, 300)
    assert any("the header row: a quoted cell opened on line 1" in str(note) for note in report.notes)


def test_two_unclosed_quotes_do_not_pair_up_over_the_rows_between(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.csv", people(1000, {11: unclosed(11), 41: unclosed(41), 500: unclosed(500)}))
    report, _ = run(path)
    assert (report.rows_read, report.created, report.rejected) == (1000, 997, 3)
    assert report.rejected_lines() == [12, 42, 501]


def test_quoted_cells_of_every_row_and_an_unclosed_one(tmp_path: Path) -> None:
    bad = {i: f'"c{i}","Pre{i}","Nom{i}","u{i}@example.com"' for i in range(1, 101)}
    bad[10] = '"c10","Pre10","Nom10 never closed,u10@example.com'  # closed by the quote that opens the next row
    report, _ = run(write(tmp_path, "quoted.csv", people(100, bad)))
    assert (report.rows_read, report.created, report.rejected) == (100, 99, 1)
    assert report.rejected_lines() == [11]


def test_a_legit_cell_over_lines_within_the_bound(tmp_path: Path) -> None:
    notes = "\n".join(f"note {n}" for n in range(50))
    path = write(tmp_path, "notes.csv", people(20, {5: f'c5,Pre5,"{notes}",u5@example.com'}))
    report, repository = run(path)
    assert (report.rows_read, report.created, report.rejected) == (20, 20, 0)
    assert repository.get("c5").attributes["last_name"] == notes  # type: ignore[union-attr]
    tight, _ = run(path, max_cell_lines=10)  # the row is rejected, and the cell's other lines are read as rows
    assert (tight.rows_read, tight.created, tight.rejected) == (1 + 49 + 19, 49 + 19, 1)
    assert tight.rejected_lines() == [6] and "not closed within 10 lines" in tight.rejects[0].reason


# -- line endings, NULs, BOMs, encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_line_endings(tmp_path: Path, newline: str) -> None:
    report, _ = run(write(tmp_path, "ends.csv", people(1000, newline=newline)))
    assert (report.rows_read, report.created, report.rejected) == (1000, 1000, 0)


def test_mixed_line_endings_and_a_bare_cr_inside_a_line(tmp_path: Path) -> None:
    text = people(300)
    lines = text.split("\n")
    mixed = "".join(line + ("\r", "\n", "\r\n")[i % 3] for i, line in enumerate(lines[:-1]))
    report, _ = run(write(tmp_path, "mixed.csv", mixed))
    assert (report.rows_read, report.created, report.rejected) == (300, 300, 0)
    with_cr = text.replace("c7,Pre7,", "c7,Pre7\r,")  # a bare CR inside a row: the row ends there
    report, _ = run(write(tmp_path, "cr.csv", with_cr))
    assert report.rows_read == report.created + report.rejected + report.skipped


def test_a_nul_in_a_cell_rejects_its_row_only(tmp_path: Path) -> None:
    path = write(tmp_path, "nul.csv", people(1000, {5: "c5,Pre\x005,Nom5,u5@example.com"}))
    report, _ = run(path)
    assert (report.rows_read, report.created, report.rejected) == (1000, 999, 1)
    assert [(r.line, r.column) for r in report.rejects] == [(6, "first_name")]
    assert "NUL" in report.rejects[0].reason


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"])
def test_utf16_and_utf32_with_or_without_a_bom(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path, "wide.csv", people(1000, {3: "c3,Élise,Côté,u3@example.com"}).encode(encoding))
    report, repository = run(path)
    assert (report.rows_read, report.created, report.rejected, report.skipped) == (1000, 1000, 0, 0)
    assert repository.get("c3").attributes["first_name"] == "Élise"  # type: ignore[union-attr]


def test_a_binary_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "binary.csv", bytes([0, 0, 7, 0, 9, 0, 0, 0]) * 1000)
    with pytest.raises(ImportFileError, match="zero bytes"):
        import_file(path, MemoryRepository())


def test_a_bom_inside_an_id_cell_is_no_new_customer(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + people(3).encode() + codecs.BOM_UTF8 + b"c2,,Roy,\n\xef\xbb\xbfc9,\xef\xbb\xbfNeuf,,\n"
    report, repository = run(write(tmp_path, "bom.csv", data))
    assert (report.rows_read, report.created, report.merged, report.rejected) == (5, 4, 1, 0)
    assert sorted(str(c.id) for c in repository) == ["c1", "c2", "c3", "c9"]
    assert repository.get("c9").attributes["first_name"] == "Neuf"  # type: ignore[union-attr]


# -- values -----------------------------------------------------------------------------------------------------


def test_out_of_range_dates_reject_their_row(tmp_path: Path) -> None:
    bad = {5: "c5,0001-01-01T00:00:00+14:00", 6: "c6,9999-12-31T23:30:00-05:00", 7: "c7,2024-01-01T00:00:00+01:00"}
    text = "id,Created\n" + "".join(f"{bad.get(i, f'c{i},2024-02-0{1 + i % 9}')}\n" for i in range(1, 1001))
    report, _ = run(write(tmp_path, "dates.csv", text), mapping={"Created": "customer.created_at"})
    assert (report.rows_read, report.created, report.rejected) == (1000, 998, 2)
    assert [(r.line, r.column) for r in report.rejects] == [(6, "Created"), (7, "Created")]
    assert "out of the range of dates" in report.rejects[0].reason


def test_duplicate_headers_keep_both_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "dups.csv", "id,Email,Email,Nom,nom\nc1,a@example.com,b@example.com,Roy,Côté\n")
    preview = preview_file(path)
    assert preview.columns == ("id", "Email", "Email (2)", "Nom", "nom (2)")
    assert any("a second column named 'Email'" in note.message for note in preview.notes)
    report, repository = run(path, mapping={"nom (2)": None})
    assert (report.rows_read, report.created) == (1, 1)
    assert report.mapping["Email (2)"] == "customer.other_emails"
    assert repository.get("c1").attributes["other_emails"] == ["b@example.com"]  # type: ignore[union-attr]
    assert any(note.column == "Email (2)" for note in report.notes)


def test_apostrophes_round_trip_through_the_rejects_file(tmp_path: Path) -> None:
    """A CSV's leading ``'`` before ``=``, ``+``, a digit... is the text marker.

    ``'=x`` imports as ``=x``, ``''=x`` as ``'=x``, and the rejects file writes them back so.
    """
    path = write(tmp_path, "marks.csv", "id,Phone,Note\nc1,'+15145550101,'=x\nc2,,''=y\nc3,12,''=z\n")
    report, repository = run(path, new_attributes=["Note"], region="CA")
    assert (report.rows_read, report.created, report.rejected) == (3, 2, 1)
    assert repository.get("c1").attributes == {"phone": "+15145550101", "note": "=x"}  # type: ignore[union-attr]
    assert repository.get("c2").attributes == {"note": "'=y"}  # type: ignore[union-attr]
    rejects = tmp_path / "rejects.csv"
    report.write_rejects(rejects)
    assert "''=z" in rejects.read_text(encoding="utf-8-sig")
    fixed = write(tmp_path, "fixed.csv", rejects.read_text(encoding="utf-8-sig").replace(",12,", ",514 555 0103,"))
    again, repository = run(fixed, new_attributes=["Note"], region="CA")
    assert (again.created, again.rejected) == (1, 0)
    assert repository.get("c3").attributes["note"] == "'=z"  # type: ignore[union-attr]


# -- cells and rows over the limits --------------------------------------------------------------------------------


def test_a_huge_csv_cell_rejects_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", people(100, {7: f"c7,{'x' * 40_000},Nom7,u7@example.com"}))
    report, _ = run(path)
    assert (report.rows_read, report.created, report.rejected) == (100, 99, 1)
    assert [(r.line, r.column) for r in report.rejects] == [(8, "first_name")]
    assert len(report.rejects[0].cells[1]) == 32_767


def test_a_line_over_the_length_limit_is_left_out_and_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "line.csv", people(100, {7: "c7," + "y" * 1_000_000}))
    report, _ = run(path, max_cell_chars=1000)
    assert (report.rows_read, report.created, report.rejected) == (100, 99, 1)
    assert report.rejected_lines() == [8] and "longer than" in report.rejects[0].reason


def test_rows_over_max_rows_are_an_error_and_nothing_is_written(tmp_path: Path) -> None:
    repository = MemoryRepository()
    with pytest.raises(ImportFileError, match="more than 500 rows"):
        import_file(write(tmp_path, "many.csv", people(1000)), repository, max_rows=500)
    assert len(repository) == 0
    with pytest.raises(ValueError, match="limit rows"):
        import_file(write(tmp_path, "few.csv", people(1)), repository, max_rows=0)


# -- workbooks -------------------------------------------------------------------------------------------------------

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Clients" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
)


def _row(number: int, *texts: str) -> str:
    cells = "".join(
        f'<c r="{"ABCD"[i]}{number}" t="inlineStr"><is><t>{text}</t></is></c>' for i, text in enumerate(texts)
    )
    return f'<row r="{number}">{cells}</row>'


def workbook(path: Path, rows: Callable[[], object], dimension: str | None = None) -> Path:
    """An .xlsx made with zipfile: its sheet's rows are written by ``rows`` (an iterable of XML strings)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(b'<?xml version="1.0" encoding="UTF-8"?>')
            sheet.write(b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            if dimension:
                sheet.write(f'<dimension ref="{dimension}"/>'.encode())
            sheet.write(b"<sheetData>")
            for chunk in rows():  # type: ignore[attr-defined]
                sheet.write(chunk.encode())
            sheet.write(b"</sheetData></worksheet>")
    return path


def _bounded(action: Callable[[], object]) -> tuple[float, float]:
    """Seconds and MB of Python allocations at peak (tracemalloc) while ``action`` runs, and RSS growth in MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    try:
        action()
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    assert grown < 200, f"RSS grew by {grown:.0f} MB"
    return elapsed, peak


def test_a_small_workbook_reads(tmp_path: Path) -> None:
    def rows() -> list[str]:
        return [_row(1, "id", "first_name", "Note"), _row(2, "c1", "Élise", "'=x"), _row(3, "c2", "\ufeffMarc", "'7")]

    report, repository = run(workbook(tmp_path / "small.xlsx", rows), new_attributes=["Note"])
    assert (report.rows_read, report.created, report.rejected) == (2, 2, 0)
    assert repository.get("c1").attributes == {"first_name": "Élise", "note": "'=x"}  # type: ignore[union-attr]
    assert repository.get("c2").attributes == {"first_name": "Marc", "note": "'7"}  # type: ignore[union-attr]


def test_a_zip_bomb_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    block = '<row><c t="inlineStr"><is><t>x</t></is></c></row>' * 20_000

    def rows() -> object:
        yield _row(1, "id", "first_name", "last_name")
        for _ in range(300):  # 300 MB of XML
            yield block

    path = workbook(tmp_path / "bomb.xlsx", rows)
    assert path.stat().st_size < 2_000_000
    repository = MemoryRepository()

    def attempt() -> None:
        with pytest.raises(ImportFileError, match=r"expands to .* more than the limit .*max_xlsx_bytes"):
            import_file(path, repository)

    elapsed, peak = _bounded(attempt)
    assert elapsed < 2 and peak < 50, (elapsed, peak)
    assert len(repository) == 0
    with pytest.raises(ImportFileError, match="max_xlsx_bytes"):
        preview_file(path)


def test_a_sheet_that_declares_millions_of_rows_is_refused(tmp_path: Path) -> None:
    path = workbook(tmp_path / "tall.xlsx", lambda: [_row(1, "id"), _row(2, "c1")], dimension="A1:A4100000")

    def attempt() -> None:
        with pytest.raises(ImportFileError, match="4,100,000 rows, more than the limit of 1,000,000"):
            import_file(path, MemoryRepository())

    elapsed, _ = _bounded(attempt)
    assert elapsed < 2


def test_rows_past_max_rows_stop_a_workbook_while_reading(tmp_path: Path) -> None:
    def rows() -> object:
        yield _row(1, "id", "first_name")
        for n in range(2, 20_002):
            yield _row(n, f"c{n}", "Ann")

    path = workbook(tmp_path / "rows.xlsx", rows)  # no dimension: the count tells while reading
    repository = MemoryRepository()
    started = time.perf_counter()
    with pytest.raises(ImportFileError, match="more than 2,000 rows"):
        import_file(path, repository, max_rows=2000)
    assert time.perf_counter() - started < 2 and len(repository) == 0


def test_a_long_workbook_cell_rejects_its_row(tmp_path: Path) -> None:
    def rows() -> object:
        yield _row(1, "id", "first_name", "last_name")
        for n in range(2, 102):
            yield _row(n, f"c{n}", "Ann", "z" * (40_000 if n == 50 else 5))

    report, _ = run(workbook(tmp_path / "cell.xlsx", rows))
    assert (report.rows_read, report.created, report.rejected) == (100, 99, 1)
    assert [(r.line, r.column) for r in report.rejects] == [(50, "last_name")]
    assert "max_cell_chars" in report.rejects[0].reason and len(report.rejects[0].cells[2]) == 32_767


def test_a_huge_workbook_cell_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    def rows() -> object:
        yield _row(1, "id", "first_name", "last_name")
        for n in range(2, 102):
            yield _row(n, f"c{n}", "Ann", "z" * (30_000_000 if n == 50 else 5))

    path = workbook(tmp_path / "huge.xlsx", rows)
    assert path.stat().st_size < 200_000

    def attempt() -> None:
        with pytest.raises(ImportFileError, match=r"sheet1\.xml holds a text of more than"):
            import_file(path, MemoryRepository())

    elapsed, peak = _bounded(attempt)
    assert elapsed < 2 and peak < 50, (elapsed, peak)


def test_limits_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.csv", people(1))
    for option in ("max_cell_chars", "max_cell_lines", "max_rows", "max_xlsx_bytes"):
        with pytest.raises(ValueError, match="limit"):
            import_file(path, MemoryRepository(), **{option: 0})  # type: ignore[arg-type]


def test_the_command_line_reports_hostile_files_and_takes_the_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cohorts.cli import main

    database = f"sqlite:///{tmp_path / 'cli.db'}"
    quote = write(tmp_path, "quote.csv", people(1000, {11: unclosed(11)}).replace("\n", "\r", 40))
    assert main(["import", str(quote), "--db", database, "--group", "G", "--no-progress"]) == 1  # rows rejected
    out = capsys.readouterr().out
    assert "created 999" in out and "line 12: a quoted cell opened on line 12" in out
    nul = write(tmp_path, "nul.csv", people(10, {3: "c3,A\x00,B,"}))
    assert main(["import", str(nul), "--db", database, "--group", "G", "--no-progress", "--json"]) == 1
    assert main(["import", str(quote), "--preview", "--max-rows", "5"]) == 1
    assert "more than 5 rows" in capsys.readouterr().err
    assert main(["import", str(quote), "--preview", "--max-cell-chars", "0"]) == 2
