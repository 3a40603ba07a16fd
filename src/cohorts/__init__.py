"""cohorts: customer segmentation rules, evaluated in memory or pushed down as SQL.

Example:
    >>> import cohorts
    >>> rule = cohorts.parse('customer.vehicle_model contains "Escape"')
    >>> cohorts.matches(rule, cohorts.Customer(1, {"vehicle_model": "Ford Escape"}))
    True

The SQL names (``SQLRepository``, ``HostRepository``, ``HostWriter``, ``HostTable``, ``HostEvents``,
``JsonField``, ``to_sql``, ``where``, ``select_ids``) need the ``sql`` extra
(SQLAlchemy); they are imported on first use so that the rest works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ast import Rule
from .campaigns import (
    Action,
    Audience,
    Campaign,
    CampaignError,
    CampaignReport,
    Eligibility,
    Failure,
    FrequencyCap,
    Hours,
    Message,
    Policy,
    Removal,
    RunnerBusyError,
    RunReport,
    Sender,
    Suppressed,
    audience,
    current_run,
    eligibility,
    gate,
    idempotency_key,
    remove_from_campaign,
    run_campaigns,
    standard_handlers,
)
from .config import ConfigError, load_config, parse_config
from .errors import (
    CohortsError,
    DatabaseError,
    GroupError,
    GroupNotEmptyError,
    HostWriteError,
    RuleError,
    RuleJsonError,
    RuleLimitError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownAttributeError,
    UnknownGroupError,
)
from .evaluate import Explanation, Predicate, compile, explain, matches, validate  # noqa: A004
from .groups import Change, Group, Groups, HistoryEntry, Members, Origin, Preview, Why, origins
from .importers import (
    ImportFileError,
    ImportPreview,
    ImportReport,
    MappingError,
    Reject,
    import_file,
    preview_file,
)
from .jsonform import from_dict, from_json, to_dict, to_json
from .model import Customer, CustomerId, Event
from .parser import parse
from .progress import Progress
from .reports import Measure, Report, report
from .repository import CustomerDataError, MemoryRepository, Repository, UnknownCustomerError
from .schema import AttributeType, Schema, default_schema

if TYPE_CHECKING:
    from .sql import (
        HostEvents,
        HostRepository,
        HostTable,
        HostWriter,
        JsonField,
        SQLRepository,
        select_ids,
        to_sql,
        where,
    )

__all__ = [
    "Action",
    "AttributeType",
    "Audience",
    "Campaign",
    "CampaignError",
    "CampaignReport",
    "Change",
    "CohortsError",
    "ConfigError",
    "Customer",
    "CustomerDataError",
    "CustomerId",
    "DatabaseError",
    "Eligibility",
    "Event",
    "Explanation",
    "Failure",
    "FrequencyCap",
    "Group",
    "GroupError",
    "GroupNotEmptyError",
    "Groups",
    "HistoryEntry",
    "HostEvents",
    "HostRepository",
    "HostTable",
    "HostWriteError",
    "HostWriter",
    "Hours",
    "ImportFileError",
    "ImportPreview",
    "ImportReport",
    "JsonField",
    "MappingError",
    "Measure",
    "Members",
    "MemoryRepository",
    "Message",
    "Origin",
    "Policy",
    "Predicate",
    "Preview",
    "Progress",
    "Reject",
    "Removal",
    "Report",
    "Repository",
    "Rule",
    "RuleError",
    "RuleJsonError",
    "RuleLimitError",
    "RuleSyntaxError",
    "RuleTypeError",
    "RunReport",
    "RunnerBusyError",
    "SQLRepository",
    "Schema",
    "Sender",
    "Suppressed",
    "UnknownAttributeError",
    "UnknownCustomerError",
    "UnknownGroupError",
    "Why",
    "audience",
    "compile",
    "current_run",
    "default_schema",
    "eligibility",
    "explain",
    "from_dict",
    "from_json",
    "gate",
    "idempotency_key",
    "import_file",
    "load_config",
    "matches",
    "origins",
    "parse",
    "parse_config",
    "preview_file",
    "remove_from_campaign",
    "report",
    "run_campaigns",
    "select_ids",
    "standard_handlers",
    "to_dict",
    "to_json",
    "to_sql",
    "validate",
    "where",
]

_SQL_NAMES = frozenset(
    {
        "HostEvents",
        "HostRepository",
        "HostTable",
        "HostWriter",
        "JsonField",
        "SQLRepository",
        "select_ids",
        "to_sql",
        "where",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SQL_NAMES:
        try:
            from . import sql
        except ModuleNotFoundError as error:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                f"cohorts.{name} needs SQLAlchemy: pip install 'cohorts[sql]' (or 'cohorts[postgres]')"
            ) from error
        return getattr(sql, name)
    if name == "__version__":
        from importlib.metadata import version

        return version("cohorts")
    raise AttributeError(f"module 'cohorts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SQL_NAMES, "__version__"])
