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
from ..values import DEFAULT_REGION
from .cells import (
    InvalidValue,
    is_mobile,
    normalise,
    normalise_email,
    normalise_phone,
    read_flag,
    read_phone,
    split_phones,
)
from .reading import REASON_HEADER, Column, Row, Table, cell_text, is_filled
from .report import Note

ID_TARGET = "customer.id"
"""The mapping target of the column holding customers' own (external) ids."""



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


def header_words(text: str) -> str:
    """Header text folded for comparison: no accents, lowercase, words separated by one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.split(r"[^0-9a-z]+", plain)).strip()


_NOT = "not "
"""A mapping target ``not customer.email_subscribed`` stores the opposite of a yes/no column (an opt-out)."""

_GUESSES: dict[str, tuple[str, ...]] = {
    ID_TARGET: (
        "id", "customer id", "client id", "external id", "customer number", "client number", "customer no",
        "client no", "no client", "numero client", "numero de client", "no de client", "id client", "identifiant",
        "account number", "account", "dms id", "record id", "contact id", "lead id", "member id", "subscriber id",
        "n client", "n de client", "code client", "identifiant client",
    ),
    "customer.first_name": ("first name", "firstname", "first", "given name", "prenom", "forename"),
    "customer.last_name": (
        "last name", "lastname", "last", "surname", "family name", "nom", "nom de famille", "name", "nom client",
    ),
    "customer.email": (
        "email", "e mail", "mail", "courriel", "adresse courriel", "email address", "e mail address",
        "adresse e mail", "adresse email", "adresse electronique", "correo", "correo electronico",
        "adresse de courriel", "primary email", "courriel principal",
    ),
    "customer.phone": (
        "phone", "phone number", "telephone", "tel", "telephone number", "numero de telephone", "no de telephone",
        "home phone", "telephone maison", "tel maison", "landline", "main phone", "primary phone",
        "telephone principal", "business phone", "work phone", "other phone",
    ),
    "customer.mobile_phone": (
        "cell", "cellphone", "cell phone", "mobile", "mobile phone", "mobile number", "cellulaire", "cell number",
        "portable", "tel cellulaire", "telephone cellulaire", "sms", "texto", "numero de cellulaire", "gsm",
        "mobile phone number", "cellular", "cellular phone", "cell phone number", "telephone mobile",
        "tel portable", "telephone portable", "numero de portable",
    ),
    "customer.city": ("city", "ville", "town", "municipalite", "ciudad", "town city", "locality"),
    "customer.region": (
        "province", "state", "region", "etat", "prov", "state province", "state region", "province code",
        "state code", "region code", "province state",
    ),
    "customer.postal_code": (
        "postal code", "zip", "zip code", "code postal", "postcode", "cp", "zip postal code", "postal zip code",
        "zip postal", "zipcode",
    ),
    "customer.language": (
        "language", "langue", "lang", "preferred language", "langue preferee", "langue de correspondance",
    ),
    "customer.status": ("status", "statut"),
    "customer.subscribed": (
        "subscribed", "opt in", "optin", "abonne", "consent", "consentement", "marketing consent",
    ),
    "customer.email_subscribed": (
        "accepts email marketing", "accepts marketing", "email marketing", "email opt in", "email optin",
        "email subscribed", "email subscription", "email consent", "email marketing consent", "newsletter",
        "infolettre", "abonne infolettre", "abonne a l infolettre", "inscrit infolettre", "consentement courriel",
        "consentement infolettre", "accepte les courriels",
    ),
    "customer.sms_subscribed": (
        "accepts sms marketing", "sms marketing", "sms opt in", "sms optin", "sms consent", "sms subscribed",
        "consentement sms", "consentement texto", "accepte les sms", "accepte les textos", "text message opt in",
    ),
    _NOT + "customer.subscribed": (
        "unsubscribed", "opted out", "opt out", "optout", "desabonne", "do not contact", "ne pas contacter",
        "desinscrit",
    ),
    _NOT + "customer.email_subscribed": (
        "email opt out", "email optout", "hasoptedoutofemail", "has opted out of email",
        "unsubscribed from all email", "unsubscribed from email", "email unsubscribed", "unsub time",
        "do not email", "desabonne infolettre", "desinscrit infolettre",
    ),
    _NOT + "customer.sms_subscribed": (
        "sms opt out", "sms optout", "do not call", "donotcall", "do not text", "sms unsubscribed",
        "ne pas appeler",
    ),
    "customer.vehicle_make": ("make", "marque", "vehicle make", "marque du vehicule"),
    "customer.vehicle_model": ("model", "modele", "vehicle model", "modele du vehicule", "vehicle"),
    "customer.vehicle_year": ("year", "annee", "vehicle year", "model year", "annee du vehicule"),
    "customer.tags": ("tags", "tag", "labels", "etiquettes", "group membership", "groups", "groupes", "segments"),
    "customer.created_at": (
        "created", "created at", "date created", "date de creation", "customer since", "create date",
        "created date", "creation date", "date added", "signup date", "sign up date", "date d inscription",
        "date d ajout", "client depuis", "member since", "date registered", "registration date",
    ),
    "customer.timezone": ("timezone", "time zone", "fuseau horaire"),
    "customer.total_spent": ("total spent", "montant total", "total des achats", "total depense", "lifetime value"),
    "appointment.at": (
        "appointment", "appointment date", "appointment time", "rendez vous", "date du rendez vous", "rdv",
        "date rdv", "next appointment", "prochain rendez vous",
    ),
}
_GUESS_BY_WORDS = {words: target for target, phrases in _GUESSES.items() for words in phrases}
_WEAK = frozenset({"name", "first", "last", "account", "mail", "make", "model", "year", "status", "vehicle",
                   "created", "sms", "region", "labels", "groups", "tel", "cp", "prov", "lang", "state"})
_SKIP_WORDS = frozenset(
    {header_words(REASON_HEADER), "reason", "notes", "note", "comments", "commentaires", "remarques", "fax",
     "telecopieur", "fax number", "business fax", "home fax"}
)
_PREFIXES = {
    "customer": None, "client": None, "du client": None, "de client": None, "customer s": None, "contact": None,
    "default address": "other", "billing": "other", "billing address": "other", "shipping": "other",
    "shipping address": "other", "mailing": None, "address": "other", "home": "home", "work": "work",
    "business": "work", "office": "work", "other": "other", "alternate": "other", "secondary": "other",
    "primary": "primary", "main": "primary",
}
"""Words before a known header (``Mailing City``, ``Default Address Phone``) and what they say of a phone."""

_MOBILE_WORDS = frozenset(
    {"cell", "cellphone", "cellular", "cellulaire", "mobile", "portable", "gsm", "sms", "texto", "handy"}
)
_ROLE_RANK = {"primary": 0, "plain": 1, "home": 2, "work": 3, "other": 4, "mobile": 5}


@attrs.frozen
class _Guess:
    """What a header says: its target, how sure (0 a word of it, 1 a prefixed phrase, 2 a phrase, 3 a path)."""

    target: str | None
    strength: int = 0
    role: str = "plain"  # for phones and emails: primary, plain, home, work, other, mobile
    rank: int = 0  # the number of a numbered repeat (Phone 2, E-mail 3 - Value)


_NUMBERED = re.compile(r"(.*?[a-z]) ?([0-9]{1,2})")


def _guess(header: str, schema: Schema) -> _Guess:
    """The target a header names, with how sure the guess is (see :func:`guess_target`)."""
    text = header.strip()
    if not text:
        return _Guess(None)
    try:
        path = Path.of(text)
    except ValueError:
        path = None
    if path is not None and _importable(path, schema):
        return _Guess(str(path) if path.attribute != "id" else ID_TARGET, 3)
    if " - " in text:  # Google Contacts: "Phone 1 - Value", "Phone 1 - Type", "Address 1 - City"
        left, _, right = text.rpartition(" - ")
        part = header_words(right)
        if part == "value":
            return _guess(left, schema)
        base = header_words(left)
        if part in ("type", "label", "kind") or not ({"address", "adresse"} & set(base.split())):
            return _Guess(None)
        found = _by_words(part, schema)
        return attrs.evolve(found, strength=min(found.strength, 1)) if found.target else found
    words = header_words(text)
    if words in _SKIP_WORDS:
        return _Guess(None)
    numbered = _NUMBERED.fullmatch(words) if words not in _GUESS_BY_WORDS else None
    if numbered is not None:  # numbered repeats: Phone 1, Phone 2, Email 2
        found = _by_words(numbered.group(1), schema)
        if found.target is not None:
            rank = int(numbered.group(2))
            role = found.role if found.role == "mobile" or rank <= 1 else "other"
            return attrs.evolve(found, rank=rank, role=role)
    return _by_words(words, schema)


def _by_words(words: str, schema: Schema) -> _Guess:
    tokens = set(words.split())
    by_name = {header_words(name): name for name in schema.categories.get(CUSTOMER, {})}
    if words in by_name:
        return _Guess(f"{CUSTOMER}.{by_name[words]}", 2, _role(tokens))
    if words in _GUESS_BY_WORDS:
        return _Guess(_GUESS_BY_WORDS[words], 1 if words in _WEAK else 2, _role(tokens))
    for prefix, role in _PREFIXES.items():
        rest = words[len(prefix) + 1 :]
        if words.startswith(prefix + " ") and rest in _GUESS_BY_WORDS:
            target = _GUESS_BY_WORDS[rest]
            own = _role(set(rest.split()))
            return _Guess(target, 1, own if own != "plain" or role is None else role)
    if tokens & {"fax", "telecopieur"} or words.endswith((" type", " label")):
        return _Guess(None)
    opt_out = tokens & {"unsubscribed", "unsub", "optout", "desabonne"} or "opt out" in words
    if opt_out and not tokens & {"reason", "title", "campaign", "id", "ip", "source", "by", "comment", "other"}:
        # An opt-out, whatever else the header says; an opt-in only from the phrases above: a
        # Mailchimp OPTIN_TIME is in its unsubscribed export too, and must not make anyone contactable.
        channel = "email_" if tokens & {"email", "mail", "courriel", "newsletter", "infolettre"} else ""
        channel = "sms_" if tokens & {"sms", "texto", "text"} else channel
        return _Guess(f"{_NOT}{CUSTOMER}.{channel}subscribed", 0)
    if tokens & {"email", "courriel", "mail"}:
        return _Guess("customer.email", 0, _role(tokens))
    if tokens & _MOBILE_WORDS:
        return _Guess("customer.mobile_phone", 0, "mobile")
    if tokens & {"phone", "telephone", "tel"}:
        return _Guess("customer.phone", 0, _role(tokens))
    return _Guess(None)


def _role(tokens: set[str]) -> str:
    if tokens & _MOBILE_WORDS:
        return "mobile"
    for prefix, role in _PREFIXES.items():
        if role is not None and prefix in tokens:
            return role
    return "primary" if tokens & {"principal", "principale"} else "plain"


def guess_target(header: str, schema: Schema | None = None) -> str | None:
    """The attribute path a column's header most likely names, or ``None`` (skip).

    Exact paths and attribute names of the schema come first, then common
    English and French headers and the headers of the usual exports (Google
    Contacts, Shopify, Mailchimp, HubSpot, Salesforce); accents, case and
    punctuation do not matter. A yes/no column that says the opposite of a
    consent (``Email Opt Out``) maps to ``not customer.email_subscribed``.

    Example:
        >>> [guess_target(h) for h in ("Cell", "Téléphone", "Courriel", "E-mail", "Prénom", "Nom", "Ville")]
        ['customer.mobile_phone', 'customer.phone', 'customer.email', 'customer.email', 'customer.first_name', \
'customer.last_name', 'customer.city']
        >>> [guess_target(h) for h in ("E-mail 1 - Value", "E-mail 1 - Type", "Email Opt Out", "Record ID")]
        ['customer.email', None, 'not customer.email_subscribed', 'customer.id']
        >>> guess_target("Favourite colour") is None
        True
    """
    schema = schema or default_schema()
    target = _guess(header, schema).target
    return target if target is not None and _known(target, schema) else None


def _importable(path: Path, schema: Schema) -> bool:
    if path.part is not None or path.aggregate is not None:
        return False
    if path.is_customer and path.attribute == "id":
        return True
    return schema.has(path)


def _known(target: str, schema: Schema) -> bool:
    """True when the schema has the target (a guess for an attribute it lacks is no guess)."""
    inverted = target.startswith(_NOT)
    path = Path.of(target.removeprefix(_NOT))
    if not _importable(path, schema):
        return False
    return not inverted or schema.lookup(path) is AttributeType.BOOLEAN


def guess_mapping(columns: Iterable[Column], schema: Schema | None = None) -> dict[Column, str | None]:
    """A guessed target for every column; a target is guessed for one column at most, but lists.

    Of several phone columns, ``customer.phone`` goes to the primary one (a plain
    ``Phone`` before a home, work or address phone), ``customer.mobile_phone``
    to the mobile one, and the others to ``customer.other_phones``; a lone
    mobile column is the phone (the number messages go to). Of several email
    columns, the first is ``customer.email`` and the others ``customer.other_emails``.
    Companion columns (``Phone 1 - Type``) are not values: they label them.

    Example:
        >>> guess_mapping(["Prénom", "Cell", "Notes"])
        {'Prénom': 'customer.first_name', 'Cell': 'customer.phone', 'Notes': None}
        >>> guess_mapping(["Téléphone", "Cellulaire"])
        {'Téléphone': 'customer.phone', 'Cellulaire': 'customer.mobile_phone'}
        >>> guess_mapping(["Default Address Phone", "Phone"])
        {'Default Address Phone': 'customer.other_phones', 'Phone': 'customer.phone'}
    """
    return _guess_columns(list(columns), schema or default_schema(), None, DEFAULT_REGION)[0]


def _guess_columns(
    columns: Sequence[Column],
    schema: Schema,
    samples: Sequence[Sequence[Any]] | None,
    region: str,
) -> tuple[dict[Column, str | None], list[Note]]:
    """The guessed target of every column, and notes on the guesses left out (said in the report).

    ``samples`` are the first rows' cells: a guess their values contradict
    (an email column whose values are not emails) is dropped, and phone values
    that are mobile numbers make their column the mobile one.
    """
    notes: list[Note] = []
    guesses: dict[int, _Guess] = {}
    for position, column in enumerate(columns):
        found = _guess(column, schema) if isinstance(column, str) else _Guess(None)
        if found.target is not None and not _known(found.target, schema):
            found = _Guess(None)
        if found.target is not None and samples is not None:
            values = [cell_text(row[position]).strip() for row in samples if position < len(row)]
            values = [v for v in values if v]
            bad = _contradicted(found.target, values, schema, region)
            if bad is not None:
                message = f"named like {found.target}, but its values are not (such as {bad!r}): skipped"
                notes.append(Note(column, message))
                found = _Guess(None)
            elif found.target in ("customer.phone", "customer.mobile_phone") and _mostly_mobile(values, region):
                found = attrs.evolve(found, role="mobile")
        guesses[position] = found
    chosen: dict[int, str | None] = {p: g.target for p, g in guesses.items()}
    _allocate_phones(columns, guesses, chosen, schema, notes)
    _allocate_emails(columns, guesses, chosen, schema, notes)
    by_target: dict[str, list[int]] = {}
    for position, target in chosen.items():
        if target is not None:
            by_target.setdefault(target.removeprefix(_NOT), []).append(position)
    for target, positions in by_target.items():
        if len(positions) < 2 or _is_list(target, schema):
            continue
        best = min(positions, key=lambda p: (-guesses[p].strength, p))
        for position in positions:
            if position != best:
                chosen[position] = None
                notes.append(Note(columns[position], f"also reads as {target}, which {columns[best]!r} fills: skipped"))
    return {columns[p]: t for p, t in chosen.items()}, notes


def _is_list(target: str, schema: Schema) -> bool:
    return target != ID_TARGET and schema.lookup(Path.of(target.removeprefix(_NOT))) is AttributeType.LIST


def _allocate_phones(
    columns: Sequence[Column], guesses: Mapping[int, _Guess], chosen: dict[int, str | None], schema: Schema,
    notes: list[Note],
) -> None:
    phones = [p for p, t in chosen.items() if t in ("customer.phone", "customer.mobile_phone")]
    if not phones:
        return
    if len(phones) == 1:
        chosen[phones[0]] = "customer.phone"
        return
    order = sorted(phones, key=lambda p: (_ROLE_RANK[guesses[p].role], guesses[p].rank, -guesses[p].strength, p))
    main = order[0]
    mobiles = [p for p in phones if guesses[p].role == "mobile" and p != main]
    for position in phones:
        chosen[position] = None
    chosen[main] = "customer.phone"
    if mobiles and schema.has(Path(CUSTOMER, "mobile_phone")):
        chosen[mobiles[0]] = "customer.mobile_phone"
    overflow = schema.lookup(Path(CUSTOMER, "other_phones")) is AttributeType.LIST
    for position in order:
        if chosen[position] is None:
            if overflow:
                chosen[position] = "customer.other_phones"
            else:
                notes.append(Note(columns[position], "another phone, and the schema has no customer.other_phones"))


def _allocate_emails(
    columns: Sequence[Column], guesses: Mapping[int, _Guess], chosen: dict[int, str | None], schema: Schema,
    notes: list[Note],
) -> None:
    emails = [p for p, t in chosen.items() if t == "customer.email"]
    if len(emails) < 2:
        return
    order = sorted(emails, key=lambda p: (guesses[p].role not in ("primary", "plain"), guesses[p].rank, p))
    overflow = schema.lookup(Path(CUSTOMER, "other_emails")) is AttributeType.LIST
    for position in order[1:]:
        chosen[position] = "customer.other_emails" if overflow else None
        if not overflow:
            notes.append(Note(columns[position], "another email, and the schema has no customer.other_emails"))


def _contradicted(target: str, values: Sequence[str], schema: Schema, region: str) -> str | None:
    """A value of the sample that shows the column holds something else than its header says, or None.

    Only values of another kind count (an email column of ``* Home`` labels, a
    phone column of words): a column of badly written phones stays the phone
    column, and its bad cells are rejected with their reason.
    """
    if len(values) < 2 or target == ID_TARGET:
        return None
    path = Path.of(target.removeprefix(_NOT))
    kind = schema.lookup(path)
    email = kind in (AttributeType.TEXT, AttributeType.LIST) and "email" in path.attribute
    if email:
        other = [v for v in values if "@" not in v]
    elif kind is AttributeType.PHONE or (kind is AttributeType.LIST and path.attribute.endswith("phones")):
        other = [v for v in values if sum(c.isdigit() for c in v) < 5]
    elif kind in (AttributeType.BOOLEAN, AttributeType.DATE, AttributeType.DATETIME, AttributeType.NUMBER):
        other = [v for v in values if not _readable(v, kind, region)]
    else:
        return None
    return other[0] if len(other) * 5 >= len(values) * 4 else None


def _readable(text: str, kind: AttributeType, region: str) -> bool:
    try:
        if kind is AttributeType.BOOLEAN:
            read_flag(text)
        else:
            normalise(text, kind, region=region)
    except InvalidValue:
        return False
    return True


def _mostly_mobile(values: Sequence[str], region: str) -> bool:
    """True when the numbers that tell (outside North America) are mostly mobile ones."""
    told: list[bool] = []
    for text in values:
        try:
            mobile = is_mobile(read_phone(split_phones(text)[0], region).number)
        except (InvalidValue, IndexError):
            continue
        if mobile is not None:
            told.append(mobile)
    return len(told) >= 2 and sum(told) * 5 >= 4 * len(told)


def _companions(columns: Sequence[Column]) -> dict[int, int]:
    """The label column of each value column: ``Phone 1 - Type`` (or ``- Label``) for ``Phone 1 - Value``."""
    values: dict[str, int] = {}
    labels: dict[str, int] = {}
    for position, column in enumerate(columns):
        if not isinstance(column, str):
            continue
        left, dash, right = column.strip().rpartition(" - ")
        if dash:
            base, part = header_words(left), header_words(right)
        else:
            words = header_words(column)
            base, _, part = words.rpartition(" ")
        if part in ("type", "label", "kind"):
            labels.setdefault(base, position)
        elif part == "value" and dash:
            values.setdefault(base, position)
        else:
            values.setdefault(header_words(column), position)
    return {values[base]: label for base, label in labels.items() if base in values}


# -- mapping -----------------------------------------------------------------------


def _slug(name: str) -> str:
    return "_".join(header_words(name).split()) or "column"


@attrs.frozen
class Field:
    """A mapped column: where it is, the attribute it fills, and how its cells are read.

    Attributes:
        invert: a yes/no column that says the opposite of its attribute (``Email Opt Out``).
        label: the position of the column that labels each of its cells (``Phone 1 - Type``), or None.
        extension: the attribute that keeps a phone's extension (``phone_extension``), or None.
        day_first: the day/month order of its dates (None: the import's default); ``strict``
            rejects dates that can only be read in the other order.
    """

    position: int
    column: Column
    target: str
    path: Path
    kind: AttributeType | None  # None for the customer id
    email: bool = False
    invert: bool = False
    label: int | None = None
    extension: str | None = None
    day_first: bool | None = None
    strict: bool = False

    @property
    def is_id(self) -> bool:
        """True for the column of customers' own ids."""
        return self.target == ID_TARGET

    @property
    def consent(self) -> bool:
        """True for a consent (``subscribed``, ``email_subscribed``, ``sms_subscribed``): never guessed past."""
        name = self.path.attribute
        return self.kind is AttributeType.BOOLEAN and (name == "subscribed" or name.endswith("_subscribed"))


@attrs.frozen
class Plan:
    """How a file's columns become customers: resolved before any row is read.

    Attributes:
        mapping: every column's target (``None``: skipped), in column order.
        guessed: the columns whose target was guessed (not given by the caller).
        fields: the mapped columns.
        schema: the schema with the new attributes.
        added: the paths created as new text attributes.
        notes: what the guesses left out or paired (said in the report).
        filled: for each mapped column's position, the share of the sampled rows that fill it.
    """

    mapping: Mapping[Column, str | None]
    guessed: Mapping[Column, str | None]
    fields: tuple[Field, ...]
    schema: Schema
    added: tuple[str, ...]
    notes: tuple[Note, ...] = ()
    filled: Mapping[int, float] = attrs.field(factory=dict)

    def field_for(self, target: str) -> Field | None:
        """The column mapped to ``target``, if any."""
        return next((f for f in self.fields if f.target == target), None)

    def slot(self, name: str, kind: AttributeType) -> str | None:
        """``name`` when the schema has that customer attribute of that kind (``mobile_phone``, ``other_phones``)."""
        return name if self.schema.lookup(Path(CUSTOMER, name)) is kind else None


def _find_column(key: Column, columns: Sequence[Column]) -> int:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise MappingError(f"a mapping key is a header text or a 0-based position, not {key!r}", column=None)
    if isinstance(key, int):
        if 0 <= key < len(columns):
            return key
        raise MappingError(f"no column at position {key}; the file has {len(columns)} column(s)", column=key)
    exact = [i for i, c in enumerate(columns) if c == key]
    if not exact:
        exact = [i for i, c in enumerate(columns) if isinstance(c, str) and header_words(c) == header_words(key)]
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
        named = [i for i, c in enumerate(columns) if isinstance(c, str) and header_words(c) == header_words(text)]
        paths[f"{CUSTOMER}.{_slug(text)}"] = named[0] if named else None
    return paths


def plan_mapping(
    columns: Sequence[Column],
    schema: Schema,
    mapping: Mapping[Column, str | None] | None = None,
    new_attributes: Iterable[str] = (),
    hints: Mapping[Column, str | None] | None = None,
    *,
    samples: Sequence[Sequence[Any]] | None = None,
    region: str = DEFAULT_REGION,
) -> Plan:
    """Resolve a mapping against a file's columns and a schema; raises MappingError.

    Columns left out of ``mapping`` take the guessed target, checked against
    the first rows' cells when ``samples`` are given. A target the schema
    lacks is an error unless ``new_attributes`` lists it (as a path, or as a
    column's header, which then maps to ``customer.<name>``). ``hints``
    replace the guesses of some columns (guesses from their values). A target
    ``not <path>`` stores the opposite of a yes/no column. Several columns may
    fill one list attribute (their items are joined); any other attribute takes one column.

    Example:
        >>> plan = plan_mapping(["Cell", "Policy number"], default_schema(), new_attributes=["Policy number"])
        >>> dict(plan.mapping), plan.added
        ({'Cell': 'customer.phone', 'Policy number': 'customer.policy_number'}, ('customer.policy_number',))
        >>> plan = plan_mapping(["Phone 1 - Type", "Phone 1 - Value", "Email Opt Out"], default_schema())
        >>> [(f.column, f.target, f.label, f.invert) for f in plan.fields]
        [('Phone 1 - Value', 'customer.phone', 0, False), ('Email Opt Out', 'customer.email_subscribed', None, True)]
    """
    explicit: dict[int, str | None] = {}
    for key, target in (mapping or {}).items():
        found = _find_column(key, columns)
        if target is not None and not isinstance(target, str):
            raise MappingError(f"column {key!r} maps to {target!r}; a target is a path text or None", column=key)
        explicit[found] = " ".join(target.split()) if isinstance(target, str) and target.strip() else None
    new = _new_paths(new_attributes, columns, schema)
    for path_text, named in new.items():
        if named is not None and named not in explicit:
            explicit[named] = path_text
    guesses, guess_notes = _guess_columns(columns, schema, samples, region)
    guesses.update(hints or {})
    chosen: dict[Column, str | None] = {}
    guessed: dict[Column, str | None] = {}
    taken = {t.removeprefix(_NOT) for t in explicit.values() if t}
    for position, column in enumerate(columns):
        if position in explicit:
            chosen[column] = explicit[position]
            continue
        guess = guesses[column]
        if guess is not None and guess.removeprefix(_NOT) in taken and not _is_list(guess, schema):
            guess = None
        chosen[column] = guessed[column] = guess
    mapped = {columns[p] for p in explicit}
    notes = [n for n in guess_notes if n.column not in mapped]
    added: list[str] = []
    fields: list[Field] = []
    seen: dict[str, Column] = {}
    for position, (column, target) in enumerate(chosen.items()):
        if target is None:
            continue
        invert = target.startswith(_NOT)
        path_text = target.removeprefix(_NOT).strip()
        try:
            path = Path.of(path_text)
        except ValueError as error:
            raise MappingError(f"column {column!r}: {error}", column=column, target=target) from None
        canonical = ID_TARGET if path.is_customer and path.attribute == "id" else str(path)
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
        if canonical in seen and kind is not AttributeType.LIST:
            message = f"columns {seen[canonical]!r} and {column!r} both map to {canonical!r}"
            raise MappingError(message, column, canonical)
        seen.setdefault(canonical, column)
        if invert and kind is not AttributeType.BOOLEAN:
            message = f"column {column!r} maps to {target!r}, but only a yes/no attribute can be inverted"
            raise MappingError(message, column=column, target=target)
        email = kind in (AttributeType.TEXT, AttributeType.LIST) and "email" in path.attribute
        fields.append(Field(position, column, canonical, path, kind, email=email, invert=invert))
    fields, pairing = _pair(fields, columns, chosen, schema)
    notes.extend(pairing)
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
    filled: dict[int, float] = {}
    if samples:
        for field in fields:
            count = sum(1 for row in samples if field.position < len(row) and is_filled(row[field.position]))
            filled[field.position] = count / len(samples)
    return Plan(chosen, guessed, tuple(fields), schema, tuple(added), tuple(notes), filled)


def _pair(
    fields: Sequence[Field], columns: Sequence[Column], chosen: Mapping[Column, str | None], schema: Schema
) -> tuple[list[Field], list[Note]]:
    """Fields with their label column and the attribute of their extensions, and notes on the pairing."""
    notes: list[Note] = []
    labels = _companions(columns)
    targets = {f.target for f in fields}
    paired: list[Field] = []
    for field in fields:
        label = labels.get(field.position)
        if label is not None and chosen[columns[label]] is None and field.kind in (
            AttributeType.PHONE, AttributeType.TEXT, AttributeType.LIST
        ):
            notes.append(Note(columns[label], f"labels {field.column!r} (which value is the mobile, the primary)"))
            field = attrs.evolve(field, label=label)
        if field.kind is AttributeType.PHONE and field.path.is_customer:
            name = f"{field.path.attribute}_extension"
            if schema.has(Path(CUSTOMER, name)) and f"{CUSTOMER}.{name}" not in targets:
                field = attrs.evolve(field, extension=name)
        paired.append(field)
    return paired, notes


def _guess_from_values(values: Sequence[Any], region: str) -> str | None:
    texts = [cell_text(v).strip() for v in values if is_filled(v)]
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


def content_guesses(table: Table, sample: Sequence[Row], region: str) -> dict[Column, str | None]:
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
