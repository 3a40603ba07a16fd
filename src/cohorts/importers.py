"""Import customers from CSV and Excel files into a repository and a group.

Spreadsheet exports are taken as they come: UTF-8 with or without a BOM,
UTF-16/32, Windows-1252, ``,`` ``;`` or tab delimiters (sniffed), quoted cells with line
breaks, trailing empty rows and columns, ``.xlsx`` workbooks. Each column is
mapped to an attribute path (``customer.phone``, ``appointment.at``) or
skipped; values are normalised on the way in (phones to E.164, dates, decimal
commas, email shape), and every row that cannot be imported is reported with
its line in the file and the reason, never dropped silently. Hostile files
(unbalanced quotes, zip bombs, huge cells) are bounded by limits (:class:`Limits`).

This module is the public face; the work is done in :mod:`cohorts.imports`,
one job a module: reading files (:func:`open_table`), guessing and resolving a
mapping (:func:`guess_target`, :func:`plan_mapping`), reading values
(:func:`normalise`), rows into records, writing batches, the report. Only
:func:`import_file` writes, inside one ``repository.transaction()``; the
repository-facing glue is here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping

import phonenumbers

from .errors import HostWriteError
from .groups import Groups
from .imports.cells import (
    InvalidValue,
    normalise,
    normalise_email,
    normalise_number,
    normalise_phone,
    normalise_time,
)
from .imports.mapping import (
    ID_TARGET,
    Field,
    MappingError,
    Plan,
    content_guesses,
    guess_mapping,
    guess_target,
    plan_mapping,
)
from .imports.reading import DELIMITERS as DELIMITERS
from .imports.reading import (
    MAX_CELL_CHARS,
    MAX_CELL_LINES,
    MAX_ROWS,
    MAX_XLSX_BYTES,
    ImportFileError,
    Limits,
    Row,
    Table,
    cell_text,
    detect_encoding,
    open_table,
    sniff_delimiter,
)
from .imports.reading import REASON_HEADER as REASON_HEADER
from .imports.reading import Column as Column
from .imports.records import BadCell as BadCell
from .imports.records import Policy as Policy
from .imports.records import Record, RowReader, settle_dates
from .imports.report import ImportPreview, ImportReport, Note, Reject
from .imports.writing import Rollback, Writer, resolve_match_on
from .progress import Progress
from .repository import Repository, read_only_reason, require
from .schema import Schema, default_schema
from .values import DEFAULT_REGION

__all__ = [
    "ID_TARGET",
    "Field",
    "ImportFileError",
    "ImportPreview",
    "ImportReport",
    "InvalidValue",
    "Limits",
    "MappingError",
    "Note",
    "Plan",
    "Progress",
    "Reject",
    "Row",
    "Table",
    "detect_encoding",
    "guess_mapping",
    "guess_target",
    "import_file",
    "normalise",
    "normalise_email",
    "normalise_number",
    "normalise_phone",
    "normalise_time",
    "open_table",
    "plan_mapping",
    "preview_file",
    "sniff_delimiter",
]


BATCH_SIZE = 5000
_SAMPLE = 200  # rows read ahead to check the guesses against values


def preview_file(
    path: str | os.PathLike[str],
    header: bool = True,
    rows: int = 10,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | int | None = None,
    schema: Schema | None = None,
    region: str = DEFAULT_REGION,
    first_row_is_header: bool | None = None,
    day_first: bool = False,
    max_cell_chars: int = MAX_CELL_CHARS,
    max_cell_lines: int = MAX_CELL_LINES,
    max_rows: int = MAX_ROWS,
    max_xlsx_bytes: int = MAX_XLSX_BYTES,
) -> ImportPreview:
    """The first ``rows`` rows of a file and the mapping guessed from its headers.

    Without a header row, columns are named by position and a column whose
    values all look like emails or phone numbers is guessed as such. The
    guesses are checked against the first 200 rows, and ``notes`` says what
    they left out or paired, and the day/month order of date columns
    (``day_first`` for those whose values cannot tell). The limits are those
    of :func:`import_file`.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clients.csv"
        >>> _ = path.write_text("Prénom,Courriel,Mobile\\nÉlise,elise@example.com,514 555 0101\\n", encoding="utf-8")
        >>> preview = preview_file(path)
        >>> dict(preview.guessed)
        {'Prénom': 'customer.first_name', 'Courriel': 'customer.email', 'Mobile': 'customer.phone'}
        >>> preview.rows
        (('Élise', 'elise@example.com', '514 555 0101'),)
    """
    if first_row_is_header is not None:
        header = first_row_is_header
    if rows < 0:
        raise ValueError(f"rows must be >= 0, not {rows}")
    schema = schema or default_schema()
    limits = Limits(max_cell_chars, max_cell_lines, max_rows, max_xlsx_bytes).check()
    with open_table(path, header=header, delimiter=delimiter, encoding=encoding, sheet=sheet, limits=limits) as table:
        sample = table.peek(max(rows, _SAMPLE))
        hints = content_guesses(table, sample, region)
        plan = plan_mapping(table.columns, schema, hints=hints, samples=[r.cells for r in sample], region=region)
        plan, dates = settle_dates(plan, sample, day_first)
        width = len(table.columns)
        shown = sample[:rows]
        return ImportPreview(
            columns=table.columns,
            rows=tuple(tuple(cell_text(c) for c in (*r.cells, *([None] * (width - len(r.cells))))) for r in shown),
            lines=tuple(r.line for r in shown),
            guessed=dict(plan.mapping),
            delimiter=table.delimiter,
            encoding=table.encoding,
            sheet=table.sheet,
            notes=(*_reading_notes(table), *plan.notes, *dates),
        )


def _reading_notes(table: Table) -> list[Note]:
    return [Note(column, message, count, line) for column, message, count, line in table.notes]


def _grow_schema(repository: Repository, plan: Plan) -> None:
    """Give the repository the attributes the import creates (rolled back with the import's transaction)."""
    if plan.added:
        repository.declare(repository.schema.merge(plan.schema))


def _ensure_group(groups: Groups, name: str) -> str:
    """The group's name as stored; the group is created when no group has that name (in any case)."""
    for existing in groups.names():
        if existing.casefold() == name.casefold():
            return str(existing)
    groups.create(name)
    return name


def import_file(
    path: str | os.PathLike[str],
    repository: Repository,
    group: str | None = None,
    mapping: Mapping[Column, str | None] | None = None,
    new_attributes: Iterable[str] = (),
    header: bool = True,
    match_on: str | None = None,
    region: str | None = None,
    day_first: bool = False,
    atomic: bool = False,
    progress: Callable[[Progress], object] | None = None,
    *,
    policy: Policy = "fill",
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | int | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    first_row_is_header: bool | None = None,
    on_bad_cell: BadCell = "reject_row",
    now: dt.datetime | None = None,
    max_cell_chars: int = MAX_CELL_CHARS,
    max_cell_lines: int = MAX_CELL_LINES,
    max_rows: int = MAX_ROWS,
    max_xlsx_bytes: int = MAX_XLSX_BYTES,
) -> ImportReport:
    """Import customers from a CSV or ``.xlsx`` file into ``repository`` and the group ``group``.

    Columns are mapped by ``mapping`` (header text or 0-based position ->
    attribute path, or None to skip); the others take the guessed target
    (see :func:`preview_file`), which ``report.guessed`` lists. Targets the
    schema lacks are an error (:class:`MappingError`, before any row is read)
    unless ``new_attributes`` lists them, which creates them as text.

    Existing customers are matched on ``match_on`` (``"id"``, ``"phone"``,
    ``"email"`` or another customer attribute; by default the id column, else
    the phone, else the email) and updated by ``policy``: ``"fill"`` fills
    blank attributes only, ``"overwrite"`` replaces them. Rows for the same
    customer are merged, never created twice. Every imported customer joins
    ``group`` (created when missing) with origin IMPORTED.

    The whole import runs in one ``repository.transaction()``: an exception
    leaves the repository as it was. With ``atomic=True`` nothing is written
    when any row is rejected; otherwise the valid rows land and the report
    lists the others. ``dry_run=True`` reports without writing. ``progress``
    is called with a :class:`Progress` (an int: rows read) after each batch.
    ``first_row_is_header`` (the articles' checkbox) is another name for ``header``.
    ``now`` is the moment the memberships the import makes are dated (default: the current time).

    A row with a bad cell is rejected whole (``on_bad_cell="reject_row"``);
    with ``on_bad_cell="skip_cell"`` the rest of the row is imported and the
    cell is listed in ``report.skipped_cells`` (a bad consent cell still rejects
    its row: nobody is imported as contactable by mistake). The day/month
    order of each date column is told from all its values; ``day_first`` is
    the order of a column whose values cannot tell (``report.notes`` says which).

    Limits keep a hostile file from exhausting memory or time: a cell of more
    than ``max_cell_chars`` characters (32,767, Excel's own limit) rejects its
    row; a quoted CSV cell running over more than ``max_cell_lines`` lines (100),
    or never closed, rejects the row where it opened, and the lines after that
    row are read as rows; a file of more than ``max_rows`` rows (1,000,000, the
    header counted) or a workbook whose parts expand to more than
    ``max_xlsx_bytes`` (256 MiB) is an :class:`ImportFileError`, raised before the
    workbook is opened when its size tells, else while reading (nothing is then written),
    as is a workbook holding a text of more than eight times ``max_cell_chars``.

    Example:
        >>> import pathlib, tempfile
        >>> from cohorts.repository import MemoryRepository
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clients.csv"
        >>> _ = path.write_text("Prénom,Cell\\nÉlise,514 555 0101\\nMarc,12\\n", encoding="utf-8")
        >>> repository = MemoryRepository()
        >>> report = import_file(path, repository, group="Imported", region="CA")
        >>> report.created, report.rejected, report.rejects[0].line, report.rejects[0].column
        (1, 1, 3, 'Cell')
        >>> [c.attributes for c in repository]
        [{'first_name': 'Élise', 'phone': '+15145550101'}]
    """
    if first_row_is_header is not None:
        header = first_row_is_header
    if policy not in ("fill", "overwrite"):
        raise ValueError(f"policy is 'fill' or 'overwrite', not {policy!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if on_bad_cell not in ("reject_row", "skip_cell"):
        raise ValueError(f"on_bad_cell is 'reject_row' or 'skip_cell', not {on_bad_cell!r}")
    require(repository, Repository, "import_file")
    refused = read_only_reason(repository)
    if refused is not None:
        raise HostWriteError(f"import_file writes customers, and {refused}")
    region = (region or repository.region or DEFAULT_REGION).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r} (a two-letter country code such as 'US', 'CA', 'FR')")
    limits = Limits(max_cell_chars, max_cell_lines, max_rows, max_xlsx_bytes).check()
    with open_table(path, header=header, delimiter=delimiter, encoding=encoding, sheet=sheet, limits=limits) as table:
        reopen = lambda: open_table(
            path, header=header, delimiter=table.delimiter, encoding=encoding, sheet=sheet, limits=limits
        )
        plan, notes = _plan(table, reopen, repository.schema, mapping, new_attributes, region, day_first)
        notes[:0] = _reading_notes(table)
        key_field = resolve_match_on(match_on, plan)
        report = ImportReport(
            path=os.fspath(path),
            header=header,
            columns=table.columns,
            header_cells=table.header_cells,
            mapping=dict(plan.mapping),
            guessed=dict(plan.guessed),
            added=plan.added,
            match_on=(
                None if key_field is None else "id" if key_field.is_id else key_field.path.attribute
            ),
            group=group,
            atomic=atomic,
            dry_run=dry_run,
            delimiter=table.delimiter,
            encoding=table.encoding,
            sheet=table.sheet,
            notes=notes,
        )
        groups = Groups(repository)
        ruled = any(groups.definition(name).rule is not None for name in groups.names())
        width = len(table.columns)
        try:
            with repository.transaction():
                _grow_schema(repository, plan)
                if group is not None:
                    report.group = group = _ensure_group(groups, group)
                writer = Writer(repository, report, key_field, policy, group, groups, refresh=ruled, now=now)
                reader = RowReader(plan, key_field, width, region, day_first, on_bad_cell)
                _run(table, reader, writer, report, atomic, progress, batch_size)
                if dry_run or (atomic and report.rejected):
                    raise Rollback
        except BaseException as error:
            if not isinstance(error, Rollback):
                raise
            report.written = False
            if not dry_run:
                report.created = report.updated = report.merged = 0
        finally:
            report.rejects.sort(key=lambda reject: reject.line)  # stable: a row's problems keep their order
    return report


def _plan(
    table: Table,
    reopen: Callable[[], Table],
    schema: Schema,
    mapping: Mapping[Column, str | None] | None,
    new_attributes: Iterable[str],
    region: str,
    day_first: bool,
) -> tuple[Plan, list[Note]]:
    """The plan of an import, its guesses checked on the first rows and its date columns' order settled."""
    sample = table.peek(_SAMPLE)
    hints = content_guesses(table, table.sample(), region) if not table.header else None
    plan = plan_mapping(
        table.columns, schema, mapping, new_attributes, hints, samples=[r.cells for r in sample], region=region
    )
    more = len(table.sample()) >= _SAMPLE  # the file goes on after the sample
    plan, settled = settle_dates(plan, sample, day_first, reopen if more else None)
    return plan, [*plan.notes, *settled]


def _run(
    table: Table,
    read_row: RowReader,
    writer: Writer,
    report: ImportReport,
    atomic: bool,
    progress: Callable[[Progress], object] | None,
    batch_size: int,
) -> None:
    batch: list[Record] = []
    columns = table.columns
    for row in table:
        report.rows_read += 1
        if row.problem is not None:  # the file's text cannot give this row's cells: rejected as read
            at = row.at
            column = columns[at] if at is not None and at < len(columns) else at
            report.rejects.append(Reject(row.line, column, row.problem, row.cells))
            report.rejected += 1
            continue
        record, rejects, skipped = read_row(row)
        if skipped:
            report.skipped_cells.extend(skipped)
        if rejects:
            report.rejects.extend(rejects)
            report.rejected += 1
        elif record is None:
            report.skipped += 1
        elif not (atomic and report.rejected):  # atomic: once a row fails, only check the rest
            batch.append(record)
        if len(batch) >= batch_size:
            writer.write(batch)
            batch = []
            if progress is not None:
                progress(Progress(report.rows_read, table.fraction(), report.rejected))
        elif progress is not None and report.rows_read % batch_size == 0:
            progress(Progress(report.rows_read, table.fraction(), report.rejected))
    if batch and not (atomic and report.rejected):
        writer.write(batch)
    report.notes.extend(read_row.tally.notes())
    report.not_data.extend(Reject(r.line, None, "a title above the header", r.cells) for r in table.preamble)
    report.not_data.extend(Reject(r.line, None, "a footer after the last row", r.cells) for r in table.footer)
    if progress is not None:
        progress(Progress(report.rows_read, 1.0, report.rejected))
