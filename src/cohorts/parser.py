"""Rule text to AST. The only module that reads ``grammar.lark`` or sees lark types."""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from typing import Any

import attrs
from lark import Lark, Token, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from .ast import (
    AGGREGATES,
    DATE_PARTS,
    Anchor,
    And,
    Condition,
    DatePart,
    Duration,
    InGroup,
    Month,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    Sequel,
    Span,
    Unit,
    Value,
    Weekday,
    Window,
    WindowKind,
    bounds_reversed,
    format_value,
    transform,
)
from .errors import RuleLimitError, RuleSyntaxError
from .pattern import PatternError, compile_pattern

__all__ = ["MAX_LITERAL_CHARS", "MAX_RULE_CHARS", "parse"]

MAX_RULE_CHARS = 1_000_000
"""Default for ``max_rule_chars``: the longest rule text :func:`parse` reads."""
MAX_LITERAL_CHARS = 100_000
"""Default for ``max_literal_chars``: the longest string literal, between its quotes as written."""

# What the parser's terminals are called in error messages.
_TERMINAL_WORDS = {
    "_OR": "OR",
    "_AND": "AND",
    "_NOT": "not",
    "_IS": "is",
    "_IN": "in",
    "_GROUP": "group",
    "_KNOWN": "known",
    "_UNKNOWN": "unknown",
    "_CONTAINS": "contains",
    "_CONTAIN": "contain",
    "_DOES": "does not contain, does not match",
    "_STARTS": "starts with",
    "_ENDS": "ends with",
    "_WITH": "with",
    "_MATCHES": "matches",
    "_MATCH": "match",
    "_BETWEEN": "between",
    "_BEFORE": "before",
    "_AFTER": "after",
    "_WITHIN": "within",
    "_LAST": "last",
    "_NEXT": "next",
    "_SINCE": "since",
    "_WHERE": "where",
    "_AGO": "ago",
    "_TRUE": "true",
    "_FALSE": "false",
    "ANCHOR": "today/now",
    "UNIT": "a unit (days, months...)",
    "MONTH": "a month name",
    "WEEKDAY": "a day name",
    "NAME": "a name",
    "QUOTED_NAME": "a `quoted name`",
    "STRING": "a string",
    "NUMBER": "a number",
    "DATE": "a date",
    "DATETIME": "a date and time",
    "$END": "end of rule",
}

# Words a typo is compared against for "did you mean".
_KEYWORDS = (
    "and or not is in group known unknown contains does starts ends with matches match between before "
    "after within last next since where ago now today yesterday tomorrow true false "
    "minutes hours days weeks months years"
).split()
_OPERATORS = [op.value for op in Op]

_COMMENT = re.compile(r"#[^\n]*")
_WHERE_WORD = re.compile(r"\bwhere\b", re.IGNORECASE)

_VALUE_TERMINALS = {"STRING", "NUMBER", "DATE", "DATETIME", "_TRUE", "_FALSE", "ANCHOR", "MONTH", "WEEKDAY"}


@functools.cache
def _parser() -> Lark:
    return Lark.open_from_package(
        "cohorts",
        "grammar.lark",
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


@attrs.frozen
class _Placed:
    """A window or a filter of an aggregate's arguments, with where it was written (for the caret)."""

    value: Any
    line: int
    column: int


@attrs.frozen
class _Arguments:
    """What the parentheses after an aggregate hold: the field it reads, its window and its filter."""

    field: Token | None = None
    window: Window | None = None
    where: Node | None = None
    then: Sequel | None = None


@attrs.frozen
class _Bare:
    """A path of one name: ``customer`` before ``in group``, an error anywhere else outside a where."""

    token: Token


@attrs.frozen
class _FieldRef:
    """A path inside a where: a field of the aggregate's own events (``product``, ``at.weekday``).

    The conditions of a where hold one while it is parsed; the aggregate's path, transformed after
    them, puts its category in (:meth:`_ToAst.path`).
    """

    name: str
    part: DatePart | None
    token: Token


def _name(segment: Token) -> str:
    """A name as written: a quoted one without its backquotes (a doubled backquote is one)."""
    return segment[1:-1].replace("``", "`") if segment.type == "QUOTED_NAME" else str(segment)


def _span(meta: Any) -> Span | None:
    if getattr(meta, "empty", True):
        return None
    return Span(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _token_error(token: Token, text: str, label: str) -> RuleSyntaxError:
    return RuleSyntaxError(label, token.line or 1, token.column or 1, text)


_STRING_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "/": "/"}


def _unescape(token: Token, text: str, max_literal_chars: int) -> str:
    body = token[1:-1]
    if len(body) > max_literal_chars:
        raise RuleLimitError(
            f"String of {len(body):,} characters, over max_literal_chars ({max_literal_chars:,})",
            token.line or 1,
            token.column or 1,
            text,
            limit=max_literal_chars,
        )

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "uUx" and len(code) > 1:
            point = int(code[1:], 16)
            if point > 0x10FFFF:
                raise _token_error(token, text, f"Escape \\{code} is beyond Unicode")
            return chr(point)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        raise _token_error(token, text, f"Unknown escape \\{code} in string")

    return _STRING_ESCAPE.sub(replace, body)


def _integer(token: Token, text: str) -> int:
    if not re.fullmatch(r"\+?\d+", token):
        raise _token_error(token, text, "Expected a whole number of units")
    return _int(token, text)


def _int(token: Token, text: str) -> int:
    try:
        return int(token)
    except ValueError:  # more digits than Python converts
        raise _token_error(token, text, "Number too large") from None


@v_args(inline=True, meta=True)
class _ToAst(Transformer_NonRecursive):  # type: ignore[type-arg]
    def __init__(self, text: str, max_literal_chars: int) -> None:
        super().__init__()
        self.text = text
        self.max_literal_chars = max_literal_chars

    # -- structure
    def or_(self, meta: Any, *items: Node) -> Node:
        return Or(items, span=_span(meta))

    def and_(self, meta: Any, *items: Node) -> Node:
        return And(items, span=_span(meta))

    def not_(self, meta: Any, operand: Node) -> Node:
        return Not(operand, span=_span(meta))

    def in_group(self, meta: Any, who: object, group: Token) -> Node:
        return InGroup(self._group(who, group), span=_span(meta))

    def not_in_group(self, meta: Any, who: object, group: Token) -> Node:
        return InGroup(self._group(who, group), negated=True, span=_span(meta))

    def _group(self, who: object, group: Token) -> str:
        if isinstance(who, _FieldRef):
            raise _token_error(
                who.token, self.text, "A where filters events by their fields: put the group test outside the aggregate"
            )
        if not isinstance(who, _Bare) or who.token.lower() != "customer":
            token = who.token if isinstance(who, _Bare) else None
            line, column = (token.line, token.column) if token is not None else (1, 1)
            raise RuleSyntaxError('Expected "customer in group"', line or 1, column or 1, self.text)
        return _unescape(group, self.text, self.max_literal_chars)

    # -- conditions
    def _condition(self, op: Op, meta: Any, path: Path, value: object = None) -> Condition:
        if isinstance(path, _Bare):
            raise _token_error(
                path.token, self.text, f"A path needs a category and an attribute, as in customer.{path.token}"
            )
        if isinstance(value, _FieldRef):
            raise _token_error(
                value.token, self.text, "Inside a where, compare a field with a value, not with another field"
            )
        if isinstance(value, _Bare):  # a word where a value goes: text without its quotes, or half a path
            token = value.token
            words = sorted({_describe(name) for name in _VALUE_TERMINALS | {"LSQB", "_IN"}} | {"a path"})
            hint = f'text goes in quotes: "{token}"; another value of the customer is a path, as in customer.{token}'
            label = f"Unexpected {str(token)!r}"
            raise RuleSyntaxError(label, token.line or 1, token.column or 1, self.text, words, hint)
        if isinstance(value, Token):
            value = _convert_token(value, self.text, self.max_literal_chars)
        elif isinstance(value, tuple):
            limit = self.max_literal_chars
            value = tuple(_convert_token(v, self.text, limit) if isinstance(v, Token) else v for v in value)
        return Condition(path, op, value, span=_span(meta))

    def eq(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.EQ, meta, path, value)

    def ne(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.NE, meta, path, value)

    def lt(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.LT, meta, path, value)

    def le(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.LE, meta, path, value)

    def gt(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.GT, meta, path, value)

    def ge(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.GE, meta, path, value)

    def is_known(self, meta: Any, path: Path) -> Condition:
        return self._condition(Op.IS_KNOWN, meta, path)

    def is_unknown(self, meta: Any, path: Path) -> Condition:
        return self._condition(Op.IS_UNKNOWN, meta, path)

    def contains(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.CONTAINS, meta, path, value)

    def does_not_contain(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.NOT_CONTAINS, meta, path, value)

    def starts_with(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.STARTS_WITH, meta, path, value)

    def ends_with(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.ENDS_WITH, meta, path, value)

    def matches(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.MATCHES, meta, path, self._pattern(value))

    def does_not_match(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.NOT_MATCHES, meta, path, self._pattern(value))

    def _pattern(self, value: object) -> str:
        """A pattern's literal as written (its backslashes are the pattern's), checked against the dialect."""
        if not isinstance(value, Token) or value.type != "STRING":
            where = value if isinstance(value, Token) else None
            raise RuleSyntaxError(
                "matches takes one pattern in quotes, such as \"^[^@]+@dealer\\.ca$\"",
                (where.line if where is not None else None) or 1,
                (where.column if where is not None else None) or 1,
                self.text,
            )
        body = value[1:-1]
        if len(body) > self.max_literal_chars:
            _unescape(value, self.text, self.max_literal_chars)  # raises the limit error
        try:
            compile_pattern(body)
        except PatternError as error:
            raise RuleSyntaxError(
                f"Not a pattern: {error.message}", value.line or 1, (value.column or 1) + 1 + error.offset, self.text
            ) from None
        return body

    def in_(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.IN, meta, path, value)

    def not_in(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.NOT_IN, meta, path, value)

    def between(self, meta: Any, path: Path, low: object, high: object) -> Condition:
        condition = self._condition(Op.BETWEEN, meta, path, (low, high))
        assert isinstance(condition.value, tuple)
        self._check_order(condition.value, high, meta)
        return condition

    def _check_order(self, bounds: tuple[Value, ...], high: object, meta: Any) -> None:
        """``between 2 and 1`` is a mistake to point at, not a range to turn round silently."""
        low_value, high_value = bounds
        if bounds_reversed(low_value, high_value):
            where = high if isinstance(high, Token) else None
            line, column = (where.line, where.column) if where is not None else (meta.line, meta.column)
            raise RuleSyntaxError(
                f"Empty range: {format_value(low_value)} is after {format_value(high_value)}"
                " (write the lower bound first)",
                line or 1,
                column or 1,
                self.text,
            )

    def before(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.BEFORE, meta, path, value)

    def after(self, meta: Any, path: Path, value: object) -> Condition:
        return self._condition(Op.AFTER, meta, path, value)

    def within_last(self, meta: Any, path: Path, amount: Token, unit: Token) -> Condition:
        duration = Duration(_integer(amount, self.text), Unit.from_word(unit))
        return self._condition(Op.WITHIN_LAST, meta, path, duration)

    def within_next(self, meta: Any, path: Path, amount: Token, unit: Token) -> Condition:
        duration = Duration(_integer(amount, self.text), Unit.from_word(unit))
        return self._condition(Op.WITHIN_NEXT, meta, path, duration)

    def path(self, meta: Any, *items: Token | _Arguments | None) -> Path | _Bare:
        *tokens, last = items
        segments = [t for t in tokens if isinstance(t, Token)]
        arguments = last if isinstance(last, _Arguments) else _Arguments()
        if len(segments) == 1 and last is None:
            return _Bare(segments[0])
        names = [_name(segment) for segment in segments]
        try:
            path = Path.of(names, last_is_quoted=segments[-1].type == "QUOTED_NAME")
        except ValueError as error:
            raise _token_error(segments[0], self.text, str(error).capitalize()) from None
        # Which paths take a field, a window or a filter is checked with the rule's types (cohorts.semantics).
        if arguments == _Arguments():
            return path
        field = None if arguments.field is None else _name(arguments.field)
        where = None if arguments.where is None else _place_fields(arguments.where, path.category)
        return attrs.evolve(path, window=arguments.window, field=field, where=where, then=arguments.then)

    def other(self, meta: Any, *items: Token | _Arguments | None) -> Path | _Bare:
        """The other side of a comparison of two values: a path."""
        return self.path(meta, *items)

    def field_path(self, meta: Any, *items: Token | _Arguments | None) -> _FieldRef:
        """A path inside a where: one field of the event, or a date part of one (``at.weekday``)."""
        *tokens, last = items
        segments = [t for t in tokens if isinstance(t, Token)]
        if last is not None:
            raise _token_error(
                segments[0], self.text, "Aggregates do not nest: a where filters events by their own fields"
            )
        names = [_name(segment) for segment in segments]
        part = None
        if len(names) == 2 and segments[1].type != "QUOTED_NAME" and names[1].lower() in DATE_PARTS:
            part = DatePart(names.pop().lower())
        if len(names) != 1:
            raise _token_error(
                segments[0],
                self.text,
                f"Inside a where, name a field of the event alone, as in {segments[-1]} (not {'.'.join(names)})",
            )
        if names[0].lower() in AGGREGATES and segments[0].type != "QUOTED_NAME":
            raise _token_error(
                segments[0], self.text, "Aggregates do not nest: a where filters events by their own fields"
            )
        return _FieldRef(names[0], part, segments[0])

    # -- arguments of aggregates
    def arguments(self, meta: Any, *items: Token | _Placed) -> _Arguments:
        """The field first, if any; then at most one window and one where, in either order."""
        field: Token | None = None
        window: Window | None = None
        where: Node | None = None
        then: Sequel | None = None
        for index, item in enumerate(items):
            if isinstance(item, Token):
                if index:
                    label = "The field comes first, as in sum(total, last 12 months)"
                    raise _token_error(item, self.text, label)
                field = item
            elif isinstance(item.value, Sequel):
                if then is not None:
                    label = "An aggregate takes one followed by or preceded by"
                    raise RuleSyntaxError(label, item.line, item.column, self.text)
                then = item.value
            elif isinstance(item.value, Window):
                if window is not None:
                    raise RuleSyntaxError("An aggregate takes one window", item.line, item.column, self.text)
                window = item.value
            else:
                if where is not None:
                    label = "An aggregate takes one where: join its conditions with AND"
                    raise RuleSyntaxError(label, item.line, item.column, self.text)
                where = item.value
        return _Arguments(field, window, where, then)

    def where(self, meta: Any, node: Node) -> _Placed:
        return _Placed(node, meta.line, meta.column)

    # -- sequences: the events another follows or precedes
    def followed(self, meta: Any, name: str, amount: Token | None, unit: Token | None) -> _Placed:
        return self._sequel(meta, name, amount, unit, preceded=False, negated=False)

    def not_followed(self, meta: Any, name: str, amount: Token | None, unit: Token | None) -> _Placed:
        return self._sequel(meta, name, amount, unit, preceded=False, negated=True)

    def preceded(self, meta: Any, name: str, amount: Token | None, unit: Token | None) -> _Placed:
        return self._sequel(meta, name, amount, unit, preceded=True, negated=False)

    def not_preceded(self, meta: Any, name: str, amount: Token | None, unit: Token | None) -> _Placed:
        return self._sequel(meta, name, amount, unit, preceded=True, negated=True)

    def _sequel(
        self, meta: Any, name: str, amount: Token | None, unit: Token | None, *, preceded: bool, negated: bool
    ) -> _Placed:
        within = None
        if amount is not None and unit is not None:
            within = Duration(_integer(amount, self.text), Unit.from_word(unit))
        return _Placed(Sequel(name, within, preceded=preceded, negated=negated), meta.line, meta.column)

    def event_name(self, meta: Any, *names: Token) -> str:
        return ".".join(_name(name) for name in names)

    # -- windows of aggregates
    def window_last(self, meta: Any, amount: Token, unit: Token) -> _Placed:
        window = Window(WindowKind.LAST, Duration(_integer(amount, self.text), Unit.from_word(unit)))
        return _Placed(window, meta.line, meta.column)

    def window_next(self, meta: Any, amount: Token, unit: Token) -> _Placed:
        window = Window(WindowKind.NEXT, Duration(_integer(amount, self.text), Unit.from_word(unit)))
        return _Placed(window, meta.line, meta.column)

    def window_since(self, meta: Any, time: object) -> _Placed:
        return _Placed(Window(WindowKind.SINCE, self._time(time)), meta.line, meta.column)

    def window_between(self, meta: Any, low: object, high: object) -> _Placed:
        bounds = (self._time(low), self._time(high))
        self._check_order(bounds, high, meta)
        return _Placed(Window(WindowKind.BETWEEN, bounds), meta.line, meta.column)

    def _time(self, value: object) -> Any:
        return _convert_token(value, self.text, self.max_literal_chars) if isinstance(value, Token) else value

    # -- values
    def list(self, meta: Any, *items: object) -> tuple[object, ...]:
        return tuple(item for item in items if item is not None)

    def true(self, meta: Any) -> bool:
        return True

    def false(self, meta: Any) -> bool:
        return False

    def ago(self, meta: Any, amount: Token, unit: Token) -> Relative:
        return Relative(_integer(amount, self.text), Unit.from_word(unit), ago=True)

    def ahead(self, meta: Any, amount: Token, unit: Token) -> Relative:
        return Relative(_integer(amount, self.text), Unit.from_word(unit), ago=False)


def _place_fields(where: Node, category: str) -> Node:
    """A where's conditions, their fields (:class:`_FieldRef`) made paths of the aggregate's events."""

    def place(node: Node) -> Node:
        if isinstance(node, Condition) and isinstance(node.path, _FieldRef):
            ref = node.path
            return attrs.evolve(node, path=Path(category, ref.name, ref.part))
        return node

    return transform(where, place)


def _mark_fields(tree: Tree[Token]) -> None:
    """Rename the paths inside each where to ``field_path``: they name fields of the events themselves."""
    for subtree in tree.iter_subtrees():
        if subtree.data == "where":
            for inner in subtree.iter_subtrees():
                if inner.data in ("path", "other"):
                    inner.data = "field_path"


def _convert_token(token: Token, text: str, max_literal_chars: int) -> object:
    match token.type:
        case "STRING":
            return _unescape(token, text, max_literal_chars)
        case "NUMBER":
            if re.fullmatch(r"[+-]?\d+", token):
                return _int(token, text)
            number = float(token)
            if number in (float("inf"), float("-inf")):
                raise _token_error(token, text, "Number too large")
            return number
        case "DATE":
            try:
                return dt.date.fromisoformat(str(token))
            except ValueError as error:
                raise _token_error(token, text, f"Invalid date ({error})") from None
        case "DATETIME":
            try:
                return dt.datetime.fromisoformat(str(token))
            except ValueError as error:
                raise _token_error(token, text, f"Invalid date and time ({error})") from None
        case "ANCHOR":
            return Anchor(" ".join(token.lower().split()))
        case "MONTH":
            return Month[token.upper()]
        case "WEEKDAY":
            return Weekday[token.upper()]
    return token


def _describe(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    try:
        pattern = _parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.strip("_").lower()
    return pattern.value if pattern.type == "str" else terminal.strip("_").lower()


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1


def _word_at(text: str, offset: int) -> str:
    match = re.compile(r"\w+").match(text, offset)
    return match.group(0) if match else ""


def _hint(word: str, expected: set[str]) -> str:
    if not word:
        return ""
    candidates = _KEYWORDS + _OPERATORS
    close = difflib.get_close_matches(word.lower(), candidates, n=1, cutoff=0.75)
    if close and close[0] != word.lower():
        return f'did you mean "{close[0]}"?'
    if "STRING" in expected and not word[0].isdigit():
        return f'text goes in quotes: "{word}"'
    return ""


_WINDOW_WORDS = ("between", "followed", "last", "next", "preceded", "since", "where")
_FIELD_END = re.compile(r"([^\W\d]\w*)\s*\Z")


def _misspelt_window(error: UnexpectedInput, text: str, offset: int, expected: set[str]) -> tuple[int, str] | None:
    """Where a window's keyword was misspelt (``count(lst 90 days)`` reads ``lst`` as a field and fails
    at ``90``): the offset of the word and the keyword it is close to, or None."""
    if not isinstance(error, UnexpectedToken) or not expected <= {"RPAR", "COMMA"}:
        return None
    found = _FIELD_END.search(text, 0, offset)
    if found is None or text[: found.start()].rstrip()[-1:] not in ("(", ","):
        return None  # the word opens an argument: after "(" or ","
    close = difflib.get_close_matches(found.group(1).lower(), _WINDOW_WORDS, n=1, cutoff=0.6)
    return (found.start(), close[0]) if close else None


def _syntax_error(error: UnexpectedInput, text: str) -> RuleSyntaxError:
    expected: set[str] = set()
    if isinstance(error, UnexpectedToken | UnexpectedEOF):
        expected = set(error.expected)
    elif isinstance(error, UnexpectedCharacters):
        expected = set(error.allowed or ())
    if "_CONTAINS" in expected:
        # After a path, "(" opens a window (appointment.count(last 90 days)): an aside, not
        # what a user who typed a path and a wrong operator is looking for.
        expected.discard("LPAR")
    described = {_describe(name) for name in expected}
    if expected & _VALUE_TERMINALS and "NAME" in expected:  # a value, or another path to compare with
        described -= {_describe("NAME"), _describe("QUOTED_NAME")}
        described.add("a path")
    words = sorted(described)
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    )
    if at_end:
        line, column = _position(text, len(text.rstrip()))
        if expected & _VALUE_TERMINALS:
            label = "Missing value"
        elif "NAME" in expected:
            label = "Missing condition"
        else:
            label = "Unexpected end of rule"
        return RuleSyntaxError(label, line, column, text, words)
    offset = error.pos_in_stream if error.pos_in_stream is not None else 0
    misspelt = _misspelt_window(error, text, offset, expected)
    if misspelt is not None:
        start, keyword = misspelt
        line, column = _position(text, start)
        words = sorted(_WINDOW_WORDS)
        label = f"Unexpected {_word_at(text, start)!r}"
        return RuleSyntaxError(label, line, column, text, words, f'did you mean "{keyword}"?')
    line, column = _position(text, offset)
    word = _word_at(text, offset)
    if isinstance(error, UnexpectedCharacters):
        char = text[offset:offset + 1]
        if char and char in "\"'":
            label = "Unterminated string"
        elif char == "`":
            label = "Unterminated `quoted name`"
        else:
            label = f"Unexpected {word!r}" if word else f"Unexpected character {char!r}"
    else:
        label = f"Unexpected {text[offset:offset + max(1, len(str(error.token)))]!r}"  # type: ignore[attr-defined]
    return RuleSyntaxError(label, line, column, text, words, _hint(word, expected))


def parse(text: str, *, max_rule_chars: int = MAX_RULE_CHARS, max_literal_chars: int = MAX_LITERAL_CHARS) -> Node:
    """Parse rule text into its AST.

    Raises :class:`~cohorts.RuleSyntaxError` (a :class:`~cohorts.RuleError`)
    with the line, column and a caret when the text is not a rule, and its
    subclass :class:`~cohorts.RuleLimitError` when the text is longer than
    ``max_rule_chars`` (checked before parsing) or a string literal, a value
    of an ``in`` list included, holds more than ``max_literal_chars``
    characters between its quotes as written. Memory grows linearly with the
    text (a few bytes per character), so raise the limits as far as you trust
    the source of the rules.

    Example:
        >>> rule = parse('customer.city = "Laval" and customer.vehicle_year >= 2019')
        >>> print(rule)
        customer.city = "Laval" AND customer.vehicle_year >= 2019

    .. versionadded:: 0.1
    """
    if not isinstance(text, str):
        raise TypeError(f"parse() takes rule text, not {type(text).__name__}")
    if len(text) > max_rule_chars:
        line, column = _position(text, max_rule_chars)
        raise RuleLimitError(
            f"Rule of {len(text):,} characters, over max_rule_chars ({max_rule_chars:,})",
            line,
            column,
            text,
            limit=max_rule_chars,
        )
    return _parse_text(text, max_literal_chars)


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str, max_literal_chars: int) -> Node:
    # ASTs are immutable, so rules kept as text in config parse once.
    if not _COMMENT.sub("", text).strip():
        raise RuleSyntaxError("Empty rule", 1, 1, text)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(error, text) from None
    except RecursionError:
        raise RuleSyntaxError("Rule nested too deeply", 1, 1, text) from None
    if _WHERE_WORD.search(text):
        _mark_fields(tree)
    try:
        return _ToAst(text, max_literal_chars).transform(tree)  # type: ignore[no-any-return]
    except VisitError as error:
        if isinstance(error.orig_exc, RuleSyntaxError):
            raise error.orig_exc from None
        # Not expected; still, no lark type or stray exception leaves parse().
        meta = getattr(error.obj, "meta", None)
        line, column = getattr(meta, "line", 1), getattr(meta, "column", 1)
        raise RuleSyntaxError(f"Invalid rule ({error.orig_exc})", line, column, text) from error.orig_exc
