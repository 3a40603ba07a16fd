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
    """A row of a file: the 1-based line (or sheet row) where it starts, and its cells."""

    line: int
    cells: tuple[Any, ...]


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
        rows: Iterator[tuple[int, Sequence[Any]]],
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
                self.header_cells = tuple(_trim(tuple(cell_text(c) for c in first.cells)))
            width = len(self.header_cells)
        else:
            self._ahead.extend(itertools.islice(self._rows, 50))
            width = max((len(row.cells) for row in self._ahead), default=0)
        self.columns: tuple[Column, ...] = tuple(
            name.strip() if i < len(self.header_cells) and name.strip() else i
            for i, name in enumerate((*self.header_cells, *([""] * (width - len(self.header_cells)))))
        )

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
            if watch and _footer_line(row, width):
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


def _non_blank(rows: Iterator[tuple[int, Sequence[Any]]]) -> Iterator[Row]:
    for line, cells in rows:
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
) -> Table:
    """Open a ``.csv`` (or ``.tsv``/``.txt``) or ``.xlsx`` file as a :class:`Table`.

    ``delimiter`` and ``encoding`` are sniffed when not given; ``sheet`` names
    a worksheet (or gives its 0-based index); the first one is read by default.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clients.csv"
        >>> _ = path.write_text('Nom;Cell\\n"Tremblay\\nJr";514 555 0199\\n;\\n', encoding="utf-8-sig")
        >>> with open_table(path) as table:
        ...     print(table.columns, table.delimiter, table.encoding, list(table))
        ('Nom', 'Cell') ; utf-8-sig [Row(line=2, cells=('Tremblay\\nJr', '514 555 0199'))]
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImportFileError(name, "no such file")
    suffix = os.path.splitext(name)[1].lower()
    if suffix in (".xlsx", ".xlsm"):
        return _open_workbook(name, header, sheet)
    if suffix == ".xls":
        raise ImportFileError(name, "the old .xls format is not supported; save the sheet as .xlsx or .csv")
    if suffix not in (".csv", ".tsv", ".txt", ""):
        raise ImportFileError(name, f"unsupported file type {suffix!r}; use .csv or .xlsx")
    if sheet is not None:
        raise ImportFileError(name, "a CSV file has no sheets")
    return _open_csv(name, header, delimiter, encoding)


def detect_encoding(path: str) -> str:
    """The encoding of a text file: UTF-8 (``utf-8-sig`` with a BOM), UTF-16 with a BOM, else Windows-1252.

    The whole file is checked (in chunks, in constant memory), so a stray byte
    on the last line does not break an import half-way.
    """
    with open(path, "rb") as file:
        head = file.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
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
        read = list(csv.reader(io.StringIO(sample), delimiter=delimiter))[:100]
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


def _open_csv(path: str, header: bool, delimiter: str | None, encoding: str | None) -> Table:
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
    reader = csv.reader(file, delimiter=delimiter, strict=False)

    def rows() -> Iterator[tuple[int, list[str]]]:
        line = 1
        try:
            for record in reader:
                yield line, record
                line = reader.line_num + 1
        except UnicodeDecodeError as error:
            raise ImportFileError(path, f"line {line} cannot be read as {encoding}: {error}") from None
        except csv.Error as error:
            raise ImportFileError(path, f"line {line}: {error}") from None

    def fraction() -> float | None:
        if not size or file.closed:
            return None
        return min(binary.tell() / size, 1.0)

    return Table(
        path,
        rows(),
        header=header,
        encoding=encoding,
        delimiter=delimiter,
        sheet=None,
        fraction=fraction,
        close=file.close,
    )


def _open_workbook(path: str, header: bool, sheet: str | int | None) -> Table:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportFileError(path, "reading .xlsx files needs openpyxl: pip install 'cohorts[excel]'") from None
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
    done = [0]

    def rows() -> Iterator[tuple[int, tuple[Any, ...]]]:
        for number, values in enumerate(worksheet.iter_rows(min_row=1, values_only=True), start=1):
            done[0] = number
            yield number, values

    def fraction() -> float | None:
        return min(done[0] / total, 1.0) if total else None

    return Table(
        path,
        rows(),
        header=header,
        encoding=None,
        delimiter=None,
        sheet=worksheet.title,
        fraction=fraction,
        close=book.close,
    )


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
    """
    if text[:1] == "'" and len(text) > 1 and text[1] in _MARKED_STARTS:
        return text[1:]
    return text


def neutralise(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
