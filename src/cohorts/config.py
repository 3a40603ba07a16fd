"""Campaigns, groups and the sending policy declared in a TOML file (read with :mod:`tomllib`).

The file the cron job reads (``cohorts campaigns run --config campaigns.toml``)::

    [policy]
    retries = 3                                   # later runs that retry a failed action
    timezone_attribute = "timezone"               # the customer attribute naming its time zone
    default_timezone = "UTC"
    caps.email = { limit = 2, period = "7 days" } # across campaigns, rolling
    hours.sms = { start = "08:00", end = "21:00" }

    [[groups]]
    name = "VIP Customers"
    rule = 'customer.tags contains "vip"'        # rules are strings in the rule language
    description = "Our best customers"

    [[campaigns]]
    name = "Spring service"
    group = "VIP Customers"                       # leave out for every customer
    status = "active"                             # active, inactive or all
    published = true
    start = 2026-03-01
    end = 2026-06-01

    [[campaigns.actions]]
    kind = "email"                                # every other key is a setting
    subject = "Time for your spring service"

    [host]                                        # customers in the host's own tables (HostTable)
    table = "clients"
    id = "client_no"
    columns = { city = "town", tags = { column = "extra", keys = ["tags"] } }

    [host.events."repair_order.closed"]           # HostEvents; or [host.events.repair_order.closed]
    table = "repair_orders"
    customer = "client_no"
    at = "closed_at"
    where = { status = "closed" }

Every error names the place in the file (``campaigns[2].status``). The ``[host]``
section is kept as plain data (:class:`HostSpec`): :meth:`HostSpec.host_table`
builds the :class:`cohorts.HostTable`, with the ``sql`` extra.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import phonenumbers

from .campaigns import Action, Campaign, CampaignError, FrequencyCap, Hours, Policy
from .errors import CohortsError, RuleError
from .evaluate import validate
from .schema import AttributeType, Schema, default_schema
from .values import DEFAULT_REGION, resolve_tz

if TYPE_CHECKING:
    from .sql.host import HostEvents, HostTable, JsonField

__all__ = [
    "Config",
    "ConfigError",
    "GroupSpec",
    "HostEventsSpec",
    "HostSpec",
    "JsonFieldSpec",
    "load_config",
    "parse_config",
]


class ConfigError(CampaignError):
    """A campaign configuration file is wrong.

    Attributes:
        source: the file (or ``<text>``).
        where: the place in it, as ``campaigns[2].status``.
        reason: what is wrong there.
    """

    def __init__(self, source: str, where: str, reason: str) -> None:
        self.source = source
        self.where = where
        self.reason = reason
        super().__init__(f"{source}: {where}: {reason}" if where else f"{source}: {reason}")


@attrs.frozen
class GroupSpec:
    """A group as declared in the configuration: its name, rule text (or None) and description."""

    name: str
    rule: str | None = None
    description: str = ""


FilterScalar: TypeAlias = str | int | float | dt.date
FilterValue: TypeAlias = FilterScalar | tuple[FilterScalar, ...]


@attrs.frozen
class JsonFieldSpec:
    """A key path of a JSON column, as ``{ column = "extra", keys = ["prefs", "channel"] }`` declares it:
    the arguments of :class:`cohorts.JsonField` (``JsonField(column, *keys)``)."""

    column: str
    keys: tuple[str, ...]


MappedSpec: TypeAlias = str | JsonFieldSpec


@attrs.frozen
class HostEventsSpec:
    """A ``[host.events.<category>]`` table: the keyword arguments of :class:`cohorts.HostEvents`.

    ``place`` is where it is in the file (``host.events.appointment``), for errors.
    """

    table: str
    customer: str
    at: str
    where: Mapping[str, FilterValue] = attrs.field(factory=dict)
    fields: Mapping[str, MappedSpec] = attrs.field(factory=dict)
    updated_at: str | None = None
    place: str = attrs.field(default="", eq=False, repr=False)


@attrs.frozen
class HostSpec:
    """The ``[host]`` section: a :class:`cohorts.HostTable` over the host's own tables, as plain data.

    The keys are the HostTable's keyword arguments (``table``, ``id``, ``columns``, ``updated_at``,
    ``tz``, ``region``, ``schema``, ``events``) and the HostRepository's ``state_prefix``. Reading
    the file needs no SQLAlchemy; :meth:`host_table` builds the mapping (the ``sql`` extra).
    ``source`` is the file, for errors.
    """

    table: str
    id: str
    columns: Mapping[str, MappedSpec]
    events: Mapping[str, HostEventsSpec] = attrs.field(factory=dict)
    updated_at: str | None = None
    tz: str = "UTC"
    region: str = DEFAULT_REGION
    schema: Schema | None = None
    state_prefix: str = "cohorts_"
    source: str = attrs.field(default="<text>", eq=False, repr=False)

    def host_table(self) -> HostTable:
        """The :class:`cohorts.HostTable` this section declares (needs SQLAlchemy: the ``sql`` extra).

        What the HostTable refuses (a name that is not a plain SQL name, an event category
        named ``customer``...) is a ConfigError naming the place in the file.

        Example:
            >>> spec = parse_config('''
            ... [host]
            ... table = "clients"
            ... id = "client_no"
            ... columns = { city = "town", tags = { column = "extra", keys = ["tags"] } }
            ... [host.events.appointment]
            ... table = "appointments"
            ... customer = "client_no"
            ... at = "starts at"
            ... ''', "host.toml").host
            >>> spec.columns["tags"]
            JsonFieldSpec(column='extra', keys=('tags',))
            >>> spec.host_table()
            Traceback (most recent call last):
            ...
            cohorts.config.ConfigError: host.toml: host.events.appointment: the time column of appointments: \
'starts at' is not a plain SQL column name (letters, digits and _)
        """
        from .sql.host import HostEvents, HostTable

        def fail(where: str, error: Exception) -> ConfigError:
            return ConfigError(self.source, where, str(error))

        columns = {name: self._mapped(mapped, f"host.columns.{_key(name)}") for name, mapped in self.columns.items()}
        events: dict[str, HostEvents] = {}
        for category, spec in self.events.items():
            fields = {
                name: self._mapped(mapped, f"{spec.place}.fields.{_key(name)}") for name, mapped in spec.fields.items()
            }
            try:
                events[category] = HostEvents(
                    spec.table, customer=spec.customer, at=spec.at, where=dict(spec.where), fields=fields,
                    updated_at=spec.updated_at,
                )
            except (TypeError, ValueError) as error:
                raise fail(spec.place, error) from None
        try:
            return HostTable(
                self.table, id=self.id, columns=columns, schema=self.schema, tz=self.tz, region=self.region,
                events=events, updated_at=self.updated_at,
            )
        except (TypeError, ValueError) as error:
            raise fail("host", error) from None

    def _mapped(self, mapped: MappedSpec, where: str) -> str | JsonField:
        if isinstance(mapped, str):
            return mapped
        from .sql.host import JsonField

        try:
            return JsonField(mapped.column, *mapped.keys)
        except ValueError as error:
            raise ConfigError(self.source, where, str(error)) from None


@attrs.frozen
class Config:
    """What a configuration file declares: campaigns, groups, the sending policy, and the host's tables
    (``host``: None when the file has no ``[host]`` section, and customers are cohorts' own)."""

    campaigns: tuple[Campaign, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    policy: Policy = attrs.field(factory=Policy)
    host: HostSpec | None = None

    def campaign(self, name: str) -> Campaign:
        """The campaign named ``name`` (compared case-insensitively), or a CampaignError with a suggestion."""
        for campaign in self.campaigns:
            if campaign.name.casefold() == name.casefold():
                return campaign
        names = [c.name for c in self.campaigns]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (campaigns: {', '.join(names) or 'none'})"
        raise CampaignError(f"no campaign named {name!r}{hint}")

    def apply_groups(self, groups: Any) -> list[str]:
        """Create the declared groups that do not exist and update the rules that changed; say what was done."""
        done = []
        for spec in self.groups:
            existing = _group_rule(groups, spec.name)
            if existing is _MISSING:
                groups.create(spec.name, spec.rule, description=spec.description)
                done.append(f"created group {spec.name!r}")
            elif _rule_text(existing) != _rule_text(spec.rule):
                groups.set_rule(spec.name, spec.rule)
                done.append(f"changed the rule of group {spec.name!r}")
        return done


_MISSING = object()


def _rule_text(rule: object) -> str | None:
    if rule is None:
        return None
    return str(validate(rule))  # type: ignore[arg-type]


def _group_rule(groups: Any, name: str) -> object:
    """The stored rule text of group ``name`` (None without rules), or _MISSING when there is no such group."""
    try:
        definition = groups.definition(name)
    except LookupError:  # UnknownGroupError
        return _MISSING
    return definition.rule


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _key(name: str) -> str:
    """``name`` as a TOML key in a dotted place: bare, or quoted when it is not a bare key."""
    return name if _BARE_KEY.match(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HOST_KEYS = {"table", "id", "columns", "events", "updated_at", "tz", "region", "schema", "state_prefix"}
_EVENTS_KEYS = {"table", "customer", "at", "where", "fields", "updated_at"}

_PERIOD = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, reason: str) -> ConfigError:
        return ConfigError(self.source, where, reason)

    def table(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a table, got {type(value).__name__}")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected a non-blank string, got {value!r}")
        return value.strip()

    def unknown(self, data: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(sorted(allowed))})"
                raise self.fail(f"{where}.{key}" if where else key, f"unknown key{hint}")

    def period(self, value: object, where: str) -> dt.timedelta:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return dt.timedelta(days=value)
        match = _PERIOD.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) <= 0:
            raise self.fail(where, f'expected a period such as "7 days" or "24 hours", got {value!r}')
        return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])

    def policy(self, value: object) -> Policy:
        data = self.table(value, "policy")
        keys = {"retries", "timezone_attribute", "default_timezone", "caps", "hours", "marketing"}
        self.unknown(data, keys, "policy")
        options: dict[str, Any] = {}
        caps = {}
        for channel, cap in self.table(data.get("caps", {}), "policy.caps").items():
            where = f"policy.caps.{channel}"
            cap = self.table(cap, where)
            self.unknown(cap, {"limit", "period"}, where)
            if "limit" not in cap or "period" not in cap:
                raise self.fail(where, 'needs a limit and a period, e.g. { limit = 2, period = "7 days" }')
            try:
                caps[channel] = FrequencyCap(cap["limit"], self.period(cap["period"], f"{where}.period"))
            except CampaignError as error:
                raise self.fail(where, str(error)) from None
        options["caps"] = caps
        if "hours" in data:
            hours = {}
            for channel, window in self.table(data["hours"], "policy.hours").items():
                where = f"policy.hours.{channel}"
                window = self.table(window, where)
                self.unknown(window, {"start", "end"}, where)
                try:
                    hours[channel] = Hours(window.get("start", "00:00"), window.get("end", "23:59:59"))
                except CampaignError as error:
                    raise self.fail(where, str(error)) from None
            options["hours"] = hours
        for key in ("timezone_attribute", "default_timezone"):
            if key in data:
                options[key] = self.text(data[key], f"policy.{key}")
        if "retries" in data:
            options["retries"] = data["retries"]
        if "marketing" in data:
            kinds = data["marketing"]
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise self.fail("policy.marketing", f"expected a list of action kinds, got {kinds!r}")
            options["marketing"] = frozenset(k.strip().lower() for k in kinds)
        try:
            return Policy(**options)
        except CampaignError as error:
            raise self.fail("policy", str(error)) from None

    def group(self, value: object, where: str) -> GroupSpec:
        data = self.table(value, where)
        self.unknown(data, {"name", "rule", "description"}, where)
        name = self.text(data.get("name"), f"{where}.name")
        rule = data.get("rule")
        if rule is not None:
            rule = self.text(rule, f"{where}.rule")
            try:
                validate(rule)
            except RuleError as error:
                raise self.fail(f"{where}.rule", str(error)) from None
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail(f"{where}.description", f"expected a string, got {description!r}")
        return GroupSpec(name, rule, description)

    def action(self, value: object, where: str) -> Action:
        data = dict(self.table(value, where))
        kind = self.text(data.pop("kind", None), f"{where}.kind")
        action_id = data.pop("id", None)
        if action_id is not None:
            action_id = self.text(action_id, f"{where}.id")
        settings = data.pop("settings", {})
        settings = {**self.table(settings, f"{where}.settings"), **data}
        return Action(kind, settings, id=action_id)

    def campaign(self, value: object, where: str) -> Campaign:
        data = self.table(value, where)
        fields = {"name", "audience", "group", "send_to", "status", "published", "start", "end", "trigger", "on_leave",
                  "actions"}
        self.unknown(data, fields, where)
        actions = data.get("actions", [])
        if not isinstance(actions, list):
            raise self.fail(f"{where}.actions", "expected an array of tables ([[campaigns.actions]])")
        options = {k: data[k] for k in fields - {"actions"} if k in data}
        options["name"] = self.text(data.get("name"), f"{where}.name")
        built = [self.action(a, f"{where}.actions[{i}]") for i, a in enumerate(actions)]
        try:
            return Campaign(actions=built, **options)
        except CampaignError as error:
            raise self.fail(where, str(error)) from None


    # -- the [host] section: plain data for HostTable, HostEvents and JsonField

    def host(self, value: object) -> HostSpec:
        data = self.table(value, "host")
        self.unknown(data, _HOST_KEYS, "host")
        for key in ("table", "id", "columns"):
            if key not in data:
                raise self.fail("host", f"needs {key!r}: {_HOST_NEEDS}")
        columns = self.table(data["columns"], "host.columns")
        events: dict[str, HostEventsSpec] = {}
        self.events(self.table(data.get("events", {}), "host.events"), "host.events", "", events)
        options: dict[str, Any] = {}
        for key in ("updated_at", "tz", "region", "state_prefix"):
            if key in data:
                options[key] = self.text(data[key], f"host.{key}")
        if "tz" in options:
            try:
                resolve_tz(options["tz"])
            except ValueError as error:
                raise self.fail("host.tz", str(error)) from None
        if "region" in options:
            options["region"] = options["region"].upper()
            if options["region"] not in phonenumbers.SUPPORTED_REGIONS:
                raise self.fail("host.region", f"unknown region {data['region']!r} (a two-letter country code such "
                                "as 'US', 'CA', 'FR')")
        if "schema" in data:
            options["schema"] = self.schema(data["schema"], "host.schema")
        return HostSpec(
            self.text(data["table"], "host.table"),
            self.text(data["id"], "host.id"),
            {name: self.mapped(mapped, f"host.columns.{_key(name)}") for name, mapped in columns.items()},
            events,
            source=self.source,
            **options,
        )

    def mapped(self, value: object, where: str) -> MappedSpec:
        """A column name, or a JSON field ``{ column = "extra", keys = ["prefs", "channel"] }``."""
        if isinstance(value, str):
            return self.text(value, where)
        if not isinstance(value, Mapping):
            raise self.fail(where, f'expected a column name or {{ column = "...", keys = [...] }}, got {value!r}')
        self.unknown(value, {"column", "keys"}, where)
        if "column" not in value or "keys" not in value:
            raise self.fail(where, 'a JSON field needs a column and its keys: { column = "extra", keys = ["tags"] }')
        keys = value["keys"]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise self.fail(f"{where}.keys", f'expected a non-empty array of keys, such as ["prefs", "channel"], '
                            f"got {keys!r}")
        return JsonFieldSpec(self.text(value["column"], f"{where}.column"), tuple(keys))

    def events(self, data: Mapping[str, Any], where: str, prefix: str, found: dict[str, HostEventsSpec]) -> None:
        """The ``[host.events.<category>]`` tables into ``found``. A table with none of HostEvents' keys
        holds categories: ``[host.events.repair_order.closed]`` is the category ``repair_order.closed``."""
        for name, value in data.items():
            place, category = f"{where}.{_key(name)}", f"{prefix}{name}"
            entry = self.table(value, place)
            if entry and not _EVENTS_KEYS & set(entry) and all(isinstance(v, Mapping) for v in entry.values()):
                self.events(entry, place, f"{category}.", found)
                continue
            if category in found:
                raise self.fail(place, f"the events {category!r} are declared twice")
            found[category] = self.host_events(entry, place)

    def host_events(self, data: Mapping[str, Any], where: str) -> HostEventsSpec:
        self.unknown(data, _EVENTS_KEYS, where)
        for key in ("table", "customer", "at"):
            if key not in data:
                raise self.fail(where, f"needs {key!r}: {_EVENTS_NEEDS}")
        filters = {
            column: self.filter_value(value, f"{where}.where.{_key(column)}")
            for column, value in self.table(data.get("where", {}), f"{where}.where").items()
        }
        fields = {
            name: self.mapped(mapped, f"{where}.fields.{_key(name)}")
            for name, mapped in self.table(data.get("fields", {}), f"{where}.fields").items()
        }
        updated_at = data.get("updated_at")
        return HostEventsSpec(
            self.text(data["table"], f"{where}.table"),
            self.text(data["customer"], f"{where}.customer"),
            self.text(data["at"], f"{where}.at"),
            filters,
            fields,
            None if updated_at is None else self.text(updated_at, f"{where}.updated_at"),
            place=where,
        )

    def filter_value(self, value: object, where: str) -> FilterValue:
        """A fixed filter's value: text, a number, a boolean or a date; an array is ``IN``."""
        if isinstance(value, list):
            return tuple(self.filter_scalar(item, where) for item in value)
        return self.filter_scalar(value, where)

    def filter_scalar(self, value: object, where: str) -> FilterScalar:
        if isinstance(value, str | int | float | dt.date):
            return value
        raise self.fail(where, f"a filter value is text, a number, a boolean, a date or an array of them, "
                        f"not {value!r}")

    def schema(self, value: object, where: str) -> Schema:
        """The default schema with the ``{category: {attribute: type}}`` of ``value`` (phones, custom events)."""
        data = self.table(value, where)
        for category, attributes in data.items():
            self.table(attributes, f"{where}.{_key(category)}")
        try:
            return default_schema().merge(Schema(data))
        except ValueError as error:
            kinds = ", ".join(t.value for t in AttributeType)
            raise self.fail(where, f"{error} (types: {kinds})") from None


_HOST_NEEDS = 'the customers table, its id column and the columns, e.g. table = "clients", id = "client_no", ' \
    'columns = { city = "town" }'
_EVENTS_NEEDS = 'the events table, its customer column and its time column, e.g. table = "appointments", ' \
    'customer = "client_no", at = "starts_at"'


def parse_config(text: str, source: str = "<text>") -> Config:
    """Read a configuration from TOML text.

    Example:
        >>> config = parse_config('''
        ... [[groups]]
        ... name = "VIP"
        ... rule = 'customer.tags contains "vip"'
        ... [[campaigns]]
        ... name = "Spring"
        ... group = "VIP"
        ... status = "active"
        ... [[campaigns.actions]]
        ... kind = "email"
        ... subject = "Hello"
        ... ''')
        >>> config.campaign("spring").actions[0].settings
        {'subject': 'Hello'}
        >>> config.groups[0].rule
        'customer.tags contains "vip"'

    .. versionadded:: 0.1
    """
    reader = _Reader(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise reader.fail("", f"not valid TOML: {error}") from None
    reader.unknown(data, {"policy", "groups", "campaigns", "host"}, "")
    policy = reader.policy(data["policy"]) if "policy" in data else Policy()
    host = reader.host(data["host"]) if "host" in data else None
    groups_data = data.get("groups", [])
    campaigns_data = data.get("campaigns", [])
    if not isinstance(groups_data, list):
        raise reader.fail("groups", "expected an array of tables ([[groups]])")
    if not isinstance(campaigns_data, list):
        raise reader.fail("campaigns", "expected an array of tables ([[campaigns]])")
    groups = tuple(reader.group(g, f"groups[{i}]") for i, g in enumerate(groups_data))
    campaigns = tuple(reader.campaign(c, f"campaigns[{i}]") for i, c in enumerate(campaigns_data))
    seen: dict[str, str] = {}
    for i, campaign in enumerate(campaigns):
        key = campaign.name.casefold()
        if key in seen:
            raise reader.fail(f"campaigns[{i}].name", f"{campaign.name!r} is already the name of another campaign")
        seen[key] = campaign.name
    group_names = set()
    for i, group in enumerate(groups):
        if group.name.casefold() in group_names:
            raise reader.fail(f"groups[{i}].name", f"{group.name!r} is declared twice")
        group_names.add(group.name.casefold())
    return Config(campaigns, groups, policy, host)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a configuration file (TOML, UTF-8); errors name the file and the place in it.

    .. versionadded:: 0.1
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(name, "", f"cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(name, "", f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return parse_config(text, name)
    except ConfigError:
        raise
    except CohortsError as error:  # pragma: no cover - every reader error is a ConfigError
        raise ConfigError(name, "", str(error)) from None
