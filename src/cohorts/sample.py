"""Bundled sample data: customers of a car dealership and insurance agency.

The generator is deterministic: the same ``seed``, ``size`` and ``now`` give
the same customers, and every date is placed relative to ``now`` so that
rules such as ``claim.filed.at within last 3 months`` keep matching the same
people whatever day it is. :data:`SAMPLE_NOW` is the reference moment the demo,
the docs and the tests use.

The module also holds the JSON-lines form of customers that ``cohorts eval``
reads (:func:`to_record`, :func:`from_record`, :func:`read_jsonl`,
:func:`write_jsonl`) and the reference articles' scenarios (:data:`SCENARIOS`).

Example:
    >>> customers = sample_customers(200)
    >>> len(customers), customers[0].id
    (200, 'c0001')
    >>> sample_customers(200) == customers
    True
"""

from __future__ import annotations

import datetime as dt
import json
import random
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path as FilePath
from typing import IO, Any

import attrs

from .model import Customer, CustomerId, Event
from .schema import AttributeType, Schema, default_schema

__all__ = [
    "SAMPLE_NOW",
    "SAMPLE_SEED",
    "SAMPLE_SIZE",
    "SCENARIOS",
    "RecordError",
    "Scenario",
    "from_record",
    "read_jsonl",
    "sample_customers",
    "sample_schema",
    "to_record",
    "write_jsonl",
]

SAMPLE_NOW = dt.datetime(2026, 11, 16, 14, 0, tzinfo=dt.UTC)
"""The reference moment of the bundled sample (a Monday afternoon, UTC)."""

SAMPLE_SEED = 2026
SAMPLE_SIZE = 3000


@attrs.frozen
class Scenario:
    """One customer group of the reference articles, written as a rule.

    Attributes:
        name: what the articles call it.
        rule: the rule text.
    """

    name: str
    rule: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "Escape owners with a repair order closed in the last 2 years",
        'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"',
    ),
    Scenario("Insurance renewal in January", "customer.`Date de renouvellement`.month = january"),
    Scenario("Cat owners", 'customer.tags contains "cat owner"'),
    Scenario("Customers from a town", 'customer.city = "Saint-Jérôme"'),
    Scenario("Bought a new vehicle in the last year", "new_vehicle.purchased.at within last 1 year"),
    Scenario("Filed an insurance claim in the last 3 months", "claim.filed.at within last 3 months"),
    Scenario("With a rental car", 'customer.tags contains "rental car"'),
    Scenario(
        "Car and home insurance",
        'customer.tags contains "car insurance" AND customer.tags contains "home insurance"',
    ),
    Scenario("Do not want to be contacted by campaigns", "customer.subscribed is false"),
    Scenario("Made a return or an exchange", "return.count >= 1"),
    Scenario("2019 vehicles", "customer.vehicle_year = 2019"),
    Scenario("VIP customers", 'customer.tags contains "VIP"'),
    Scenario("With a cell phone", "customer.phone is known"),
    Scenario("Without a cell phone", "customer.phone is unknown"),
)
"""The scenarios of the reference articles, in the order they list them."""

_T = AttributeType
_VEHICLE = {"make": _T.TEXT, "model": _T.TEXT, "year": _T.NUMBER, "total": _T.NUMBER}


def sample_schema() -> Schema:
    """The default schema plus the sample's custom attributes and event categories.

    Custom customer attributes: ``Date de renouvellement`` (the insurance
    renewal date), ``home_phone`` and ``loyalty_points``. Extra events:
    ``new_vehicle.purchased``, ``used_vehicle.purchased``, ``claim.filed`` and
    ``return``.

    Example:
        >>> from cohorts.ast import Path
        >>> sample_schema().type_of(Path("customer", "Date de renouvellement"))
        <AttributeType.DATE: 'date'>
    """
    extra = Schema(
        {
            "customer": {"Date de renouvellement": _T.DATE, "home_phone": _T.PHONE, "loyalty_points": _T.NUMBER},
            "new_vehicle.purchased": _VEHICLE,
            "used_vehicle.purchased": _VEHICLE,
            "claim.filed": {"number": _T.TEXT, "line": _T.TEXT, "amount": _T.NUMBER, "status": _T.TEXT},
            "return": {"kind": _T.TEXT, "item": _T.TEXT, "amount": _T.NUMBER},
        }
    )
    return default_schema().merge(extra)


# -- the generator ------------------------------------------------------------

_FIRST_FR = (
    "Amélie Hélène Jérôme François Benoît Geneviève Stéphane Noémie Zoé Léa Chloé Maxime Émile Théo "
    "Océane Gaétan Réjean Josée Sébastien Frédéric Mélanie Valérie Marc-André Anne-Sophie Éloïse Raphaël "
    "Mathéo Ginette Louis-Philippe Maude Félix Gisèle André Nathalie Luc Isabelle Olivier Marie-Ève"
).split()
_FIRST_EN = (
    "Liam Emma Olivia Noah Sarah Michael Jennifer David Priya Wei Mohammed Fatima Siobhan Connor Aisha "
    "Daniel Grace Ethan Hannah Ryan Chen Mei Lucas Ava"
).split()
_LAST = (
    "Tremblay Gagnon Roy Côté Bouchard Gauthier Morin Lavoie Fortin Gagné Ouellet Pelletier Bélanger "
    "Lévesque Bergeron Leblanc Paquette Girard Simard Boucher Caron Beaulieu Cloutier Dubé Poirier "
    "Fournier Lapointe Leclerc Lefebvre Poulin Thibault St-Pierre Nadeau Martin Landry Smith Brown "
    "Wilson MacDonald Taylor Campbell Anderson Nguyen Singh Patel Chen O'Brien Desjardins Laflèche"
).split()

# Town, region, postal-code prefixes, area codes, weight.
_TOWNS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], int], ...] = (
    ("Montréal", "QC", ("H1", "H2", "H3", "H4"), ("514", "438"), 16),
    ("Laval", "QC", ("H7",), ("450", "579"), 10),
    ("Québec", "QC", ("G1", "G2"), ("418", "581"), 9),
    ("Longueuil", "QC", ("J4",), ("450", "579"), 6),
    ("Gatineau", "QC", ("J8", "J9"), ("819", "873"), 5),
    ("Sherbrooke", "QC", ("J1",), ("819", "873"), 5),
    ("Saint-Jérôme", "QC", ("J5L", "J7Y", "J7Z"), ("450", "579"), 6),
    ("Trois-Rivières", "QC", ("G8", "G9"), ("819", "873"), 4),
    ("Lévis", "QC", ("G6",), ("418", "581"), 4),
    ("Terrebonne", "QC", ("J6", "J7M"), ("450",), 4),
    ("Saint-Hyacinthe", "QC", ("J2",), ("450",), 3),
    ("Drummondville", "QC", ("J2",), ("819",), 3),
    ("Rimouski", "QC", ("G5L",), ("418",), 2),
    ("Blainville", "QC", ("J7C",), ("450",), 2),
    ("Saint-Jean-sur-Richelieu", "QC", ("J2W", "J3A"), ("450",), 2),
    ("Ottawa", "ON", ("K1", "K2"), ("613", "343"), 7),
    ("Orléans", "ON", ("K1C", "K4A"), ("613",), 2),
    ("Hawkesbury", "ON", ("K6A",), ("613",), 1),
    ("Cornwall", "ON", ("K6H", "K6J"), ("613",), 2),
    ("Toronto", "ON", ("M4", "M5", "M6"), ("416", "647"), 4),
    ("Sudbury", "ON", ("P3",), ("705",), 1),
    ("Kingston", "ON", ("K7",), ("613", "343"), 2),
)

_MODELS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Ford", ("Escape", "Escape Hybrid", "F-150", "Explorer", "Edge", "Bronco Sport", "Mustang"), 9),
    ("Toyota", ("Corolla", "RAV4", "Camry", "Tacoma", "Highlander"), 6),
    ("Honda", ("Civic", "CR-V", "Accord", "Pilot"), 5),
    ("Hyundai", ("Elantra", "Tucson", "Kona", "Santa Fe"), 4),
    ("Kia", ("Soul", "Sportage", "Forte"), 3),
    ("Mazda", ("Mazda3", "CX-5", "CX-30"), 3),
    ("Subaru", ("Outback", "Forester", "Crosstrek"), 2),
    ("Chevrolet", ("Equinox", "Silverado", "Malibu"), 3),
    ("Nissan", ("Rogue", "Sentra"), 2),
    ("Volkswagen", ("Jetta", "Tiguan", "Golf"), 2),
)

_SERVICES = (
    "oil change",
    "changement d'huile",
    "winter tires",
    "pneus d'hiver",
    "brake inspection",
    "recall",
    "alignment",
    "insurance review",
    "renouvellement de police",
)
_ADVISORS = ("Julie Paradis", "Marc Tessier", "Kevin O'Neil", "Sophie Lachance", "Amir Haddad")
_SENT = (
    "Votre véhicule est prêt à être récupéré.",
    "Rappel : rendez-vous demain à 9 h.",
    "Your vehicle is ready for pick-up.",
    "Reminder: your appointment is tomorrow at 9am.",
    "Votre renouvellement d'assurance approche.",
)
_RECEIVED = ("Merci!", "Parfait, je passe à 16 h.", "Thanks, see you then.", "Can I move it to Friday?", "STOP")
_REVIEW_SOURCES = ("Google", "Facebook", "Kimoby")
_REVIEW_COMMENTS = (
    "Service rapide et courtois.",
    "Great service, fair price.",
    "Attente un peu longue.",
    "Very helpful advisor.",
    "",
)
_RETURN_ITEMS = ("tapis d'hiver", "roof rack", "battery", "essuie-glaces", "floor mats", "dash cam")
_NOTES = (
    "Préfère être contacté par texto.",
    "Prefers email.",
    "Client fidèle depuis 2015.",
    "Asked about extended warranty.",
    "Chat à la maison : allergie du technicien.",
)
_BAD_PHONES = ("n/a", "à confirmer", "555", "none")


def _weighted(rng: random.Random, items: Sequence[Any], weights: Sequence[int]) -> Any:
    return rng.choices(items, weights=weights, k=1)[0]


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isalnum() and ch.isascii())


def _phone(rng: random.Random, area: str) -> str:
    line = f"{rng.randrange(10000):04d}"
    match rng.randrange(7):
        case 0:
            return f"{area}-555-{line}"
        case 1:
            return f"({area}) 555-{line}"
        case 2:
            return f"+1 {area} 555 {line}"
        case 3:
            return f"{area}555{line}"
        case 4:
            return f"{area}.555.{line}"
        case 5:
            return f"1-{area}-555-{line}"
        case _:
            return f"+1{area}555{line}"


def _postal(rng: random.Random, prefix: str) -> str:
    letters = "ABCEGHJKLMNPRSTVWXYZ"
    fsa = prefix
    while len(fsa) < 3:
        fsa += str(rng.randrange(10)) if len(fsa) == 1 else rng.choice(letters)
    ldu = f"{rng.randrange(10)}{rng.choice(letters)}{rng.randrange(10)}"
    return f"{fsa} {ldu}" if rng.random() < 0.8 else f"{fsa}{ldu}"


def _ago(rng: random.Random, now: dt.datetime, max_days: float, min_days: float = 0.0) -> dt.datetime:
    """An instant between ``min_days`` and ``max_days`` before ``now``, in business hours."""
    latest = now - dt.timedelta(days=min_days)
    moment = latest - dt.timedelta(days=rng.uniform(0, max_days - min_days))
    moment = moment.replace(hour=rng.randrange(13, 23), minute=rng.choice((0, 15, 30, 45)), second=0, microsecond=0)
    return moment if moment <= latest else moment - dt.timedelta(days=1)


class _Generator:
    def __init__(self, seed: int, now: dt.datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.serial = 10000

    def number(self, prefix: str) -> str:
        self.serial += self.rng.randrange(1, 9)
        return f"{prefix}-{self.serial}"

    def customer(self, index: int) -> Customer:
        rng, now = self.rng, self.now
        town, region, prefixes, areas, _ = _weighted(rng, _TOWNS, [t[4] for t in _TOWNS])
        french = rng.random() < (0.85 if region == "QC" else 0.2)
        first = rng.choice(_FIRST_FR if french or rng.random() < 0.2 else _FIRST_EN)
        last = rng.choice(_LAST)
        created = _ago(rng, now, 8 * 365, 1)
        attributes: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "city": town if rng.random() < 0.97 else "",
            "region": region,
            "postal_code": _postal(rng, rng.choice(prefixes)),
            "language": "fr" if french else "en",
            "status": "active" if rng.random() < 0.82 else "inactive",
            "created_at": created,
        }
        if rng.random() < 0.9:
            domain = rng.choice(("example.com", "example.org", "example.net"))
            attributes["email"] = f"{_ascii(first).lower()}.{_ascii(last).lower()}{rng.randrange(100)}@{domain}"
        roll = rng.random()
        if roll < 0.84:
            attributes["phone"] = _phone(rng, rng.choice(areas))
        elif roll < 0.87:
            attributes["phone"] = rng.choice(_BAD_PHONES)
        elif roll < 0.93:
            attributes["phone"] = ""
        if rng.random() < 0.25:
            attributes["home_phone"] = _phone(rng, rng.choice(areas))
        roll = rng.random()
        attributes["subscribed"] = True if roll < 0.86 else (False if roll < 0.97 else None)

        tags: list[str] = []
        for tag, chance in (("cat owner", 0.14), ("dog owner", 0.2), ("VIP", 0.06), ("rental car", 0.04)):
            if rng.random() < chance:
                tags.append(tag)
        car_insurance = rng.random() < 0.45
        home_insurance = rng.random() < (0.55 if car_insurance else 0.2)
        if car_insurance:
            tags.append("car insurance")
        if home_insurance:
            tags.append("home insurance")
        rng.shuffle(tags)
        if tags:
            attributes["tags"] = tags
        if car_insurance or home_insurance:
            renewal = now.date() + dt.timedelta(days=rng.randrange(1, 366))
            attributes["Date de renouvellement"] = renewal
        if rng.random() < 0.3:
            attributes["loyalty_points"] = rng.randrange(0, 5000, 10)

        events: list[Event] = []
        has_vehicle = rng.random() < 0.88
        if has_vehicle:
            make, models, _ = _weighted(rng, _MODELS, [m[2] for m in _MODELS])
            model = rng.choice(models)
            year = min(now.year + 1, max(2008, now.year - int(rng.expovariate(1 / 5))))
            attributes.update(vehicle_make=make, vehicle_model=model, vehicle_year=year)
            events.extend(self.purchase(make, model, year))
            events.extend(self.repairs())
        events.extend(self.appointments(has_vehicle, car_insurance or home_insurance))
        events.extend(self.messages(attributes["subscribed"] is False))
        events.extend(self.invoices())
        if car_insurance or home_insurance:
            events.extend(self.claims(car_insurance, home_insurance))
        if rng.random() < 0.06:
            events.append(
                Event(
                    "return",
                    _ago(rng, now, 900),
                    {
                        "kind": rng.choice(("return", "exchange")),
                        "item": rng.choice(_RETURN_ITEMS),
                        "amount": round(rng.uniform(20, 600), 2),
                    },
                )
            )
        if rng.random() < 0.2:
            rating = rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 5, 9))[0]
            events.append(
                Event(
                    "review",
                    _ago(rng, now, 1000),
                    {
                        "rating": rating,
                        "source": rng.choice(_REVIEW_SOURCES),
                        "comment": rng.choice(_REVIEW_COMMENTS),
                    },
                )
            )
        if rng.random() < 0.15:
            events.append(
                Event("note", _ago(rng, now, 1500), {"body": rng.choice(_NOTES), "author": rng.choice(_ADVISORS)})
            )
        events.sort(key=lambda e: e.at)
        return Customer(f"c{index:04d}", attributes, events)

    def purchase(self, make: str, model: str, year: int) -> list[Event]:
        rng, now = self.rng, self.now
        if rng.random() < 0.3:
            return []  # bought elsewhere
        new = year >= now.year - 1 and rng.random() < 0.7
        if new:
            # A new vehicle is sold from the autumn before its model year.
            earliest = dt.datetime(year - 1, 8, 1, tzinfo=dt.UTC)
            span = max(1.0, (now - earliest).total_seconds() / 86400)
            at = _ago(rng, now, min(span, 700))
        else:
            at = _ago(rng, now, 2500, 30)
        name = "new_vehicle.purchased" if new else "used_vehicle.purchased"
        price = rng.uniform(32000, 68000) if new else rng.uniform(9000, 31000)
        return [Event(name, at, {"make": make, "model": model, "year": year, "total": round(price, 2)})]

    def repairs(self) -> list[Event]:
        rng, now = self.rng, self.now
        events: list[Event] = []
        for _ in range(rng.choices((0, 1, 2, 3, 4), weights=(3, 4, 3, 2, 1))[0]):
            opened = _ago(rng, now, 4 * 365)
            number = self.number("RO")
            advisor = rng.choice(_ADVISORS)
            total = round(rng.uniform(60, 2400), 2)
            events.append(Event("repair_order.opened", opened, {"number": number, "advisor": advisor}))
            closed = opened + dt.timedelta(hours=rng.randrange(3, 120))
            if closed < now:
                fields = {"number": number, "advisor": advisor, "total": total}
                events.append(Event("repair_order.closed", closed, fields))
        return events

    def appointments(self, has_vehicle: bool, insured: bool) -> list[Event]:
        rng, now = self.rng, self.now
        services = [s for s in _SERVICES if has_vehicle or "ssurance" in s or "police" in s] or list(_SERVICES)
        if not insured:
            services = [s for s in services if "ssurance" not in s and "police" not in s] or services
        events: list[Event] = []
        for _ in range(rng.choices((0, 1, 2, 3), weights=(3, 4, 2, 1))[0]):
            if rng.random() < 0.12:
                at = now + dt.timedelta(days=rng.uniform(1, 45))
                at = at.replace(hour=rng.randrange(13, 22), minute=0, second=0, microsecond=0)
                status = "booked"
            else:
                at = _ago(rng, now, 3 * 365)
                status = rng.choices(("completed", "no-show", "cancelled"), weights=(8, 1, 1))[0]
            fields = {"service": rng.choice(services), "status": status, "advisor": rng.choice(_ADVISORS)}
            events.append(Event("appointment", at, fields))
        return events

    def messages(self, unsubscribed: bool) -> list[Event]:
        rng, now = self.rng, self.now
        events: list[Event] = []
        for _ in range(rng.choices((0, 1, 2, 3), weights=(3, 3, 2, 1))[0]):
            at = _ago(rng, now, 700)
            channel = rng.choice(("sms", "sms", "email"))
            events.append(Event("message.sent", at, {"body": rng.choice(_SENT), "channel": channel}))
            if rng.random() < 0.5:
                reply = at + dt.timedelta(minutes=rng.randrange(2, 600))
                if reply < now:
                    body = rng.choice(_RECEIVED[:-1])
                    events.append(Event("message.received", reply, {"body": body, "channel": channel}))
        if unsubscribed and rng.random() < 0.5:
            events.append(Event("message.received", _ago(rng, now, 700), {"body": "STOP", "channel": "sms"}))
        return events

    def invoices(self) -> list[Event]:
        rng = self.rng
        events: list[Event] = []
        for _ in range(rng.choices((0, 1, 2, 3), weights=(3, 4, 2, 1))[0]):
            status = rng.choices(("paid", "unpaid", "overdue"), weights=(8, 1, 1))[0]
            fields = {"number": self.number("F"), "total": round(rng.uniform(40, 3200), 2), "status": status}
            events.append(Event("invoice", _ago(rng, self.now, 3 * 365), fields))
        return events

    def claims(self, car: bool, home: bool) -> list[Event]:
        rng = self.rng
        lines = [line for line, held in (("auto", car), ("home", home)) if held]
        events: list[Event] = []
        for _ in range(rng.choices((0, 1, 2), weights=(12, 3, 1))[0]):
            fields = {
                "number": self.number("SIN"),
                "line": rng.choice(lines),
                "amount": round(rng.uniform(300, 25000), 2),
                "status": rng.choice(("open", "settled", "denied")),
            }
            events.append(Event("claim.filed", _ago(rng, self.now, 3 * 365), fields))
        return events


def sample_customers(
    size: int = SAMPLE_SIZE, *, now: dt.datetime = SAMPLE_NOW, seed: int = SAMPLE_SEED
) -> list[Customer]:
    """``size`` sample customers with their events, dated relative to ``now``.

    Deterministic: the same arguments always give the same customers. Ids are
    ``"c0001"``, ``"c0002"``... Some values are deliberately messy, as real
    data is: phones in varied formats, a few unreadable phones, blank cities,
    unknown subscription.

    Example:
        >>> c = sample_customers(3)[0]
        >>> c.id, c.attributes["first_name"], c.attributes["city"], c.attributes["phone"]
        ('c0001', 'André', 'Montréal', '(438) 555-5148')
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size is a number of customers (0 or more), not {size!r}")
    if not isinstance(now, dt.datetime) or now.tzinfo is None:
        raise ValueError(f"now is a timezone-aware datetime, not {now!r}")
    generator = _Generator(seed, now)
    return [generator.customer(i) for i in range(1, size + 1)]


# -- the JSON-lines form ------------------------------------------------------


class RecordError(ValueError):
    """A JSON-lines record that is not a customer.

    Attributes:
        line: the 1-based line number (0 when not read from a file).
        reason: what is wrong.
    """

    def __init__(self, reason: str, line: int = 0) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def to_record(customer: Customer) -> dict[str, Any]:
    """A customer as JSON-ready data: ``{"id", "attributes", "events"}``; dates become ISO text.

    Example:
        >>> to_record(Customer(7, {"city": "Laval"}, [Event("note", "2026-01-02T10:00")]))
        {'id': 7, 'attributes': {'city': 'Laval'},
         'events': [{'name': 'note', 'at': '2026-01-02T10:00:00', 'attributes': {}}]}
    """
    return {
        "id": customer.id,
        "attributes": _plain(customer.attributes),
        "events": [{"name": e.name, "at": _plain(e.at), "attributes": _plain(e.attributes)} for e in customer.events],
    }


def _event(data: Any, index: int) -> Event:
    where = f"event {index + 1}"
    if not isinstance(data, dict):
        raise RecordError(f"{where} is not an object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordError(f'{where} has no "name"')
    at = data.get("at")
    if not isinstance(at, str) or not at.strip():
        raise RecordError(f'{where} ({name}) has no "at" time')
    try:
        moment = dt.datetime.fromisoformat(at.strip())
    except ValueError:
        raise RecordError(f'{where} ({name}): "at" is not an ISO date or time: {at!r}') from None
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise RecordError(f'{where} ({name}): "attributes" is not an object')
    extra = {k: v for k, v in data.items() if k not in ("name", "at", "attributes")}
    return Event(name, moment, {**attributes, **extra})


def from_record(data: Any) -> Customer:
    """A customer from JSON data: ``{"id", "attributes", "events"}``, or flat.

    In a flat object every key other than ``id`` and ``events`` is an
    attribute; keys beside an ``"attributes"`` object are added to it. Each
    event is ``{"name", "at", "attributes"}`` (or flat too), ``at`` ISO text.
    Raises :class:`RecordError` saying what is wrong.

    Example:
        >>> from_record({"id": "a1", "city": "Laval", "tags": ["VIP"]}).attributes
        {'city': 'Laval', 'tags': ['VIP']}
        >>> from_record({"city": "Laval"})
        Traceback (most recent call last):
        ...
        cohorts.sample.RecordError: no "id"
    """
    if not isinstance(data, dict):
        raise RecordError(f"a customer is a JSON object, not {type(data).__name__}")
    if "id" not in data:
        raise RecordError('no "id"')
    ident = data["id"]
    if isinstance(ident, bool) or not isinstance(ident, str | int) or (isinstance(ident, str) and not ident.strip()):
        raise RecordError(f'"id" is text or an integer, not {ident!r}')
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise RecordError('"attributes" is not an object')
    extra = {k: v for k, v in data.items() if k not in ("id", "attributes", "events")}
    events = data.get("events", [])
    if events is None:
        events = []
    if not isinstance(events, list):
        raise RecordError('"events" is not a list')
    return Customer(ident, {**attributes, **extra}, [_event(e, i) for i, e in enumerate(events)])


def read_jsonl(lines: Iterable[str]) -> Iterator[Customer | RecordError]:
    """Customers from JSON lines, or a :class:`RecordError` (with its line number) for each bad line.

    Blank lines are skipped; a repeated id is an error.

    Example:
        >>> for item in read_jsonl(['{"id": 1}', '', '{oops', '{"id": 1}']):
        ...     print(repr(item))
        Customer(id=1, attributes={}, events=())
        RecordError('line 3: not JSON: Expecting property name enclosed in double quotes (column 2)')
        RecordError('line 4: id 1 repeats line 1')
    """
    seen: dict[CustomerId, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            yield RecordError(f"not JSON: {error.msg} (column {error.colno})", number)
            continue
        try:
            customer = from_record(data)
        except RecordError as error:
            yield RecordError(error.reason, number)
            continue
        if customer.id in seen:
            yield RecordError(f"id {customer.id!r} repeats line {seen[customer.id]}", number)
            continue
        seen[customer.id] = number
        yield customer


def write_jsonl(customers: Iterable[Customer], out: IO[str] | FilePath | str) -> int:
    """Write customers as JSON lines (to a file path or an open text file); returns how many.

    Example:
        >>> import io
        >>> buffer = io.StringIO()
        >>> write_jsonl(sample_customers(2), buffer)
        2
        >>> [c.id for c in read_jsonl(buffer.getvalue().splitlines())]
        ['c0001', 'c0002']
    """
    if isinstance(out, str | FilePath):
        with open(out, "w", encoding="utf-8") as handle:
            return write_jsonl(customers, handle)
    count = 0
    for customer in customers:
        out.write(json.dumps(to_record(customer), ensure_ascii=False) + "\n")
        count += 1
    return count
