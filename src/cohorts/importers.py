"""Import customers from CSV and Excel files into a repository and a group.

Spreadsheet exports are taken as they come: UTF-8 with or without a BOM or
Windows-1252, ``,`` ``;`` or tab delimiters (sniffed), quoted cells with line
breaks, trailing empty rows and columns, ``.xlsx`` workbooks. Each column is
mapped to an attribute path (``customer.phone``, ``appointment.at``) or
skipped; values are normalised on the way in (phones to E.164, dates, decimal
commas, email shape), and every row that cannot be imported is reported with
its line in the file and the reason, never dropped silently.

The layers are plain functions of their arguments: reading (:func:`open_table`),
guessing a mapping (:func:`guess_target`), reading values (:func:`normalise`);
only :func:`import_file` writes, inside one ``repository.transaction()``.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import math
import os
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeAlias

import attrs
import phonenumbers
from dateutil import parser as date_parser

from ._html import html_table, html_text
from .ast import CUSTOMER, EVENT_TIME, Condition, Op, Path
from .errors import CohortsError, UnknownAttributeError
from .groups import Groups
from .model import Customer, CustomerId, Event
from .progress import Progress
from .repository import MemoryRepository, Repository, require
from .schema import AttributeType, Schema, default_schema
from .values import DEFAULT_REGION, fold_text, is_known, to_bool

__all__ = [
    "ID_TARGET",
    "Field",
    "ImportFileError",
    "ImportPreview",
    "ImportReport",
    "InvalidValue",
    "MappingError",
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

Column: TypeAlias = str | int
"""A column: its header text, or its 0-based position when there is no header (or its header is blank)."""

Policy: TypeAlias = Literal["fill", "overwrite"]

ID_TARGET = "customer.id"
"""The mapping target of the column holding customers' own (external) ids."""

DELIMITERS = (",", ";", "\t")
BATCH_SIZE = 5000
REASON_HEADER = "Import error"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT = AttributeType.TEXT


class ImportFileError(CohortsError, ValueError):
    """The file cannot be read as asked: unknown format, missing sheet, no header...

    Attributes:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {message}")


class MappingError(CohortsError, ValueError):
    """A mapping names a column the file lacks or a target that cannot be imported.

    Raised before any row is read.

    Attributes:
        column: the column of the mapping at fault (header text or position), or ``None``.
        target: the target path at fault, or ``None``.
        suggestion: the nearest known target, or ``None``.
    """

    def __init__(
        self,
        message: str,
        column: Column | None = None,
        target: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.column = column
        self.target = target
        self.suggestion = suggestion
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        super().__init__(message)


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
        self._ahead: list[Row] = []
        self.header_line = 0
        self.header_cells: tuple[str, ...] = ()
        if header:
            first = next(self._rows, None)
            if first is not None:
                self.header_line = first.line
                self.header_cells = tuple(_trim(tuple(_cell_text(c) for c in first.cells)))
            width = len(self.header_cells)
        else:
            self._ahead = [row for _, row in zip(range(50), self._rows, strict=False)]
            width = max((len(row.cells) for row in self._ahead), default=0)
        self.columns: tuple[Column, ...] = tuple(
            name.strip() if i < len(self.header_cells) and name.strip() else i
            for i, name in enumerate((*self.header_cells, *([""] * (width - len(self.header_cells)))))
        )

    def __iter__(self) -> Iterator[Row]:
        """The data rows (never the header), blank rows left out, trailing blank cells trimmed."""
        ahead, self._ahead = self._ahead, []
        yield from ahead
        yield from self._rows

    def sample(self) -> list[Row]:
        """The rows read ahead to size a file without header (empty otherwise), before iteration starts."""
        return list(self._ahead)

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


def _trim(cells: Sequence[Any]) -> list[Any]:
    end = len(cells)
    while end and not _filled(cells[end - 1]):
        end -= 1
    return list(cells[:end])


def _filled(cell: Any) -> bool:
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
        records = list(csv.reader(io.StringIO(sample), delimiter=delimiter))
        widths = [len(_trim(r)) for r in records[:100] if any(c.strip() for c in r)]
        if not widths:
            continue
        width = max(set(widths), key=lambda w: (widths.count(w), w))
        score = (widths[0] > 1, width > 1, widths.count(width) / len(widths), width)
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


def _cell_text(cell: Any) -> str:
    """A cell's text as a spreadsheet shows it (integral floats without ``.0``)."""
    match cell:
        case None:
            return ""
        case str():
            return _unneutralise(cell)
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


def _unneutralise(text: str) -> str:
    # write_rejects prefixes formula-like cells with an apostrophe; take it off on the way back in.
    if text[:1] == "'" and text[1:2] in _FORMULA_STARTS and len(text) > 1:
        return text[1:]
    return text


def _neutralise(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


# -- guessing a mapping ----------------------------------------------------------


def _words(text: str) -> str:
    """Header text folded for comparison: no accents, lowercase, words separated by one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.split(r"[^0-9a-z]+", plain)).strip()


_GUESSES: dict[str, tuple[str, ...]] = {
    ID_TARGET: (
        "id", "customer id", "client id", "external id", "customer number", "client number", "customer no",
        "client no", "no client", "numero client", "numero de client", "no de client", "id client", "identifiant",
        "account number", "account", "dms id",
    ),
    "customer.first_name": ("first name", "firstname", "first", "given name", "prenom", "forename"),
    "customer.last_name": (
        "last name", "lastname", "last", "surname", "family name", "nom", "nom de famille", "name", "nom client",
    ),
    "customer.email": (
        "email", "e mail", "mail", "courriel", "adresse courriel", "email address", "e mail address",
        "adresse e mail", "adresse email", "adresse electronique", "correo", "correo electronico",
    ),
    "customer.phone": (
        "phone", "phone number", "telephone", "tel", "telephone number", "numero de telephone", "no de telephone",
        "home phone", "telephone maison", "tel maison", "landline", "main phone", "primary phone",
    ),
    "customer.mobile_phone": (
        "cell", "cellphone", "cell phone", "mobile", "mobile phone", "mobile number", "cellulaire", "cell number",
        "portable", "tel cellulaire", "telephone cellulaire", "sms", "texto", "numero de cellulaire", "gsm",
    ),
    "customer.city": ("city", "ville", "town", "municipalite", "ciudad"),
    "customer.region": ("province", "state", "region", "etat", "prov", "state province"),
    "customer.postal_code": ("postal code", "zip", "zip code", "code postal", "postcode", "cp"),
    "customer.language": ("language", "langue", "lang", "preferred language", "langue preferee"),
    "customer.status": ("status", "statut"),
    "customer.subscribed": ("subscribed", "opt in", "optin", "abonne", "consent", "consentement"),
    "customer.vehicle_make": ("make", "marque", "vehicle make", "marque du vehicule"),
    "customer.vehicle_model": ("model", "modele", "vehicle model", "modele du vehicule", "vehicle"),
    "customer.vehicle_year": ("year", "annee", "vehicle year", "model year", "annee du vehicule"),
    "customer.tags": ("tags", "tag", "labels", "etiquettes"),
    "customer.created_at": ("created", "created at", "date created", "date de creation", "customer since"),
    "appointment.at": (
        "appointment", "appointment date", "appointment time", "rendez vous", "date du rendez vous", "rdv",
        "date rdv", "next appointment", "prochain rendez vous",
    ),
}
_GUESS_BY_WORDS = {words: target for target, phrases in _GUESSES.items() for words in phrases}
_SKIP_WORDS = frozenset({_words(REASON_HEADER), "reason", "notes", "note", "comments", "commentaires"})


def guess_target(header: str, schema: Schema | None = None) -> str | None:
    """The attribute path a column's header most likely names, or ``None`` (skip).

    Exact paths and attribute names of the schema come first, then common
    English and French headers; accents, case and punctuation do not matter.

    Example:
        >>> [guess_target(h) for h in ("Cell", "Téléphone", "Courriel", "E-mail", "Prénom", "Nom", "Ville")]
        ['customer.mobile_phone', 'customer.phone', 'customer.email', 'customer.email', 'customer.first_name', \
'customer.last_name', 'customer.city']
        >>> guess_target("Favourite colour") is None
        True
    """
    schema = schema or default_schema()
    text = header.strip()
    if not text:
        return None
    try:
        path = Path.of(text)
    except ValueError:
        path = None
    if path is not None and _importable(path, schema):
        return str(path) if path.attribute != "id" else ID_TARGET
    words = _words(text)
    if words in _SKIP_WORDS:
        return None
    by_name = {_words(name): name for name in schema.categories.get(CUSTOMER, {})}
    if words in by_name:
        return f"{CUSTOMER}.{by_name[words]}"
    if words in _GUESS_BY_WORDS:
        return _GUESS_BY_WORDS[words]
    for prefix in ("customer ", "client ", "du client ", "de client ", "customer s "):
        if words.startswith(prefix) and words[len(prefix) :] in _GUESS_BY_WORDS:
            return _GUESS_BY_WORDS[words[len(prefix) :]]
    tokens = set(words.split())
    if tokens & {"email", "courriel", "mail"}:
        return "customer.email"
    if tokens & {"cell", "cellulaire", "mobile", "portable", "cellphone"}:
        return "customer.mobile_phone"
    if tokens & {"phone", "telephone", "tel"}:
        return "customer.phone"
    return None


def _importable(path: Path, schema: Schema) -> bool:
    if path.part is not None or path.aggregate is not None:
        return False
    if path.is_customer and path.attribute == "id":
        return True
    return schema.has(path)


def guess_mapping(columns: Iterable[Column], schema: Schema | None = None) -> dict[Column, str | None]:
    """A guessed target for every column; a target is guessed for one column at most.

    A lone mobile column becomes ``customer.phone`` (the number messages go to);
    with a home phone beside it, it stays ``customer.mobile_phone``.

    Example:
        >>> guess_mapping(["Prénom", "Cell", "Notes"])
        {'Prénom': 'customer.first_name', 'Cell': 'customer.phone', 'Notes': None}
        >>> guess_mapping(["Téléphone", "Cellulaire"])
        {'Téléphone': 'customer.phone', 'Cellulaire': 'customer.mobile_phone'}
    """
    schema = schema or default_schema()
    guesses = {column: guess_target(column, schema) if isinstance(column, str) else None for column in columns}
    targets = list(guesses.values())
    if "customer.mobile_phone" in targets and "customer.phone" not in targets:
        first = targets.index("customer.mobile_phone")
        guesses[list(guesses)[first]] = "customer.phone"
    taken: set[str] = set()
    for column, target in guesses.items():
        if target is None:
            continue
        if target in taken:
            guesses[column] = None
        taken.add(target)
    return guesses


# -- values ----------------------------------------------------------------------


class InvalidValue(CohortsError, ValueError):
    """A cell's value cannot be read as its target's type; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_NANP_REGIONS = frozenset({"US", "CA"})
_FAST_NANP = re.compile(r"(\+?1[ .-]?)?\(?([2-9][0-9]{2})\)?[ .-]?([0-9]{3})[ .-]?([0-9]{4})")
_SEPARATORS = re.compile(r"\s*(?:[,;/|&\n]|\s(?:or|ou|and|et|y)\s)\s*", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s,;:<>()\[\]\"]+@[^@\s,;:<>()\[\]\"]+\.[^@\s,;:<>()\[\]\".]{2,}")
_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "no area code",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
}


def normalise_phone(text: str, region: str = DEFAULT_REGION) -> str:
    """A phone number in E.164 form, with ``region`` as the default country; raises InvalidValue.

    Example:
        >>> normalise_phone("(514) 555-0199"), normalise_phone("06 12 34 56 78", "FR")
        ('+15145550199', '+33612345678')
        >>> normalise_phone("514 555 0199 / 450 555 0123")
        Traceback (most recent call last):
        ...
        cohorts.importers.InvalidValue: two phone numbers in one cell: '514 555 0199 / 450 555 0123'
    """
    text = text.strip()
    if region in _NANP_REGIONS or text.startswith("+1"):
        fast = _FAST_NANP.fullmatch(text)
        if fast is not None and (fast.group(1) or "").strip(" .-") in ("", "1", "+1"):
            return "+1" + fast.group(2) + fast.group(3) + fast.group(4)
    chunks = [c for c in _SEPARATORS.split(text) if sum(ch.isdigit() for ch in c) >= 7]
    if len(chunks) > 1 or sum(ch.isdigit() for ch in text) > 17:
        raise InvalidValue(f"two phone numbers in one cell: {text!r}")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidValue(f"not a phone number: {text!r} ({_parse_reason(error)})") from None
    result = phonenumbers.is_possible_number_with_reason(number)
    if result != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidValue(f"not a phone number: {text!r} ({_REASONS.get(result, 'impossible number')})")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _parse_reason(error: phonenumbers.NumberParseException) -> str:
    kinds = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "no digits to read",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return kinds.get(error.error_type, "unreadable")


def normalise_email(text: str) -> str:
    """An email address, checked for shape, with its domain in lowercase; raises InvalidValue.

    Example:
        >>> normalise_email(" Marie.Roy@Example.COM ")
        'Marie.Roy@example.com'
    """
    text = text.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if text.count("@") > 1:
        raise InvalidValue(f"two email addresses in one cell: {text!r}")
    if not _EMAIL.fullmatch(text):
        raise InvalidValue(f"not an email address: {text!r}")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


_SPACES = re.compile(r"[\s\u00a0\u202f']")
_CURRENCY = "$€£¥"


def normalise_number(text: str) -> int | float:
    """A number from text written with a decimal point or comma and any thousands separator.

    Example:
        >>> normalise_number("1 234,50"), normalise_number("1,234.50"), normalise_number("12,5"), normalise_number("7")
        (1234.5, 1234.5, 12.5, 7)
    """
    raw = text
    text = _SPACES.sub("", text.strip()).strip(_CURRENCY)
    if text.endswith("%"):
        raise InvalidValue(f"not a number: {raw!r} (percentages are not read)")
    if "," in text and "." in text:
        thousands, decimal = (",", ".") if text.rfind(".") > text.rfind(",") else (".", ",")
        text = text.replace(thousands, "").replace(decimal, ".")
    elif text.count(",") == 1:
        text = text.replace(",", ".")
    elif text.count(",") > 1 and re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise InvalidValue(f"not a number: {raw!r}")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise InvalidValue(f"not a number: {raw!r}")
    return number


def normalise_time(text: str, *, day_first: bool = False) -> dt.datetime:
    """A (naive) datetime from ISO text or any common date spelling; raises InvalidValue.

    Example:
        >>> normalise_time("03/04/2026", day_first=True), normalise_time("2026-03-04 09:30")
        (datetime.datetime(2026, 4, 3, 0, 0), datetime.datetime(2026, 3, 4, 9, 30))
    """
    text = text.strip()
    quick = _quick_time(text, day_first)
    if quick is not None:
        return quick
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    if re.fullmatch(r"[\d.,]+", text) and len(re.findall(r"\d+", text)) < 3:
        raise InvalidValue(f"not a date: {text!r}")
    try:
        return date_parser.parse(text, dayfirst=day_first, default=dt.datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        raise InvalidValue(f"not a date: {text!r}") from None


_ISO_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:,?\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def _quick_time(text: str, day_first: bool) -> dt.datetime | None:
    """The common spellings read without dateutil (as dateutil reads them); None for the others."""
    iso = _ISO_TIME.fullmatch(text)
    if iso is not None:
        year, month, day, hour, minute, second = iso.groups()
    else:
        numeric = _NUMERIC_DATE.fullmatch(text)
        if numeric is None:
            return None
        first, _, second_part, year, hour, minute, second = numeric.groups()
        month, day = (second_part, first) if day_first else (first, second_part)
        if int(month) > 12 >= int(day):
            month, day = day, month
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None


def _list_value(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"[,;|\n]", text) if item.strip()]


def normalise(
    value: Any,
    kind: AttributeType,
    *,
    region: str = DEFAULT_REGION,
    day_first: bool = False,
    email: bool = False,
) -> Any:
    """A cell's value read as an attribute of type ``kind``; None when blank; raises InvalidValue.

    ``email`` checks text for the shape of an email address.

    Example:
        >>> normalise("514.555.0199", AttributeType.PHONE), normalise("oui", AttributeType.BOOLEAN)
        ('+15145550199', True)
        >>> normalise("04/03/2026", AttributeType.DATE, day_first=True)
        datetime.date(2026, 3, 4)
    """
    if isinstance(value, dt.datetime | dt.date) and kind in (AttributeType.DATE, AttributeType.DATETIME):
        if kind is AttributeType.DATE:
            return value.date() if isinstance(value, dt.datetime) else value
        return value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool) and kind is AttributeType.NUMBER:
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue(f"not a number: {value!r}")
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(value, bool) and kind is AttributeType.BOOLEAN:
        return value
    text = _cell_text(value).strip()
    if not text:
        return None
    match kind:
        case AttributeType.TEXT:
            return normalise_email(text) if email else text
        case AttributeType.PHONE:
            return normalise_phone(text, region)
        case AttributeType.NUMBER:
            return normalise_number(text)
        case AttributeType.BOOLEAN:
            flag = to_bool(text)
            if flag is None:
                raise InvalidValue(f"not yes or no: {text!r}")
            return flag
        case AttributeType.DATE:
            return normalise_time(text, day_first=day_first).date()
        case AttributeType.DATETIME:
            return normalise_time(text, day_first=day_first)
        case AttributeType.LIST:
            return _list_value(text)
    raise AssertionError(kind)


# -- mapping -----------------------------------------------------------------------


def _slug(name: str) -> str:
    return "_".join(_words(name).split()) or "column"


@attrs.frozen
class Field:
    """A mapped column: where it is, and the attribute it fills."""

    position: int
    column: Column
    target: str
    path: Path
    kind: AttributeType | None  # None for the customer id
    email: bool = False

    @property
    def is_id(self) -> bool:
        """True for the column of customers' own ids."""
        return self.target == ID_TARGET


@attrs.frozen
class Plan:
    """How a file's columns become customers: resolved before any row is read.

    Attributes:
        mapping: every column's target (``None``: skipped), in column order.
        guessed: the columns whose target was guessed (not given by the caller).
        fields: the mapped columns.
        schema: the schema with the new attributes.
        added: the paths created as new text attributes.
    """

    mapping: Mapping[Column, str | None]
    guessed: Mapping[Column, str | None]
    fields: tuple[Field, ...]
    schema: Schema
    added: tuple[str, ...]

    def field_for(self, target: str) -> Field | None:
        """The column mapped to ``target``, if any."""
        return next((f for f in self.fields if f.target == target), None)


def _find_column(key: Column, columns: Sequence[Column]) -> int:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise MappingError(f"a mapping key is a header text or a 0-based position, not {key!r}", column=None)
    if isinstance(key, int):
        if 0 <= key < len(columns):
            return key
        raise MappingError(f"no column at position {key}; the file has {len(columns)} column(s)", column=key)
    exact = [i for i, c in enumerate(columns) if c == key]
    if not exact:
        exact = [i for i, c in enumerate(columns) if isinstance(c, str) and _words(c) == _words(key)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise MappingError(f"{len(exact)} columns are named {key!r}; map them by position instead", column=key)
    names = [c for c in columns if isinstance(c, str)]
    import difflib

    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    raise MappingError(
        f"no column named {key!r}; the columns are {', '.join(map(repr, names)) or 'unnamed'}",
        column=key,
        suggestion=close[0] if close else None,
    )


def _new_paths(new_attributes: Iterable[str], columns: Sequence[Column], schema: Schema) -> dict[str, int | None]:
    """The paths ``new_attributes`` creates, each with the column it names (or None)."""
    paths: dict[str, int | None] = {}
    for entry in new_attributes:
        if not isinstance(entry, str) or not entry.strip():
            raise MappingError(f"a new attribute is a name or a path, not {entry!r}")
        text = entry.strip()
        path: Path | None = None
        if "." in text:
            try:
                path = Path.of(text)
            except ValueError:
                path = None
            if path is not None and not (path.is_customer or path.category in schema.categories):
                path = None if " " in text else path
        if path is not None:
            paths[str(path)] = None
            continue
        named = [i for i, c in enumerate(columns) if isinstance(c, str) and _words(c) == _words(text)]
        paths[f"{CUSTOMER}.{_slug(text)}"] = named[0] if named else None
    return paths


def plan_mapping(
    columns: Sequence[Column],
    schema: Schema,
    mapping: Mapping[Column, str | None] | None = None,
    new_attributes: Iterable[str] = (),
    hints: Mapping[Column, str | None] | None = None,
) -> Plan:
    """Resolve a mapping against a file's columns and a schema; raises MappingError.

    Columns left out of ``mapping`` take the guessed target. A target the
    schema lacks is an error unless ``new_attributes`` lists it (as a path,
    or as a column's header, which then maps to ``customer.<name>``).
    ``hints`` replace the guesses of some columns (guesses from their values).

    Example:
        >>> plan = plan_mapping(["Cell", "Policy number"], default_schema(), new_attributes=["Policy number"])
        >>> dict(plan.mapping), plan.added
        ({'Cell': 'customer.phone', 'Policy number': 'customer.policy_number'}, ('customer.policy_number',))
    """
    explicit: dict[int, str | None] = {}
    for key, target in (mapping or {}).items():
        found = _find_column(key, columns)
        if target is not None and not isinstance(target, str):
            raise MappingError(f"column {key!r} maps to {target!r}; a target is a path text or None", column=key)
        explicit[found] = target.strip() if isinstance(target, str) else None
    new = _new_paths(new_attributes, columns, schema)
    for path_text, named in new.items():
        if named is not None and named not in explicit:
            explicit[named] = path_text
    guesses = guess_mapping(columns, schema)
    guesses.update(hints or {})
    chosen: dict[Column, str | None] = {}
    guessed: dict[Column, str | None] = {}
    taken = {t for t in explicit.values() if t}
    for position, column in enumerate(columns):
        if position in explicit:
            chosen[column] = explicit[position]
            continue
        guess = guesses[column]
        if guess in taken:
            guess = None
        chosen[column] = guessed[column] = guess
    added: list[str] = []
    fields: list[Field] = []
    seen: dict[str, Column] = {}
    for position, (column, target) in enumerate(chosen.items()):
        if target is None:
            continue
        try:
            path = Path.of(target)
        except ValueError as error:
            raise MappingError(f"column {column!r}: {error}", column=column, target=target) from None
        canonical = ID_TARGET if path.is_customer and path.attribute == "id" else str(path)
        if canonical in seen:
            message = f"columns {seen[canonical]!r} and {column!r} both map to {canonical!r}"
            raise MappingError(message, column, canonical)
        seen[canonical] = column
        if path.part is not None or path.aggregate is not None:
            raise MappingError(f"column {column!r}: cannot import into {target!r}", column=column, target=target)
        kind: AttributeType | None
        if canonical == ID_TARGET:
            kind = None
        elif schema.has(path):
            kind = schema.lookup(path)
        elif canonical in new:
            if path.attribute == EVENT_TIME:
                schema = schema.merge(Schema({path.category: {}}))
            else:
                schema = schema.add(path.category, path.attribute, AttributeType.TEXT)
            added.append(canonical)
            kind = schema.lookup(path)
        else:
            try:
                schema.type_of(path)
            except UnknownAttributeError as error:
                raise MappingError(
                    f"column {column!r} maps to {target!r}, which the schema lacks"
                    " (list it in new_attributes to create it as text)",
                    column=column,
                    target=target,
                    suggestion=error.suggestion,
                ) from None
            raise AssertionError(path)  # pragma: no cover - type_of raised
        email = kind is AttributeType.TEXT and "email" in path.attribute
        fields.append(Field(position, column, canonical, path, kind, email=email))
    events = {f.path.category for f in fields if not f.path.is_customer}
    for category in sorted(events):
        if not any(f.path.category == category and f.path.attribute == EVENT_TIME for f in fields):
            column = next(f.column for f in fields if f.path.category == category)
            raise MappingError(
                f"column {column!r} fills {category} events, but no column gives their time ({category}.at)",
                column=column,
            )
    for path_text in new:
        if path_text not in added and not schema.has(Path.of(path_text)):
            path = Path.of(path_text)
            schema = schema.add(path.category, path.attribute, AttributeType.TEXT)
            added.append(path_text)
    return Plan(chosen, guessed, tuple(fields), schema, tuple(added))


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
    """

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]
    guessed: Mapping[Column, str | None]
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None

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
        return "\n".join(line.rstrip() for line in lines)


def _guess_from_values(values: Sequence[Any], region: str) -> str | None:
    texts = [_cell_text(v).strip() for v in values if _filled(v)]
    if len(texts) < 1:
        return None
    for target in ("customer.email", "customer.phone"):
        good = sum(_looks_like(target, text, region) for text in texts)
        if good >= 0.8 * len(texts):
            return target
    return None


def _looks_like(target: str, text: str, region: str) -> bool:
    try:
        if target == "customer.email":
            normalise_email(text)
            return True
        if sum(c.isdigit() for c in text) < 7:
            return False
        normalise_phone(text, region)
        return True
    except InvalidValue:
        return False


def _content_guesses(table: Table, sample: Sequence[Row], region: str) -> dict[Column, str | None]:
    guesses: dict[Column, str | None] = {}
    taken: set[str] = set()
    for position, column in enumerate(table.columns):
        if isinstance(column, str):
            continue
        guess = _guess_from_values([r.cells[position] for r in sample if position < len(r.cells)], region)
        if guess and guess not in taken:
            guesses[column] = guess
            taken.add(guess)
    return guesses


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
) -> ImportPreview:
    """The first ``rows`` rows of a file and the mapping guessed from its headers.

    Without a header row, columns are named by position and a column whose
    values all look like emails or phone numbers is guessed as such.

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
    with open_table(path, header=header, delimiter=delimiter, encoding=encoding, sheet=sheet) as table:
        sample = [row for _, row in zip(range(max(rows, 50)), table, strict=False)]
        guessed = guess_mapping(table.columns, schema)
        guessed.update(_content_guesses(table, sample, region))
        width = len(table.columns)
        shown = sample[:rows]
        return ImportPreview(
            columns=table.columns,
            rows=tuple(tuple(_cell_text(c) for c in (*r.cells, *([None] * (width - len(r.cells))))) for r in shown),
            lines=tuple(r.line for r in shown),
            guessed=guessed,
            delimiter=table.delimiter,
            encoding=table.encoding,
            sheet=table.sheet,
        )


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
                writer.writerow([*(_neutralise(h) for h in head), REASON_HEADER])
            for line in sorted(rows):
                cells, reasons = rows[line]
                texts = [_neutralise(_cell_text(c)) for c in cells]
                texts += [""] * (width - len(texts))
                writer.writerow([*texts, _neutralise(f"line {line}: " + "; ".join(reasons))])
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
        for reject in self.rejects[:10]:
            where = f" ({reject.column})" if reject.column is not None else ""
            lines.append(f"  line {reject.line}{where}: {reject.reason}")
        if len(self.rejects) > 10:
            lines.append(f"  ... and {len(self.rejects) - 10} more")
        return "\n".join(lines)


# -- rows into records ----------------------------------------------------------------


@attrs.define
class _Record:
    line: int
    cells: tuple[Any, ...]
    id: str | None
    key: Any
    attributes: dict[str, Any]
    events: list[Event]
    duplicates: list[_Record] = attrs.field(factory=list)


def _converter(field: Field, region: str, day_first: bool) -> Callable[[Any], Any]:
    """The function that reads one cell of ``field``: its value, None when blank, or InvalidValue."""
    kind = field.kind
    if kind is None:
        return lambda cell: _cell_text(cell).strip() or None
    read_text: Callable[[str], Any]
    match kind:
        case AttributeType.TEXT:
            read_text = normalise_email if field.email else str
        case AttributeType.PHONE:
            read_text = lambda text: normalise_phone(text, region)
        case AttributeType.NUMBER:
            read_text = normalise_number
        case AttributeType.DATETIME:
            read_text = lambda text: normalise_time(text, day_first=day_first)
        case _:
            read_text = lambda text: normalise(text, kind, region=region, day_first=day_first)
    email = field.email

    def convert(cell: Any) -> Any:
        if type(cell) is str:
            text = (_unneutralise(cell) if cell[:1] == "'" else cell).strip()
            return read_text(text) if text else None
        return normalise(cell, kind, region=region, day_first=day_first, email=email)

    return convert


class _RowReader:
    """Turns rows into records (normalised values and events) or rejects, for one plan."""

    def __init__(self, plan: Plan, key_field: Field | None, width: int, region: str, day_first: bool) -> None:
        self.plan = plan
        self.width = width
        self.steps = [
            (
                f.position,
                f.column,
                _converter(f, region, day_first),
                f.kind is None,
                f.path.category if not f.path.is_customer else None,
                f.path.attribute,
                f is key_field,
            )
            for f in plan.fields
        ]

    def __call__(self, row: Row) -> tuple[_Record | None, list[Reject]]:
        rejects: list[Reject] = []
        cells = row.cells
        size = len(cells)
        if size > self.width:
            reason = f"a value beyond the last column ({size} cells, {self.width} columns)"
            rejects.append(Reject(row.line, self.width, reason, cells))
        ident: str | None = None
        attributes: dict[str, Any] = {}
        event_fields: dict[str, dict[str, Any]] | None = None
        key: Any = None
        for position, column, convert, is_id, category, attribute, is_key in self.steps:
            if position >= size:
                continue
            try:
                value = convert(cells[position])
            except InvalidValue as error:
                rejects.append(Reject(row.line, column, error.reason, cells))
                continue
            if value is None:
                continue
            if is_id:
                ident = value
            elif category is None:
                attributes[attribute] = value
            else:
                if event_fields is None:
                    event_fields = {}
                event_fields.setdefault(category, {})[attribute] = value
            if is_key:
                key = value if is_id else _match_key(value)
        events: list[Event] = []
        for category, values in (event_fields or {}).items():
            at = values.pop(EVENT_TIME, None)
            if at is None:
                time_field = self.plan.field_for(f"{category}.{EVENT_TIME}")
                where = time_field.column if time_field else None
                rejects.append(Reject(row.line, where, f"a {category} needs a time ({category}.at is blank)", cells))
                continue
            events.append(Event(category, at, values))
        if rejects:
            return None, rejects
        if ident is None and not attributes and not events:
            return None, []
        return _Record(row.line, cells, ident, key, attributes, events), []


def _match_key(value: Any) -> Any:
    if type(value) is str and value.isascii():
        return value.lower()
    if isinstance(value, str):
        return fold_text(value)
    return value


def _merge(old: Mapping[str, Any], new: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    merged = dict(old)
    for name, value in new.items():
        if policy == "overwrite" or not is_known(merged.get(name)):
            merged[name] = value
    return merged


# -- writing ---------------------------------------------------------------------------


class _Rollback(Exception):
    """Raised inside the transaction to undo it (dry run, or atomic with rejects)."""


def _resolve_match_on(match_on: str | None, plan: Plan) -> Field | None:
    if match_on is None:
        for target in (ID_TARGET, "customer.phone", "customer.email"):
            field = plan.field_for(target)
            if field is not None:
                return field
        return None
    text = match_on.strip()
    name = text.removeprefix(f"{CUSTOMER}.")
    if name in ("id", "external_id", "external id"):
        name = "id"
    target = ID_TARGET if name == "id" else f"{CUSTOMER}.{name}"
    field = plan.field_for(target)
    if field is None:
        raise MappingError(f"match_on={match_on!r}, but no column maps to {target!r}", target=target)
    if field.kind is AttributeType.LIST:
        raise MappingError(f"match_on={match_on!r}: a list attribute cannot identify customers", target=target)
    return field


_LOOKUP_CHUNK = 64  # keys per select(): the rule's list is checked value by value
_EXACT_LIMIT = 200_000  # stored customers indexed exactly at the start of an import


_HASH_BITS = 0xFFFFFFFFFFFFFFFF


class _Bloom:
    """A set of keys in fixed memory (8 MiB), without false negatives: may say "maybe" for a new key.

    Each key sets four bits, at ``h1 + i * h2`` for i in 0..3 (two halves of
    its hash); the loops are written out, as they run for every row of an import.
    """

    def __init__(self, bits: int = 1 << 26) -> None:
        self.size = bits
        self.bits = bytearray((bits + 7) // 8)

    def add(self, key: Any) -> None:
        self.add_all((key,))

    def __contains__(self, key: Any) -> bool:
        return bool(self.maybe((key,)))

    def add_all(self, keys: Iterable[Any]) -> None:
        """Add every key."""
        bits, size = self.bits, self.size
        for key in keys:
            first = hash(key) & _HASH_BITS
            step = (first >> 32) | 1
            p = first % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + step) % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + 2 * step) % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (first + 3 * step) % size
            bits[p >> 3] |= 1 << (p & 7)

    def maybe(self, keys: Iterable[Any]) -> list[Any]:
        """The keys that may have been added (all that were, and rarely others), in order."""
        bits, size = self.bits, self.size
        found = []
        for key in keys:
            first = hash(key) & _HASH_BITS
            step = (first >> 32) | 1
            p = first % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + 2 * step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            p = (first + 3 * step) % size
            if not bits[p >> 3] >> (p & 7) & 1:
                continue
            found.append(key)
        return found


class _KeyIndex:
    """Which stored customers a match key may name, without querying for every row.

    Stored customers are indexed exactly when there are few of them (or the
    repository is in memory), else their keys go into a Bloom filter of
    fixed size; customers this import creates go into the exact index in
    memory, or into the Bloom filter otherwise, so memory does not grow with
    the file. Keys the index cannot rule out are looked up in the repository.
    """

    def __init__(self, repository: Repository, key_field: Field | None) -> None:
        self.key_field = key_field
        self.exact: dict[Any, list[CustomerId]] | None = None
        self.seen: _Bloom | None = None
        if key_field is None:
            return
        in_memory = isinstance(repository, MemoryRepository)
        if not in_memory:
            self.seen = _Bloom()
        if in_memory or len(repository) <= _EXACT_LIMIT:
            self.exact = {}
        for customer in repository:
            key = self.stored_key(customer)
            if key is None:
                continue
            if self.exact is not None:
                self.exact.setdefault(key, []).append(customer.id)
            elif self.seen is not None:
                self.seen.add_all((key,))

    def stored_key(self, customer: Customer) -> Any:
        """The match key of a stored customer, read as the file's keys are."""
        field = self.key_field
        assert field is not None
        if field.is_id:
            return str(customer.id)
        try:
            value = normalise(customer.attributes.get(field.path.attribute), field.kind or _TEXT)
        except InvalidValue:
            return None
        return None if value is None else _match_key(value)

    def candidates(self, keys: Sequence[Any]) -> tuple[dict[Any, list[CustomerId]], list[Any]]:
        """The ids known for some keys, and the keys to look up in the repository."""
        if self.exact is None:
            assert self.seen is not None
            return {}, self.seen.maybe(keys)
        exact = self.exact
        known = {key: exact[key] for key in keys if key in exact}
        if self.seen is None:
            return known, []
        return known, self.seen.maybe(key for key in keys if key not in known)

    def created(self, pairs: Sequence[tuple[Any, CustomerId]]) -> None:
        """Note the customers the import created: (key, id) pairs."""
        if self.seen is not None:
            self.seen.add_all(key for key, _ in pairs)
        elif self.exact is not None:
            for key, ident in pairs:
                self.exact.setdefault(key, []).append(ident)


class _Writer:
    """Writes batches of records into a repository, matching existing customers."""

    def __init__(
        self,
        repository: Repository,
        report: ImportReport,
        key_field: Field | None,
        policy: Policy,
        group: str | None,
        groups: Groups,
        refresh: bool = False,
    ) -> None:
        self.repository = repository
        self.report = report
        self.key_field = key_field
        self.policy = policy
        self.group = group
        self.groups = groups
        self.refresh = refresh
        self._prefix = uuid.uuid4().hex[:12]
        self._count = 0
        self._keys = _KeyIndex(repository, key_field)

    def _get(self, ident: str) -> Customer | None:
        customer: Customer | None = self.repository.get(ident)
        if customer is None and ident.isdigit() and ident[0] != "0" and len(ident) < 19:
            customer = self.repository.get(int(ident))
        return customer

    def _existing(self, records: Sequence[_Record]) -> dict[Any, list[Customer]]:
        """The stored customers each record's key matches."""
        field = self.key_field
        found: dict[Any, list[Customer]] = {}
        keys = list(dict.fromkeys(r.key for r in records if r.key is not None))
        if field is None or not keys:
            return found
        known, unsure = self._keys.candidates(keys)
        for key, ids in known.items():
            customers = [c for c in map(self.repository.get, ids) if c is not None]
            if customers:
                found[key] = customers
        if not unsure:
            return found
        if field.is_id:
            for key in unsure:
                customer = self._get(key)
                if customer is not None:
                    found[key] = [customer]
            return found
        values = {r.key: r.attributes[field.path.attribute] for r in records if r.key in set(unsure)}
        wanted = list(values.values())
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = tuple(wanted[start : start + _LOOKUP_CHUNK])
            for ident in self.repository.select(Condition(field.path, Op.IN, chunk)):
                customer = self.repository.get(ident)
                key = None if customer is None else self._keys.stored_key(customer)
                if customer is not None and key in values:
                    found.setdefault(key, []).append(customer)
        return found

    def write(self, batch: Sequence[_Record]) -> None:
        report = self.report
        unique: dict[Any, _Record] = {}
        order: list[_Record] = []
        for record in batch:
            # Rows of one customer: same key, or (without a key) the same id.
            same = record.key if record.key is not None else None if record.id is None else ("id", record.id)
            first = unique.get(same) if same is not None else None
            if first is None and record.id is not None:
                first_by_id = unique.get(("id", record.id))
                if first_by_id is not None and first_by_id.key is not None and record.key is not None:
                    reason = f"id {record.id!r} is on line {first_by_id.line} with another {self._key_name()}"
                    self._reject_row(record, reason)
                    continue
                first = first_by_id
            if first is None:
                if same is not None:
                    unique[same] = record
                if record.id is not None:
                    unique.setdefault(("id", record.id), record)
                order.append(record)
                continue
            if first.id is not None and record.id is not None and first.id != record.id:
                self._reject_row(record, f"same {self._key_name()} as line {first.line} but another id")
                continue
            first.attributes = _merge(first.attributes, record.attributes, self.policy)
            first.events.extend(record.events)
            first.id = first.id or record.id
            if first.key is None and record.key is not None:
                first.key = record.key
                unique.setdefault(record.key, first)
            first.duplicates.append(record)
            report.merged += 1
        existing = self._existing(order)
        customers: list[Customer] = []
        created_keys: list[tuple[Any, CustomerId]] = []
        created = updated = 0
        by_id = self.key_field is not None and self.key_field.is_id
        for record in order:
            matches = existing.get(record.key, []) if record.key is not None else []
            if len(matches) > 1:
                ids = ", ".join(repr(c.id) for c in matches[:5])
                self._reject(record, f"{self._key_name()} matches {len(matches)} customers ({ids})")
                continue
            stored = matches[0] if matches else None
            if stored is not None and record.id is not None and str(stored.id) != record.id:
                self._reject(record, f"{self._key_name()} belongs to customer {stored.id!r}, not {record.id!r}")
                continue
            if stored is None and record.id is not None and not by_id:
                stored = self._get(record.id)
                if stored is not None and self._keys.stored_key(stored) not in (None, record.key):
                    self._reject(record, f"id {record.id!r} belongs to a customer with another {self._key_name()}")
                    continue
            if stored is not None:
                ident: CustomerId = stored.id
                attributes = _merge(stored.attributes, record.attributes, self.policy)
                updated += 1
            else:
                ident = record.id if record.id is not None else self._new_id()
                attributes = record.attributes
                created += 1
                if record.key is not None:
                    created_keys.append((record.key, ident))
            customers.append(Customer(ident, attributes, record.events))
        if customers:
            self.repository.upsert(customers)  # adds the events an existing customer lacks
        self._keys.created(created_keys)
        if self.group is not None and customers:
            self.groups._add_imported(self.group, [c.id for c in customers])  # just upserted: not looked up again
        if self.refresh and customers:
            # Groups with rules re-read the customers this batch created or changed, in the same transaction.
            self.groups.refresh(customer_ids=[c.id for c in customers])
        report.created += created
        report.updated += updated

    def _reject_row(self, record: _Record, reason: str) -> None:
        self.report.rejects.append(Reject(record.line, None, reason, record.cells))
        self.report.rejected += 1

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}-{self._count}"

    def _key_name(self) -> str:
        return "id" if self.key_field is None or self.key_field.is_id else self.key_field.path.attribute

    def _reject(self, record: _Record, reason: str) -> None:
        column = self.key_field.column if self.key_field is not None else None
        self.report.rejects.append(Reject(record.line, column, reason, record.cells))
        self.report.rejected += 1
        for duplicate in record.duplicates:
            again = f"{reason} (as line {record.line})"
            self.report.rejects.append(Reject(duplicate.line, column, again, duplicate.cells))
            self.report.rejected += 1
            self.report.merged -= 1


# -- import_file -------------------------------------------------------------------------


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
    require(repository, Repository, "import_file")
    region = (region or repository.region or DEFAULT_REGION).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r} (a two-letter country code such as 'US', 'CA', 'FR')")
    with open_table(path, header=header, delimiter=delimiter, encoding=encoding, sheet=sheet) as table:
        hints = _content_guesses(table, table.sample(), region) if not header else None
        plan = plan_mapping(table.columns, repository.schema, mapping, new_attributes, hints)
        key_field = _resolve_match_on(match_on, plan)
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
        )
        groups = Groups(repository)
        ruled = any(groups.definition(name).rule is not None for name in groups.names())
        width = len(table.columns)
        try:
            with repository.transaction():
                _grow_schema(repository, plan)
                if group is not None:
                    report.group = group = _ensure_group(groups, group)
                writer = _Writer(repository, report, key_field, policy, group, groups, refresh=ruled)
                _run(table, plan, writer, report, key_field, width, region, day_first, atomic, progress, batch_size)
                if dry_run or (atomic and report.rejected):
                    raise _Rollback
        except BaseException as error:
            if not isinstance(error, _Rollback):
                raise
            report.written = False
            if not dry_run:
                report.created = report.updated = report.merged = 0
        finally:
            report.rejects.sort(key=lambda reject: reject.line)  # stable: a row's problems keep their order
    return report


def _run(
    table: Table,
    plan: Plan,
    writer: _Writer,
    report: ImportReport,
    key_field: Field | None,
    width: int,
    region: str,
    day_first: bool,
    atomic: bool,
    progress: Callable[[Progress], object] | None,
    batch_size: int,
) -> None:
    batch: list[_Record] = []
    read_row = _RowReader(plan, key_field, width, region, day_first)
    for row in table:
        report.rows_read += 1
        record, rejects = read_row(row)
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
    if progress is not None:
        progress(Progress(report.rows_read, 1.0, report.rejected))
