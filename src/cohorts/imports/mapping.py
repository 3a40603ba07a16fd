"""Which column fills which attribute: guessed from headers (and values), or given, resolved into a plan."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..ast import CUSTOMER, EVENT_TIME, Path
from ..errors import CohortsError, UnknownAttributeError
from ..schema import AttributeType, Schema, default_schema
from .cells import InvalidValue, normalise_email, normalise_phone
from .reading import Column, Row, Table, _cell_text, _filled

ID_TARGET = "customer.id"
"""The mapping target of the column holding customers' own (external) ids."""

REASON_HEADER = "Import error"
"""The last column of a rejects file (:meth:`ImportReport.write_rejects`), skipped when it comes back."""


class MappingError(CohortsError, ValueError):
    """A mapping names a column the file lacks or a target that cannot be imported.

    Raised before any row is read.

    Attributes:
        column: the column of the mapping at fault (header text or position), or ``None``.
        target: the target path at fault, or ``None``.
        suggestion: the nearest known target, or ``None``.
    """

    __module__ = "cohorts.importers"  # raised and documented as cohorts.importers.MappingError

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
