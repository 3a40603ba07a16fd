"""Reading files as rows of cells: encodings, CSV dialects, ``.xlsx`` workbooks, cells as text."""

from __future__ import annotations

import codecs
import collections
import csv
import datetime as dt
import io
import itertools
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeAlias

from ..errors import CohortsError

Column: TypeAlias = str | int
"""A column: its header text, or its 0-based position when there is no header (or its header is blank)."""

DELIMITERS = (",", ";", "\t")
REASON_HEADER = "Import error"
"""The last column of a rejects file (:meth:`ImportReport.write_rejects`), skipped when it comes back."""
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_MARKED_STARTS = frozenset((*_FORMULA_STARTS, *"0123456789(."))


class ImportFileError(CohortsError, ValueError):
    """The file cannot be read as asked: unknown format, missing sheet, no header...

    Attributes:
        path: the file.
    """

    __module__ = "cohorts.importers"  # raised and documented as cohorts.importers.ImportFileError

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {message}")


# -- reading files -------------------------------------------------------------


class Row(NamedTuple):
    """A row of a file: the 1-based line (or sheet row) where it starts, and its cells.

    ``problem`` says why the row cannot be read as it stands (a quoted cell never
    closed, a cell over the length limit, a NUL character): the import rejects it
    with that reason, at the cell ``at`` (0-based) when one is at fault.
    """

    line: int
    cells: tuple[Any, ...]
    problem: str | None = None
    at: int | None = None


MAX_CELL_CHARS = 32_767  # Excel's own limit
MAX_CELL_LINES = 100
MAX_ROWS = 1_000_000
MAX_XLSX_BYTES = 256 * 1024 * 1024


class Limits(NamedTuple):
    """Bounds on what a file may hold, so that a hostile file cannot exhaust memory or time.

    Attributes:
        cell_chars: characters a cell may hold (Excel's own limit by default); a longer cell rejects its row.
        cell_lines: lines a quoted CSV cell may run over; a longer one (or one never closed) rejects
            the row where it opened, and the lines after that row are read again as rows.
        rows: rows a file may hold (the header counts); more is an :class:`ImportFileError`.
        xlsx_bytes: the expanded size of a workbook's parts; more is an :class:`ImportFileError`
            before the workbook is opened.
    """

    cell_chars: int = MAX_CELL_CHARS
    cell_lines: int = MAX_CELL_LINES
    rows: int = MAX_ROWS
    xlsx_bytes: int = MAX_XLSX_BYTES

    def check(self) -> Limits:
        for name, value in zip(self._fields, self, strict=True):
            if type(value) is not int or value < 1:
                raise ValueError(f"the limit {name} must be an int >= 1, not {value!r}")
        return self


class Table:
    """An open file, read as a header and a stream of rows. Use :func:`open_table`.

    Attributes:
        path: the file.
        columns: each column's label (header text, or position when blank or headerless).
        header: whether the first row named the columns.
        encoding: the text encoding read (``None`` for a workbook).
        delimiter: the CSV delimiter (``None`` for a workbook).
        sheet: the worksheet read (``None`` for CSV).
    """

    def __init__(
        self,
        path: str,
        rows: Iterator[tuple[int, Sequence[Any]] | Row],
        *,
        header: bool,
        encoding: str | None,
        delimiter: str | None,
        sheet: str | None,
        fraction: Callable[[], float | None],
        close: Callable[[], None],
    ) -> None:
        self.path = path
        self.header = header
        self.encoding = encoding
        self.delimiter = delimiter
        self.sheet = sheet
        self._fraction = fraction
        self._close = close
        self._rows = _non_blank(rows)
        self.notes: list[tuple[Column | None, str, int, int | None]] = []
        """What reading did that is no reject: (column, message, count, first line), for the report's notes."""
        self._ahead: collections.deque[Row] = collections.deque()
        self.header_line = 0
        self.header_cells: tuple[str, ...] = ()
        self.preamble: list[Row] = []
        self.footer: list[Row] = []
        if header:
            self._ahead.extend(itertools.islice(self._rows, _PROBE))
            while len(self._ahead) > 1 and _lone_text(self._ahead[0]) and any(
                _width(row) >= 3 for row in itertools.islice(self._ahead, 1, None)
            ):
                self.preamble.append(self._ahead.popleft())  # a title above the header
            first = self._ahead.popleft() if self._ahead else None
            if first is not None:
                self.header_line = first.line
                if first.problem is not None:  # read as far as it goes, and said
                    self.notes.append((None, f"the header row: {first.problem}", 1, first.line))
                self.header_cells = tuple(_trim(tuple(cell_text(c) for c in first.cells)))
            width = len(self.header_cells)
        else:
            self._ahead.extend(itertools.islice(self._rows, 50))
            width = max((len(row.cells) for row in self._ahead), default=0)
        columns: list[Column] = [
            name.strip() if i < len(self.header_cells) and name.strip() else i
            for i, name in enumerate((*self.header_cells, *([""] * (width - len(self.header_cells)))))
        ]
        seen: dict[str, int] = {}
        for i, column in enumerate(columns):
            if isinstance(column, str):
                folded = column.casefold()
                seen[folded] = times = seen.get(folded, 0) + 1
                if times > 1:  # two columns of one name: both kept, the second named "Email (2)"
                    renamed = f"{column} ({times})"
                    while renamed.casefold() in seen:
                        times += 1
                        renamed = f"{column} ({times})"
                    seen[renamed.casefold()] = 1
                    columns[i] = renamed
                    self.notes.append(
                        (renamed, f"a second column named {column!r} (column {i + 1}): read as {renamed!r}", 0, None)
                    )
        self.columns: tuple[Column, ...] = tuple(columns)

    def __iter__(self) -> Iterator[Row]:
        """The data rows (never the header), blank rows left out, trailing blank cells trimmed.

        Lines after the last data row that hold one text alone in a table of
        three or more columns (a report's footer: its title, a copyright, "Confidential
        Information", who generated it) or a total (``Total``, ``Grand Totals (300
        records)`` and a figure or two) are not data: they end up in :attr:`footer`.
        """
        held: list[Row] = []
        width = len(self.columns)
        watch = width >= 3
        for row in self._stream():
            if watch and row.problem is None and _footer_line(row, width):
                held.append(row)
                if len(held) <= _FOOTER_LIMIT:
                    continue
            if held:
                yield from held
                held = []
            yield row
        self.footer = held

    def _stream(self) -> Iterator[Row]:
        ahead = self._ahead
        while ahead:
            yield ahead.popleft()
        yield from self._rows

    def sample(self) -> list[Row]:
        """The rows read ahead so far (50 for a file without header), before iteration starts."""
        return list(self._ahead)

    def peek(self, count: int) -> list[Row]:
        """The first ``count`` data rows, read ahead (iteration still yields them), before iteration starts."""
        if len(self._ahead) < count:
            self._ahead.extend(itertools.islice(self._rows, count - len(self._ahead)))
        return [row for row in itertools.islice(self._ahead, count) if not _lone_text(row)]

    def fraction(self) -> float | None:
        """How much of the file was read, from 0 to 1, when that is known."""
        return self._fraction()

    def close(self) -> None:
        """Release the file."""
        self._close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PROBE = 12  # rows read to find the header below a report's title lines
_FOOTER_LIMIT = 20  # more lone-text lines than this at the end are data, not a footer


def _width(row: Row) -> int:
    """How many cells of the row are filled."""
    return sum(1 for cell in row.cells if is_filled(cell))


def _lone_text(row: Row) -> bool:
    """True for a line holding only words in its first cell: a report's title or footer line, not a record.

    Rows come trimmed of their blank cells at the end: a lone cell is a row of one cell.
    """
    cells = row.cells
    if len(cells) != 1 or type(cells[0]) is not str:
        return False
    return sum(1 for word in cells[0].split() if any(c.isalpha() for c in word)) >= 2


_TOTALS = frozenset({"total", "totals", "totaux", "grand total", "grand totals", "sous-total", "subtotal", "sum"})


def _footer_line(row: Row, width: int) -> bool:
    """A line that may end a report rather than be a record: a lone text, or a totals line (``Total;;;;1 234,56``)."""
    cells = row.cells
    if len(cells) == 1:
        return _lone_text(row)
    first = cells[0]
    if type(first) is not str or len(first) > 40 or first[:1] not in "TtGgSs":
        return False
    words = first.strip().lower().rstrip(":")
    if words not in _TOTALS and words.split(" (")[0] not in _TOTALS:
        return False
    return _width(row) <= max(2, width // 4)


def _trim(cells: Sequence[Any]) -> list[Any]:
    end = len(cells)
    while end and not is_filled(cells[end - 1]):
        end -= 1
    return list(cells[:end])


def is_filled(cell: Any) -> bool:
    if cell is None:
        return False
    if isinstance(cell, str):
        return bool(cell.strip())
    return True


def _non_blank(rows: Iterator[tuple[int, Sequence[Any]] | Row]) -> Iterator[Row]:
    for item in rows:
        if isinstance(item, Row):  # a row that cannot be read: always passed on, to be rejected
            yield item
            continue
        line, cells = item
        size = end = len(cells)
        while end:  # _trim, inlined: it runs for every row whose last cells are empty
            cell = cells[end - 1]
            if cell is None or (isinstance(cell, str) and (not cell or cell[0].isspace()) and not cell.strip()):
                end -= 1
            else:
                break
        if end:
            yield Row(line, tuple(cells) if end == size else tuple(cells[:end]))


def open_table(
    path: str | os.PathLike[str],
    *,
    header: bool = True,
    delimiter: str | None = None,
    encoding: str | None = None,
    sheet: str | int | None = None,
    limits: Limits | None = None,
) -> Table:
    """Open a ``.csv`` (or ``.tsv``/``.txt``) or ``.xlsx`` file as a :class:`Table`.

    ``delimiter`` and ``encoding`` are sniffed when not given; ``sheet`` names
    a worksheet (or gives its 0-based index); the first one is read by default.
    ``limits`` bound cells, rows and a workbook's size (see :class:`Limits`).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clients.csv"
        >>> _ = path.write_text('Nom;Cell\\n"Tremblay\\nJr";514 555 0199\\n;\\n', encoding="utf-8-sig")
        >>> with open_table(path) as table:
        ...     print(table.columns, table.delimiter, table.encoding, list(table))
        ('Nom', 'Cell') ; utf-8-sig [Row(line=2, cells=('Tremblay\\nJr', '514 555 0199'), problem=None, at=None)]
    """
    name = os.fspath(path)
    limits = (limits or Limits()).check()
    if not os.path.exists(name):
        raise ImportFileError(name, "no such file")
    suffix = os.path.splitext(name)[1].lower()
    if suffix in (".xlsx", ".xlsm"):
        return _open_workbook(name, header, sheet, limits)
    if suffix == ".xls":
        raise ImportFileError(name, "the old .xls format is not supported; save the sheet as .xlsx or .csv")
    if suffix not in (".csv", ".tsv", ".txt", ""):
        raise ImportFileError(name, f"unsupported file type {suffix!r}; use .csv or .xlsx")
    if sheet is not None:
        raise ImportFileError(name, "a CSV file has no sheets")
    return _open_csv(name, header, delimiter, encoding, limits)


def detect_encoding(path: str) -> str:
    """The encoding of a text file: UTF-8 (``utf-8-sig`` with a BOM), UTF-16 or UTF-32 (with a BOM, or told
    by the pattern of their zero bytes), else Windows-1252.

    The whole file is checked (in chunks, in constant memory), so a stray byte
    on the last line does not break an import half-way. A file whose zero bytes
    follow no text encoding's pattern is refused (:class:`ImportFileError`): it
    is binary, or text in an encoding to give as ``encoding=``.
    """
    with open(path, "rb") as file:
        head = file.read(4)
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
            return "utf-32"
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        file.seek(0)
        told = _zero_pattern(file.read(64 * 1024))
        if told == "":
            raise ImportFileError(
                path,
                "holds zero bytes in no pattern of text (a binary file, or text in an encoding "
                "to give with encoding=): not read",
            )
        if told is not None:
            return told
        for candidate in ("utf-8", "cp1252"):
            file.seek(0)
            decoder = codecs.getincrementaldecoder(candidate)()
            try:
                while chunk := file.read(1 << 20):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                continue
            return candidate
    return "latin-1"


def _zero_pattern(head: bytes) -> str | None:
    """UTF-16 or UTF-32 without a BOM, told from where the zero bytes of a text's first bytes fall.

    Text in those encodings (of Latin letters, digits and punctuation) has a zero
    byte beside each letter's: every other byte for UTF-16, three in four for UTF-32.
    None when the bytes hold few zeros (a stray NUL in a cell is for the row to report);
    ``""`` when they hold many, in no pattern of text.
    """
    size = len(head) - len(head) % 4
    if size < 8 or head.count(0) * 8 < size:
        return None
    zeros = [head[i:size:4].count(0) / (size // 4) for i in range(4)]
    if zeros[0] < 0.1 and min(zeros[1:]) > 0.9:
        return "utf-32-le"
    if zeros[3] < 0.1 and min(zeros[:3]) > 0.9:
        return "utf-32-be"
    even, odd = (zeros[0] + zeros[2]) / 2, (zeros[1] + zeros[3]) / 2
    if even < 0.1 and odd > 0.6:
        return "utf-16-le"
    if odd < 0.1 and even > 0.6:
        return "utf-16-be"
    return ""  # zeros in no pattern of text


def sniff_delimiter(sample: str, candidates: Sequence[str] = DELIMITERS) -> str:
    """The delimiter that splits the sample's rows into the most consistent number of cells.

    A delimiter that splits the first row (the header, in an export) comes
    first: one found only in a quoted cell of the data does not win.

    Example:
        >>> sniff_delimiter("nom;montant\\nA;1,5\\nB;2,5\\n"), sniff_delimiter("a,b\\n1,2\\n")
        (';', ',')
        >>> sniff_delimiter('Cell,Nom\\n514 555 0101,";=\\n;"\\n')
        ','
    """
    best: tuple[tuple[bool, bool, float, int], str] | None = None
    for delimiter in candidates:
        read = list(itertools.islice(csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter), 100))
        records = [r for r in read if any(c.strip() for c in r)]
        widths = [len(_trim(r)) for r in records]
        if not widths:
            continue
        width = max(set(widths), key=lambda w: (widths.count(w), w))
        # The first line splits: its cells (a header, or a title above one in Excel: "Title;;;;") count blanks too.
        score = (len(records[0]) > 1, width > 1, widths.count(width) / len(widths), width)
        if best is None or score > best[0]:
            best = (score, delimiter)
    return best[1] if best else candidates[0]


def _open_csv(path: str, header: bool, delimiter: str | None, encoding: str | None, limits: Limits) -> Table:
    encoding = encoding or detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ImportFileError(path, f"unknown encoding {encoding!r}") from None
    binary = open(path, "rb")  # noqa: SIM115 (closed by the Table)
    file = io.TextIOWrapper(binary, encoding=encoding, newline="")
    try:
        if delimiter is None:
            sample = file.read(64 * 1024)
            if len(sample) == 64 * 1024:  # drop the last, maybe cut, line
                sample = sample[: max(sample.rfind("\n"), 0)]
            delimiter = sniff_delimiter(sample)
            file.seek(0)
        elif len(delimiter) != 1:
            raise ImportFileError(path, f"a delimiter is one character, not {delimiter!r}")
        size = os.fstat(file.fileno()).st_size
    except UnicodeDecodeError as error:
        file.close()
        raise ImportFileError(path, f"cannot be read as {encoding}: {error}") from None
    except BaseException:
        file.close()
        raise
    lines = _Lines(file, limits)

    def rows() -> Iterator[tuple[int, list[str]] | Row]:
        try:
            yield from _csv_records(lines, delimiter, limits)
        except UnicodeDecodeError as error:
            raise ImportFileError(path, f"line {lines.number} cannot be read as {encoding}: {error}") from None

    def fraction() -> float | None:
        if not size or file.closed:
            return None
        return min(binary.tell() / size, 1.0)

    try:  # the header is read here: a file that breaks a limit already is closed
        return Table(
            path,
            _bounded(path, rows(), limits.rows),
            header=header,
            encoding=encoding,
            delimiter=delimiter,
            sheet=None,
            fraction=fraction,
            close=file.close,
        )
    except BaseException:
        file.close()
        raise


class _Runaway(Exception):
    """Raised through the CSV reader when a row runs over too many lines or characters."""

    def __init__(self, reason: str, long: bool = False) -> None:
        self.reason = reason
        self.long = long  # a line over the limit, left out


_LONG = "\x00long"  # in the queue of lines to read again: where a line over the limit was left out


class _Lines:
    """The lines of a CSV file for :mod:`csv`, each bounded, and the lines of the row being read.

    ``taken`` holds the lines handed out for the current row and ``first`` the
    line where it starts. A row that runs over more than ``cell_lines`` lines or
    ``row_chars`` characters, or a line longer than that, stops the reader
    (:class:`_Runaway`); lines can be queued to be read again.
    """

    def __init__(self, file: io.TextIOWrapper, limits: Limits) -> None:
        self.file = file
        self.max_lines = limits.cell_lines
        self.row_chars = 4 * limits.cell_chars + 65_536
        self.queue: collections.deque[str] = collections.deque()
        self.taken: list[str] = []
        self.chars = 0
        self.first = 1
        self.number = 1  # the line the next line handed out will be
        self.eof = False

    def __iter__(self) -> _Lines:
        return self

    def start(self) -> None:
        """A new row begins with the next line."""
        self.first = self.number
        self.taken = []
        self.chars = 0

    def __next__(self) -> str:
        if self.queue:
            text = self.queue.popleft()
        else:
            text = self.file.readline(self.row_chars)
            if not text:
                self.eof = True
                raise StopIteration
            if len(text) == self.row_chars and text[-1] not in "\r\n":
                while (more := self.file.readline(self.row_chars)) and more[-1] not in "\r\n":
                    pass  # the rest of the over-long line, left out
                text = _LONG
        if text is _LONG:
            self.number += 1
            raise _Runaway(f"line {self.number - 1} is longer than {self.row_chars:,} characters", long=True)
        if "\ufeff" in text:  # a byte-order mark inside the file (files pasted together): not text
            text = text.replace("\ufeff", "")
        self.taken.append(text)
        self.number += 1
        self.chars += len(text)
        if len(self.taken) > self.max_lines:
            lines = f"{self.max_lines} line{'s' if self.max_lines != 1 else ''}"
            raise _Runaway(f"a quoted cell opened on line {self.first} is not closed within {lines}")
        if self.chars > self.row_chars:
            raise _Runaway(f"the row starting on line {self.first} is longer than {self.row_chars:,} characters")
        return text

    def again(self, first: str | None = None) -> None:
        """Read the lines after the row's first line again, as rows of their own (and ``first`` before them)."""
        rest = self.taken[1:]
        if first is not None:
            rest.append(first)
        self.queue.extendleft(reversed(rest))
        self.number = self.first + 1
        self.eof = False


def _csv_records(lines: _Lines, delimiter: str, limits: Limits) -> Iterator[tuple[int, list[str]] | Row]:
    """The rows of a CSV file; a row that cannot be read is a :class:`Row` with its ``problem``, and reading goes on."""
    max_chars = limits.cell_chars
    while True:
        # Strict: a quote that closes a cell must end it, so two unbalanced quotes do not pair up over the rows between.
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        while True:
            lines.start()
            try:
                record = _next_record(reader, lines, delimiter)
            except StopIteration:
                return
            if isinstance(record, _Runaway):
                yield _broken(lines, delimiter, record.reason)
                lines.again(_LONG if record.long and lines.taken else None)
                break  # a new reader: the old one is inside the broken row
            if lines.chars > max_chars or any("\x00" in text for text in lines.taken):
                yield _checked(lines.first, record, max_chars)
            else:
                yield lines.first, record


def _next_record(reader: Iterator[list[str]], lines: _Lines, delimiter: str) -> list[str] | _Runaway:
    """The next record, or why the row cannot be read (StopIteration at the end)."""
    opened = f"a quoted cell opened on line {lines.first}"
    try:
        record = next(reader)
    except csv.Error as error:
        if lines.eof:
            return _Runaway(f"{opened} is not closed before the end of the file")
        if len(lines.taken) == 1:  # text after a closing quote on one line ('"Roy" Jr'): read as it comes
            return next(csv.reader(lines.taken, delimiter=delimiter, strict=False))
        return _Runaway(f"{opened} closes on line {lines.number - 1} before other text ({error})")
    except _Runaway as error:
        if lines.eof:
            return _Runaway(f"{opened} is not closed before the end of the file")
        if error.long and lines.taken:  # the line over the limit is reported on its own
            return _Runaway(f"{opened} runs into a line over the length limit", long=True)
        return error
    if lines.eof:  # the reader asked for more lines than the file has: a quote never closed
        return _Runaway(f"{opened} is not closed before the end of the file")
    return record


def _checked(line: int, record: list[str], max_chars: int) -> tuple[int, list[str]] | Row:
    """The record, or a row rejected for a cell over the length limit or holding a NUL."""
    for at, cell in enumerate(record):
        if len(cell) > max_chars:
            reason = f"a cell longer than {max_chars:,} characters (max_cell_chars)"
            return Row(line, tuple(cell[:max_chars] for cell in record), reason, at)
        if "\x00" in cell:
            return Row(line, tuple(record), "holds a NUL character (\\x00)", at)
    return line, record


def _broken(lines: _Lines, delimiter: str, reason: str) -> Row:
    """The row of a broken record: its first line's cells, as far as they go."""
    first = lines.taken[0][: lines.row_chars] if lines.taken else ""
    cells = next(csv.reader([first], delimiter=delimiter, strict=False), [])
    return Row(lines.first, tuple(cells), reason, None)


def _bounded(path: str, rows: Iterator[Any], most: int) -> Iterator[Any]:
    """The rows, and an :class:`ImportFileError` once there are more than ``most``."""
    for count, row in enumerate(rows, start=1):
        if count > most:
            raise ImportFileError(path, f"holds more than {most:,} rows (the limit max_rows): not imported")
        yield row


def _check_workbook(path: str, limits: Limits) -> None:
    """Refuse a workbook whose parts expand to more than the limit, before any is opened (a zip bomb).

    The sizes are those the zip's directory declares; reading a part never yields more than declared.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
            expanded = sum(info.file_size for info in parts)
            if expanded > limits.xlsx_bytes:
                raise ImportFileError(
                    path,
                    f"the workbook expands to {expanded:,} bytes, more than the limit of {limits.xlsx_bytes:,} "
                    "(max_xlsx_bytes): not opened",
                )
            longest = 8 * limits.cell_chars + 4096  # the XML of the longest cell allowed, escapes and all
            for info in parts:
                name = info.filename.lower()
                cells = name.endswith(".xml") and (name.startswith("xl/worksheets/") or "sharedstrings" in name)
                if cells and info.file_size > longest and _longest_text(archive, info) > longest:
                    raise ImportFileError(
                        path,
                        f"{info.filename} holds a text of more than {longest:,} bytes, far over the limit of "
                        f"{limits.cell_chars:,} characters a cell (max_cell_chars): not opened",
                    )
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as error:
        if isinstance(error, ImportFileError):
            raise
        raise ImportFileError(path, f"not a readable .xlsx workbook ({error})") from None


def _longest_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """The longest run of bytes between two ``<`` in a part, read in chunks (the XML parser would hold it whole)."""
    longest = run = 0
    with archive.open(info) as part:
        while chunk := part.read(1 << 20):
            pieces = chunk.split(b"<")
            run += len(pieces[0])
            if len(pieces) > 1:
                longest = max(longest, run, *map(len, pieces[1:-1]))
                run = len(pieces[-1])
    return max(longest, run)


def _open_workbook(path: str, header: bool, sheet: str | int | None, limits: Limits) -> Table:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportFileError(path, "reading .xlsx files needs openpyxl: pip install 'cohorts[excel]'") from None
    _check_workbook(path, limits)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises many kinds for a damaged file
        raise ImportFileError(path, f"not a readable .xlsx workbook ({error})") from None
    try:
        names = list(book.sheetnames)
        if sheet is None:
            worksheet = book.worksheets[0]
        elif isinstance(sheet, int):
            if not 0 <= sheet < len(names):
                raise ImportFileError(path, f"no sheet number {sheet}; the sheets are {names}")
            worksheet = book.worksheets[sheet]
        else:
            matches = [n for n in names if n.casefold() == sheet.casefold()]
            if not matches:
                raise ImportFileError(path, f"no sheet named {sheet!r}; the sheets are {names}")
            worksheet = book[matches[0]]
    except BaseException:
        book.close()
        raise
    total = worksheet.max_row
    if isinstance(total, int) and total > limits.rows:
        book.close()
        raise ImportFileError(
            path, f"the sheet holds {total:,} rows, more than the limit of {limits.rows:,} (max_rows): not imported"
        )
    done = [0]
    max_chars = limits.cell_chars

    def rows() -> Iterator[tuple[int, tuple[Any, ...]] | Row]:
        number = 0
        try:
            for number, values in enumerate(worksheet.iter_rows(min_row=1, values_only=True), start=1):
                done[0] = number
                if any(type(v) is str and (len(v) > max_chars or v[:1] in _ODD_STARTS) for v in values):
                    yield _sheet_row(number, values, max_chars)
                else:
                    yield number, values
        except ImportFileError:
            raise
        except Exception as error:  # a damaged part: openpyxl and the XML parser raise many kinds
            raise ImportFileError(path, f"row {number + 1} of the sheet cannot be read ({error})") from None

    def fraction() -> float | None:
        return min(done[0] / total, 1.0) if total else None

    try:
        return Table(
            path,
            _bounded(path, rows(), limits.rows),
            header=header,
            encoding=None,
            delimiter=None,
            sheet=worksheet.title,
            fraction=fraction,
            close=book.close,
        )
    except BaseException:
        book.close()
        raise


_ODD_STARTS = frozenset(("'", "\ufeff"))


def _sheet_row(number: int, values: Sequence[Any], max_chars: int) -> tuple[int, tuple[Any, ...]] | Row:
    """A sheet's row whose text cells need a look: too long (a reject), a BOM, or a text that starts with ``'``.

    A workbook's text is the text itself: an apostrophe that starts it is kept,
    marked with another so that reading a cell (:func:`unmark`) gives it back.
    """
    cells = list(values)
    for at, value in enumerate(cells):
        if type(value) is not str:
            continue
        if len(value) > max_chars:
            reason = f"a cell longer than {max_chars:,} characters (max_cell_chars)"
            trimmed = tuple(v[:max_chars] if type(v) is str else v for v in cells)
            return Row(number, trimmed, reason, at)
        if "\ufeff" in value:
            value = cells[at] = value.replace("\ufeff", "")
        if value[:1] == "'" and unmark(value) != value:
            cells[at] = "'" + value
    return number, tuple(cells)


# -- cells as text -------------------------------------------------------------


def cell_text(cell: Any) -> str:
    """A cell's text as a spreadsheet shows it (integral floats without ``.0``)."""
    match cell:
        case None:
            return ""
        case str():
            return unmark(cell)
        case bool():
            return "TRUE" if cell else "FALSE"
        case float() if math.isfinite(cell) and cell.is_integer():
            return str(int(cell))
        case dt.datetime() if cell.time() == dt.time(0):
            return cell.date().isoformat()
        case dt.date() | dt.datetime() | dt.time():
            return cell.isoformat()
        case _:
            return str(cell)


def unmark(text: str) -> str:
    """The text without the leading apostrophe that only tells a spreadsheet "this is text".

    Exports write it before ids, phones and postal codes (Shopify: ``'7210...``,
    ``'+1514...``) so a spreadsheet keeps their digits, and :meth:`ImportReport.write_rejects`
    before formula-like cells; a workbook never shows it. So ``'0123`` in a
    CSV and ``0123`` in a workbook import the same; ``'Tis`` keeps its apostrophe.
    Only one mark is taken off: ``''=x`` is the text ``'=x``.
    """
    if text[:1] == "'" and len(text) > 1 and (text[1] in _MARKED_STARTS or text.lstrip("'")[:1] in _MARKED_STARTS):
        return text[1:]  # one mark off: ''=x is the text '=x (a rejects file writes it so)
    return text


def neutralise(text: str) -> str:
    """The text as a CSV cell a spreadsheet shows as text and :func:`unmark` reads back as ``text``.

    A formula-like text gets the apostrophe spreadsheets take as "this is text";
    a text that itself starts with such an apostrophe (``'=x``) gets one more.
    """
    if text.startswith(_FORMULA_STARTS) or (text[:1] == "'" and unmark(text) != text):
        return "'" + text
    return text
