"""The exceptions cohorts raises. Every one derives from :class:`CohortsError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CohortsError",
    "DatabaseError",
    "GroupError",
    "GroupNotEmptyError",
    "HostWriteError",
    "RuleError",
    "RuleJsonError",
    "RuleLimitError",
    "RuleSyntaxError",
    "RuleTypeError",
    "UnknownAttributeError",
    "UnknownGroupError",
]


class CohortsError(Exception):
    """Root of every error cohorts raises."""


class RuleError(CohortsError, ValueError):
    """Something is wrong with a rule: its text, its attributes or its types."""


class RuleSyntaxError(RuleError):
    """The rule text cannot be parsed.

    Attributes:
        label: what went wrong, in a few words ("Unexpected text", "Missing value").
        line: 1-based line of the fault.
        column: 1-based column of the fault.
        text: the rule text.
        expected: the names of what the parser would have accepted there.
        hint: a suggestion such as ``did you mean "contains"?``, or ``""``.
    """

    def __init__(
        self,
        label: str,
        line: int,
        column: int,
        text: str,
        expected: Sequence[str] = (),
        hint: str = "",
    ) -> None:
        self.label = label
        self.line = line
        self.column = column
        self.text = text
        self.expected = tuple(expected)
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        lines = self.text.split("\n") or [""]
        source = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        message = f"{self.label} at line {self.line}, column {self.column}:\n{source}\n"
        message += " " * (self.column - 1) + "^"
        if self.hint:
            message += f"\n{self.hint}"
        if self.expected:
            message += "\nExpected one of: " + ", ".join(self.expected)
        return message


class RuleLimitError(RuleSyntaxError):
    """The rule text, or a string literal in it, is longer than the parser's limit allows.

    Raised by :func:`cohorts.parse` and :func:`cohorts.validate` before the text
    is parsed when it has more than ``max_rule_chars`` characters (the caret is
    at the first character over), and for a string literal with more than
    ``max_literal_chars`` characters between its quotes (the caret is at its
    opening quote). Pass larger limits to accept such rules. It has every
    attribute of :class:`RuleSyntaxError`, and one more.

    Attributes:
        limit: the limit that was exceeded, in characters.
    """

    def __init__(self, label: str, line: int, column: int, text: str, *, limit: int) -> None:
        self.limit = limit
        super().__init__(label, line, column, text)


class UnknownAttributeError(RuleError):
    """A rule names an attribute or category that the schema does not have.

    Attributes:
        path: the path as written in the rule.
        suggestion: the nearest known path, or ``None``.
    """

    def __init__(self, path: str, suggestion: str | None = None, what: str = "attribute") -> None:
        self.path = path
        self.suggestion = suggestion
        message = f"unknown {what} {path!r}"
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        super().__init__(message)


class RuleTypeError(RuleError):
    """A condition cannot work on the types involved, as in ``vehicle_year contains 5``.

    Attributes:
        condition: the condition's text.
        reason: why it cannot work.
    """

    def __init__(self, condition: str, reason: str) -> None:
        self.condition = condition
        self.reason = reason
        super().__init__(f"{reason}: {condition}")


class RuleJsonError(RuleError):
    """A rule's JSON form (see :func:`cohorts.from_json`) is malformed.

    Attributes:
        pointer: where the fault is, as a JSON pointer (``/rules/0/sub_rules/1/operator``);
            ``""`` for the whole document.
        reason: what is wrong there.
    """

    def __init__(self, pointer: str, reason: str) -> None:
        self.pointer = pointer
        self.reason = reason
        super().__init__(f"invalid rule JSON at {pointer or '/'}: {reason}")


class DatabaseError(CohortsError):
    """A database cannot be opened: it does not exist, cannot be reached, or is not one cohorts works with.

    Attributes:
        url: the database's URL or file path, with any password hidden.
        reason: why, in one line.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot open the database {url}: {reason}")


class HostWriteError(CohortsError):
    """A write to customers that live in the host's own tables, with no host writer to make it.

    Raised by a :class:`cohorts.HostRepository` without ``writer=`` for
    ``upsert``, ``add_events``, ``delete`` and ``unsubscribe``, and before
    anything runs by :func:`cohorts.import_file` and :func:`cohorts.run_campaigns`
    when they would write (a writer raises it too, for what it does not support).
    """


class GroupError(CohortsError):
    """Something is wrong with a customer group."""


class UnknownGroupError(GroupError, LookupError):
    """No group has that name.

    Attributes:
        name: the name asked for.
        suggestion: the nearest existing group name, or ``None``.
    """

    def __init__(self, name: str, suggestion: str | None = None) -> None:
        self.name = name
        self.suggestion = suggestion
        message = f"no group named {name!r}"
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        super().__init__(message)


class GroupNotEmptyError(GroupError):
    """A group with members cannot be deleted without ``force=True``.

    Attributes:
        name: the group.
        count: how many members it has.
        origins: how many members have each origin (a customer may count under several).
    """

    def __init__(self, name: str, count: int, origins: Mapping[str, int]) -> None:
        self.name = name
        self.count = count
        self.origins = dict(origins)
        detail = ", ".join(f"{n} {origin}" for origin, n in sorted(self.origins.items()))
        super().__init__(
            f"group {name!r} has {count} member(s) ({detail}); delete with force=True to drop them"
        )
