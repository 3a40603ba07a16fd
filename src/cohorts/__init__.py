"""cohorts: customer segmentation rules, evaluated in memory or pushed down as SQL.

Example:
    >>> import cohorts
    >>> rule = cohorts.parse('customer.vehicle_model contains "Escape"')
    >>> cohorts.matches(rule, cohorts.Customer(1, {"vehicle_model": "Ford Escape"}))
    True
"""

from __future__ import annotations

from typing import Any

from .ast import Rule
from .errors import (
    CohortsError,
    GroupError,
    GroupNotEmptyError,
    RuleError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownAttributeError,
    UnknownGroupError,
)
from .evaluate import Explanation, Predicate, compile, explain, matches, validate  # noqa: A004
from .model import Customer, Event
from .parser import parse
from .schema import AttributeType, Schema, default_schema

__all__ = [
    "AttributeType",
    "CohortsError",
    "Customer",
    "Event",
    "Explanation",
    "GroupError",
    "GroupNotEmptyError",
    "Predicate",
    "Rule",
    "RuleError",
    "RuleSyntaxError",
    "RuleTypeError",
    "Schema",
    "UnknownAttributeError",
    "UnknownGroupError",
    "compile",
    "default_schema",
    "explain",
    "matches",
    "parse",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("cohorts")
    raise AttributeError(f"module 'cohorts' has no attribute {name!r}")
