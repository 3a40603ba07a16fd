"""What an import or a preview tells the caller: the rows and guesses, the counts, every rejected row."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

import attrs

from .._html import html_table, html_text
from .reading import REASON_HEADER, Column, cell_text, neutralise

# -- notes -------------------------------------------------------------------------


@attrs.frozen
class Note:
    """Something an import did that is no reject, said so that nothing happens silently.

    A guess left out (two columns for one attribute, values that contradict a
    header), a label column read, cells that held several values, extensions
    kept, a column of dates whose day/month order cannot be told.

    Attributes:
        column: the column concerned, or None.
        message: what was done, in words.
        count: how many cells or rows (0: it is about the column as a whole).
        line: the first line concerned, or None.
    """

    column: Column | None
    message: str
    count: int = 0
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.column!r}: " if self.column is not None else ""
        times = f" ({self.count} row{'s' if self.count != 1 else ''}, first on line {self.line})" if self.count else ""
        return f"{where}{self.message}{times}"


# -- preview -----------------------------------------------------------------------


@attrs.frozen
class ImportPreview:
    """The first rows of a file and the mapping guessed for it, before anything is written.

    Attributes:
        columns: each column's label (header text, or position).
        rows: the first data rows, as the text of their cells.
        lines: the line in the file where each of those rows starts.
        guessed: the guessed target of every column (``None``: skip).
        delimiter: the CSV delimiter used, ``encoding`` the text encoding, ``sheet`` the worksheet.
        notes: what the guesses left out or paired, and the day/month order of date columns.
    """

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]
    guessed: Mapping[Column, str | None]
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None
    notes: tuple[Note, ...] = ()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        heads = [f"{c} -> {self.guessed.get(c) or 'skip'}" for c in self.columns]
        return html_table([dict(zip(heads, row, strict=False)) for row in self.rows], caption="preview")

    def __str__(self) -> str:
        heads = [f"{c} -> {self.guessed.get(c) or 'skip'}" for c in self.columns]
        table = [heads, *[[cell.replace("\n", " ") for cell in row] for row in self.rows]]
        widths = [max(len(r[i]) if i < len(r) else 0 for r in table) for i in range(len(heads))]
        lines = [" | ".join(r[i].ljust(widths[i]) if i < len(r) else "" for i in range(len(heads))) for r in table]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(line.rstrip() for line in lines)


# -- the report ----------------------------------------------------------------------


@attrs.frozen
class Reject:
    """A row that was not imported, or one reason of it.

    Attributes:
        line: the 1-based line in the file where the row starts (the header counts;
            a quoted cell spanning lines counts each), or the sheet's row number.
        column: the column at fault (header text or position), or None for the whole row.
        reason: what is wrong, in words.
        cells: the row's cells as read (for :meth:`ImportReport.write_rejects`).
    """

    line: int
    column: Column | None
    reason: str
    cells: tuple[Any, ...] = attrs.field(default=(), eq=False, repr=False)


@attrs.define(kw_only=True)
class ImportReport:
    """What an import did: counts, the mapping used, and every rejected row.

    Attributes:
        path: the file imported.
        rows_read: data rows read (blank rows are not counted; also ``rows``).
        created: customers created.
        updated: rows that updated a customer who already existed.
        merged: rows folded into an earlier row of the file for the same customer.
        skipped: rows with nothing to import (every mapped cell blank).
        rejected: rows not imported; ``rejects`` says why, one entry per problem.
        mapping: the target of every column (``None``: skipped).
        guessed: the columns whose target was guessed, with the guess.
        added: attribute paths created as new text attributes.
        match_on: the attribute that matched existing customers (``"id"``, ``"phone"``...), or None.
        notes: what was done that is no reject (see :class:`Note`).
        skipped_cells: with ``on_bad_cell="skip_cell"``, the bad cells left out of rows that were imported.
        not_data: lines that are not data rows (a report's title above the header, its footer
            after the last row), neither imported nor counted in ``rows_read``.
        group: the group imported customers joined, or None.
        written: False when nothing was written (a dry run, or ``atomic`` with rejects).
    """

    path: str
    header: bool = True
    columns: tuple[Column, ...] = ()
    header_cells: tuple[str, ...] = ()
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    merged: int = 0
    skipped: int = 0
    rejected: int = 0
    rejects: list[Reject] = attrs.field(factory=list)
    notes: list[Note] = attrs.field(factory=list)
    skipped_cells: list[Reject] = attrs.field(factory=list)
    not_data: list[Reject] = attrs.field(factory=list)
    mapping: dict[Column, str | None] = attrs.field(factory=dict)
    guessed: dict[Column, str | None] = attrs.field(factory=dict)
    added: tuple[str, ...] = ()
    match_on: str | None = None
    group: str | None = None
    atomic: bool = False
    dry_run: bool = False
    written: bool = True
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None

    @property
    def rows(self) -> int:
        """Data rows read (same as ``rows_read``)."""
        return self.rows_read

    @property
    def read(self) -> int:
        """Data rows read (same as ``rows_read``)."""
        return self.rows_read

    @property
    def imported(self) -> int:
        """Rows that created, updated or merged into a customer."""
        return self.created + self.updated + self.merged

    @property
    def ok(self) -> bool:
        """True when no row was rejected."""
        return self.rejected == 0

    def rejected_lines(self) -> list[int]:
        """The lines of the rejected rows, in file order."""
        return sorted({r.line for r in self.rejects})

    def write_rejects(self, path: str | os.PathLike[str]) -> int:
        """Write the rejected rows to a CSV file that re-imports once fixed; returns how many rows.

        The file is UTF-8 with a BOM (so spreadsheets show accents), has the
        source's header when it had one, and ends each row with an
        ``Import error`` column giving the original line and the reasons
        (the import guesses that column as skipped), with the source's delimiter.
        Cells starting with
        ``=``, ``+``, ``-`` or ``@`` get a leading apostrophe so spreadsheets
        do not run them as formulas; imports take it off again.
        """
        rows: dict[int, tuple[tuple[Any, ...], list[str]]] = {}
        for reject in self.rejects:
            cells, reasons = rows.setdefault(reject.line, (reject.cells, []))
            reasons.append(f"{reject.column}: {reject.reason}" if reject.column is not None else reject.reason)
        width = max([len(self.columns), len(self.header_cells), *(len(c) for c, _ in rows.values())])
        with open(path, "w", encoding="utf-8-sig", newline="") as file:
            writer = csv.writer(file, delimiter=self.delimiter or ",")
            if self.header:
                head = [*self.header_cells, *([""] * (width - len(self.header_cells)))]
                writer.writerow([*(neutralise(h) for h in head), REASON_HEADER])
            for line in sorted(rows):
                cells, reasons = rows[line]
                texts = [neutralise(cell_text(c)) for c in cells]
                texts += [""] * (width - len(texts))
                writer.writerow([*texts, neutralise(f"line {line}: " + "; ".join(reasons))])
        return len(rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def _repr_html_(self) -> str:
        summary = "\n".join(line for line in str(self).splitlines() if not line.startswith("  line "))
        rejects = [{"line": r.line, "column": r.column, "reason": r.reason} for r in self.rejects[:100]]
        more = f"<p>... and {len(self.rejects) - 100} more rejected rows</p>" if len(self.rejects) > 100 else ""
        return html_text(summary) + (html_table(rejects, caption="rejected rows") if rejects else "") + more

    def __str__(self) -> str:
        state = "dry run, nothing written" if self.dry_run else "nothing written" if not self.written else "done"
        lines = [
            f"{self.path}: {self.rows_read} row(s) read ({state})",
            f"  created {self.created}, updated {self.updated}, merged {self.merged}, "
            f"skipped {self.skipped}, rejected {self.rejected}",
        ]
        if self.group:
            lines.append(f"  group: {self.group}")
        if self.match_on:
            lines.append(f"  matched on: {self.match_on}")
        if self.guessed:
            guesses = ", ".join(f"{c!r} -> {t or 'skip'}" for c, t in self.guessed.items())
            lines.append(f"  guessed: {guesses}")
        if self.added:
            lines.append(f"  new attributes: {', '.join(self.added)}")
        for note in self.notes[:10]:
            lines.append(f"  note: {note}")
        if len(self.notes) > 10:
            lines.append(f"  ... and {len(self.notes) - 10} more notes")
        kinds: dict[str, list[int]] = {}
        for line in self.not_data:
            kinds.setdefault(line.reason, []).append(line.line)
        for reason, numbers in kinds.items():
            where = f"line {numbers[0]}" if len(numbers) == 1 else f"lines {numbers[0]}-{numbers[-1]}"
            lines.append(f"  not data, {where}: {reason}")
        if self.skipped_cells:
            lines.append(f"  bad cells left out of imported rows: {len(self.skipped_cells)}")
            for cell in self.skipped_cells[:5]:
                lines.append(f"  line {cell.line} ({cell.column}): {cell.reason} (cell left out)")
        for reject in self.rejects[:10]:
            where = f" ({reject.column})" if reject.column is not None else ""
            lines.append(f"  line {reject.line}{where}: {reject.reason}")
        if len(self.rejects) > 10:
            lines.append(f"  ... and {len(self.rejects) - 10} more")
        return "\n".join(lines)
