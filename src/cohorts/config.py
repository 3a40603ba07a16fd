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

Every error names the place in the file (``campaigns[2].status``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from .campaigns import Action, Campaign, CampaignError, FrequencyCap, Hours, Policy
from .errors import CohortsError, RuleError
from .evaluate import validate

__all__ = ["Config", "ConfigError", "GroupSpec", "load_config", "parse_config"]


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


@attrs.frozen
class Config:
    """What a configuration file declares."""

    campaigns: tuple[Campaign, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    policy: Policy = attrs.field(factory=Policy)

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
        fields = {"name", "audience", "group", "send_to", "status", "published", "start", "end", "actions"}
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
    reader.unknown(data, {"policy", "groups", "campaigns"}, "")
    policy = reader.policy(data["policy"]) if "policy" in data else Policy()
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
    return Config(campaigns, groups, policy)


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
