"""The pattern dialect of ``matches``: one small regular-expression language, run alike by every backend.

A pattern is checked once, then rendered twice: for RE2 (Google's linear-time
engine, through the ``google-re2`` package: the in-memory evaluator, and SQLite
through a registered function) and as a PostgreSQL ARE for the ``~`` operator.
Both renderings mean the same thing because the dialect leaves out everything
the two engines read differently:

- ``.`` and negated classes match any character, line ends included;
- ``^`` is the start of the text and ``$`` its very end (never "before a final
  line end", as Perl's and Python's ``$`` would be);
- ``\\d``, ``\\w`` and ``\\s`` are ASCII (``[0-9]``, ``[0-9a-z_]``, space and
  ``\\t\\n\\r\\f\\v``), spelled out as classes for both engines;
- groups never capture, and ``(?...)`` constructs, back references, word
  boundaries and other escapes of letters are refused;
- counts ``{m,n}`` go up to 255 (PostgreSQL's limit).

A pattern is matched anywhere in the text (``^`` and ``$`` anchor it) against
the text as every text operator compares it: stripped, NFC-normalised and
case-folded. Letters in the pattern are folded the same way, so
``matches "^[A-Z]+ Motors$"`` matches ``"ACME motors"``.

Matching takes time linear in the text on both engines (neither backtracks
without bound: Python's own :mod:`re` takes quadratic time on
``[^@]+@dealer`` and far worse on ``.*.*.*x``, which is why it is not used).
To keep patterns simple to read and cheap on PostgreSQL too, a repeated group
may contain neither ``|`` nor another repetition: ``(ab)+`` is fine,
``(a+)+`` and ``(a|b)+`` are refused (write ``[ab]+``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import attrs
import re2

from .ast import bare_quotes, quote_pattern

__all__ = ["MAX_PATTERN_CHARS", "Pattern", "PatternError", "compile_pattern"]

#: The longest pattern accepted, in characters.
MAX_PATTERN_CHARS = 1000
_MAX_COUNT = 255
_MAX_DEPTH = 50
_CLASSES = {"d": "0-9", "w": "0-9a-z_", "s": " \\t\\n\\r\\f\\v"}
_CONTROL = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_CLASS_SPECIAL = frozenset("\\]-^[")


class PatternError(ValueError):
    """A pattern outside the dialect: ``offset`` is the index in the pattern where the problem starts."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@attrs.frozen(eq=False, repr=False)
class Pattern:
    """A checked pattern: its source ``text`` and its renderings for RE2 and PostgreSQL."""

    text: str
    re2: str
    posix: str
    _compiled: Any = attrs.field(alias="compiled")  # a re2 regexp (the package has no type hints)

    def search(self, folded: str) -> bool:
        """Whether the pattern matches somewhere in ``folded`` (text already folded as cohorts folds it)."""
        return self._compiled.search(folded) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("pattern", self.text))

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def __str__(self) -> str:
        return quote_pattern(self.text)


def _fold(char: str) -> str:
    return unicodedata.normalize("NFC", char.casefold())


def _literal(char: str) -> str:
    """One literal character as both engines read it outside a class."""
    return "\\" + char if char.isascii() and not char.isalnum() and char.isprintable() and char != " " else char


def _class_literal(char: str) -> str:
    return "\\" + char if char in _CLASS_SPECIAL else char


@attrs.define
class _Frame:
    start: int  # offset of the "(" (0 for the whole pattern)
    risky: bool = False  # holds a | or a repetition
    empty: bool = True  # nothing since the last "(" or "|"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []  # the same text for both engines: the dialect keeps to what they read alike
        self.frames = [_Frame(0)]
        self.last: str | None = None  # "atom", "group", "risky-group", "repeat", "anchor"

    def emit(self, text: str) -> None:
        self.out.append(text)

    def read(self) -> None:
        text, i = self.text, 0
        while i < len(text):
            char = text[i]
            if char == "\\":
                i = self._escape(i)
            elif char == "[":
                i = self._class(i)
            elif char == "(":
                if text.startswith("(?", i):
                    raise PatternError("(? constructs are not part of the pattern dialect", i)
                if len(self.frames) > _MAX_DEPTH:
                    raise PatternError(f"groups nest at most {_MAX_DEPTH} deep", i)
                self.frames[-1].empty = False
                self.frames.append(_Frame(i))
                self.emit("(?:")
                self.last = None
                i += 1
            elif char == ")":
                if len(self.frames) == 1:
                    raise PatternError("this ) closes no group", i)
                frame = self.frames.pop()
                if frame.empty:
                    raise PatternError("an empty group or alternative matches nothing useful", i)
                self.frames[-1].risky |= frame.risky
                self.emit(")")
                self.last = "risky-group" if frame.risky else "group"
                i += 1
            elif char == "|":
                if self.frames[-1].empty:
                    raise PatternError("an alternative is empty on the left of this |", i)
                self.frames[-1].risky = True
                self.frames[-1].empty = True
                self.emit("|")
                self.last = None
                i += 1
            elif char in "*+?{":
                i = self._repeat(i)
            elif char in "^$":
                self.frames[-1].empty = False
                self.emit(char)  # without (?m), both engines read ^ and $ as the text's ends
                self.last = "anchor"
                i += 1
            elif char == ".":
                self._atom(".")
                i += 1
            else:
                self._literal_atom(_fold(char))
                i += 1
        if len(self.frames) > 1:
            raise PatternError("this ( is never closed", self.frames[-1].start)
        if self.frames[0].empty:
            raise PatternError("an alternative is empty at the end of the pattern", len(text))

    def _atom(self, text: str) -> None:
        self.frames[-1].empty = False
        self.emit(text)
        self.last = "atom"

    def _literal_atom(self, folded: str) -> None:
        """A character as folded: one literal, or a group of them (``ß`` is ``ss``) that a repetition takes whole."""
        text = "".join(map(_literal, folded))
        self._atom(text if len(folded) == 1 else f"(?:{text})")

    def _escape(self, i: int) -> int:
        text = self.text
        if i + 1 >= len(text):
            raise PatternError("a pattern cannot end with a lone \\", i)
        char = text[i + 1]
        if char in _CLASSES:
            self._atom(f"[{_CLASSES[char]}]")
        elif char.lower() in _CLASSES:
            self._atom(f"[^{_CLASSES[char.lower()]}]")
        elif char in _CONTROL:
            self._atom(_literal(_CONTROL[char]))
        elif char.isascii() and char.isalnum():
            raise PatternError(f"\\{char} is not part of the pattern dialect (\\d \\w \\s \\D \\W \\S \\t \\n are)", i)
        else:
            folded = _fold(char)
            self._literal_atom(folded)
        return i + 2

    def _class(self, i: int) -> int:
        text, j = self.text, i + 1
        negated = j < len(text) and text[j] == "^"
        j += negated
        members: list[str] = []
        first = True
        while True:
            if j >= len(text):
                raise PatternError("this [ is never closed", i)
            char = text[j]
            if char == "]" and not first:
                j += 1
                break
            first = False
            low, j, shorthand = self._class_member(j)
            if shorthand is not None:
                members.append(shorthand)
                continue
            assert low is not None
            if j + 1 < len(text) and text[j] == "-" and text[j + 1] != "]":
                high, after, high_shorthand = self._class_member(j + 1)
                if high is None or high_shorthand is not None:
                    raise PatternError("a range in [...] goes from one character to another", j)
                if ord(low) > ord(high):
                    raise PatternError(f"the range {low}-{high} is backwards (after folding to lower case)", j)
                members.append(f"{_class_literal(low)}-{_class_literal(high)}")
                j = after
            else:
                members.append(_class_literal(low))
        self._atom("[" + "^" * negated + "".join(members) + "]")
        return j

    def _class_member(self, j: int) -> tuple[str | None, int, str | None]:
        """One member of a class: (a character, the next offset, None) or (None, next, a shorthand's ranges)."""
        text = self.text
        char = text[j]
        if char == "\\":
            if j + 1 >= len(text):
                raise PatternError("a pattern cannot end with a lone \\", j)
            escaped = text[j + 1]
            if escaped in _CLASSES:
                return None, j + 2, _CLASSES[escaped]
            if escaped in _CONTROL:
                return _CONTROL[escaped], j + 2, None
            if escaped.isascii() and escaped.isalnum():
                raise PatternError(f"\\{escaped} is not part of the pattern dialect inside [...]", j)
            char, j = escaped, j + 1
        folded = _fold(char)
        if len(folded) != 1:
            raise PatternError(f"{char!r} folds to {folded!r}, more than one character: write it outside [...]", j)
        return folded, j + 1, None

    def _repeat(self, i: int) -> int:
        text = self.text
        if self.last is None:
            raise PatternError("nothing before this repetition to repeat", i)
        if self.last == "anchor":
            raise PatternError("^ and $ cannot be repeated", i)
        if self.last == "repeat":
            raise PatternError("a repetition cannot follow another one: put the first in a group", i)
        if self.last == "risky-group":
            raise PatternError("a repeated group cannot contain | or another repetition (write [ab]+, not (a|b)+)", i)
        char = text[i]
        if char == "{":
            end = text.find("}", i)
            body = text[i + 1 : end] if end != -1 else ""
            found = re.fullmatch(r"(\d{1,3})(,(\d{0,3}))?", body)
            if found is None:
                raise PatternError("a count reads {2}, {2,} or {2,5}; write \\{ for the character itself", i)
            low = int(found.group(1))
            high = None if found.group(2) is None else (int(found.group(3)) if found.group(3) else -1)
            if low > _MAX_COUNT or (high is not None and high > _MAX_COUNT):
                raise PatternError(f"counts go up to {_MAX_COUNT}", i)
            if high is not None and high != -1 and high < low:
                raise PatternError(f"the count {{{body}}} is backwards", i)
            rendered, after = "{" + body + "}", end + 1
        else:
            rendered, after = char, i + 1
        if after < len(text) and text[after] == "?":  # lazy: the same matches, a different extent
            rendered, after = rendered + "?", after + 1
        self.frames[-1].risky = True
        self.emit(rendered)
        self.last = "repeat"
        return after


@functools.lru_cache(maxsize=1024)
def compile_pattern(text: str) -> Pattern:
    """Check ``text`` against the dialect and render it; a :class:`PatternError` says where it is not.

    Example:
        >>> p = compile_pattern(r"^[^@]+@dealer\\.ca$")
        >>> p.search("sam@dealer.ca"), p.search("sam@dealer.ca.evil.com")
        (True, False)
        >>> p.re2, p.posix
        ('(?s)^[^@]+\\\\@dealer\\\\.ca$', '^[^@]+\\\\@dealer\\\\.ca$')
        >>> compile_pattern("(a+)+")
        Traceback (most recent call last):
        ...
        cohorts.pattern.PatternError: a repeated group cannot contain | or another repetition (write [ab]+, not (a|b)+)
    """
    if not isinstance(text, str):
        raise PatternError(f"a pattern is text, not {type(text).__name__}", 0)
    if not text:
        raise PatternError("an empty pattern matches everything: use 'is known'", 0)
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(f"a pattern has at most {MAX_PATTERN_CHARS:,} characters", MAX_PATTERN_CHARS)
    for offset, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise PatternError(f"{char!r} cannot be written in a rule: write \\t, \\n or \\r for those", offset)
    if bare_quotes(text) == {'"', "'"}:
        raise PatternError("a pattern in a rule holds bare quotes of one kind at most: write \\\" for the other", 0)
    reader = _Reader(unicodedata.normalize("NFC", text) if not text.isascii() else text)
    reader.read()
    body = "".join(reader.out)
    rendered = "(?s)" + body  # PostgreSQL's . takes line ends unless told otherwise; RE2's only with (?s)
    try:
        compiled = re2.compile(rendered)
    except re2.error as error:  # the dialect should have refused it: say so rather than fail later
        raise PatternError(f"not a pattern: {error}", 0) from None
    return Pattern(text, rendered, body, compiled)
