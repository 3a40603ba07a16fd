"""Rules 10,000 levels deep: no walk over a rule recurses, so they work everywhere in memory.

Each shape hangs the same small rule under a chain of NOTs, of ANDs and ORs
with fillers that change nothing (always true under AND, always false under
OR), or of both; the deep rule must behave as the shallow rule it means.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import itertools
import pickle
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohorts import (
    Customer,
    Event,
    Groups,
    MemoryRepository,
    RuleJsonError,
    Schema,
    UnknownAttributeError,
    compile,  # noqa: A004
    explain,
    from_json,
    parse,
    to_dict,
    validate,
)
from cohorts.ast import (
    And,
    Condition,
    InGroup,
    Node,
    Not,
    Op,
    Or,
    Path,
    Relative,
    Unit,
    abbreviate,
    abbreviations,
    children,
    transform,
    walk,
)
from cohorts.cli._common import explanation_data

from .strategies import ALWAYS_FALSE, ALWAYS_TRUE, rules

DEPTH = 10_000
NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
X = Condition(Path("customer", "x"), Op.EQ, 1)
# True for x = 1 and for members of VIP; unknown when x is unknown, for others.
IN_VIP = InGroup("VIP")
BASE = Or([X, IN_VIP])
CUSTOMERS = [Customer(1, {"x": 1}), Customer(2, {"x": 2}), Customer(3, {}), Customer(4, {"x": 2})]
VIP = frozenset({4})
SCHEMA = Schema({"customer": {"x": "number", "never_set": "text"}})


def _groups(name: str) -> frozenset[int]:
    assert name == "VIP"
    return VIP


def _chain(rule: Node, pattern: str, depth: int) -> Node:
    """``rule`` under ``depth`` levels of ``pattern`` repeated: ``!`` NOT, ``&`` AND with TRUE after
    the rule, ``^`` AND with TRUE before it, ``|`` OR with FALSE after it, ``/`` OR with FALSE before."""
    for level in range(depth):
        match pattern[level % len(pattern)]:
            case "!":
                rule = Not(rule)
            case "&":
                rule = And([rule, Condition(ALWAYS_TRUE.path, ALWAYS_TRUE.op)])
            case "^":
                rule = And([Condition(ALWAYS_TRUE.path, ALWAYS_TRUE.op), rule])
            case "|":
                rule = Or([rule, Condition(ALWAYS_FALSE.path, ALWAYS_FALSE.op)])
            case "/":
                rule = Or([Condition(ALWAYS_FALSE.path, ALWAYS_FALSE.op), rule])
    return rule


@attrs.frozen
class Shape:
    """A pattern repeated to a depth over a rule; an odd number of NOTs means NOT of the rule."""

    pattern: str
    depth: int

    def over(self, rule: Node) -> Node:
        return _chain(rule, self.pattern, self.depth)

    def meaning(self, rule: Node) -> Node:
        nots = sum(self.pattern[level % len(self.pattern)] == "!" for level in range(self.depth))
        return Not(rule) if nots % 2 else rule


SHAPES = {"not": Shape("!", DEPTH + 1), "and-or": Shape("&/", DEPTH), "mixed": Shape("!^!|&!/", DEPTH)}


@attrs.frozen
class Deep:
    """A shape over BASE, and what it means."""

    shape: Shape
    rule: Node  # BASE, 10,000 levels down
    shallow: Node  # what it means: BASE or NOT BASE


@pytest.fixture(scope="module", params=sorted(SHAPES))
def deep(request: pytest.FixtureRequest) -> Deep:
    """A 10,000-deep rule and the shallow rule it means."""
    shape = SHAPES[request.param]
    return Deep(shape, shape.over(BASE), shape.meaning(BASE))


def _depth(rule: Node) -> int:
    return max(level for _, level in _levels(rule))


def _levels(rule: Node) -> Iterator[tuple[Node, int]]:
    """Every node with its depth, parents first (the order of explanation lines)."""
    stack = [(rule, 0)]
    while stack:
        node, level = stack.pop()
        yield node, level
        stack.extend((item, level + 1) for item in reversed(children(node)))


def test_shapes_are_deep(deep: Deep) -> None:
    """The shapes nest 10,000 levels: nested ANDs and ORs do not flatten away."""
    rule = deep.rule
    assert _depth(rule) >= DEPTH


# -- text, JSON, values ------------------------------------------------------------


def test_text_round_trip(deep: Deep) -> None:
    """The canonical text of a deep rule parses back to it, and prints the same again."""
    rule = deep.rule
    text = str(rule)
    assert parse(text) == rule
    assert str(parse(text)) == text


def test_parses_deep_text() -> None:
    """10,000 NOTs, with or without parentheses, and 10,000 parentheses parse."""
    nots = _chain(X, "!", DEPTH)
    assert parse("NOT " * DEPTH + "customer.x = 1") == nots
    assert parse("NOT (" * DEPTH + "customer.x = 1" + ")" * DEPTH) == nots
    assert parse("(" * DEPTH + "customer.x = 1" + ")" * DEPTH) == X


def test_json_round_trip(deep: Deep) -> None:
    """to_json and from_json of a deep rule give it back."""
    rule = deep.rule
    assert from_json(to_dict(rule)) == rule


def test_json_error_deep_down_names_its_place() -> None:
    """A fault 10,000 groups down is reported with its full JSON pointer."""
    data = to_dict(_chain(X, "!", DEPTH))
    row = data["rules"][0]["sub_rules"][0]
    while "not" in row:
        row = row["not"]["rules"][0]["sub_rules"][0]
    row["operator"] = "equals"
    with pytest.raises(RuleJsonError) as caught:
        from_json(data)
    assert caught.value.pointer == "/rules/0/sub_rules/0" + "/not/rules/0/sub_rules/0" * DEPTH + "/operator"


def test_json_text_too_deep_for_the_json_module() -> None:
    """JSON text nested deeper than Python's json module reads is a RuleJsonError, not a RecursionError."""
    row = '{"category": "customer", "attribute": "x", "operator": "=", "value": 1}'
    text = '{"rules": [{"sub_rules": [' * 1_000 + row + "]}]}" * 1_000
    with pytest.raises(RuleJsonError, match="nested too deeply"):
        from_json(text)


def test_equality_hash_and_repr(deep: Deep) -> None:
    """Deep rules compare, hash and print their repr without recursion."""
    rule = deep.rule
    same = deep.shape.over(Or([X, InGroup("VIP")]))
    other = deep.shape.over(Or([X, InGroup("Gold")]))
    assert rule == same and hash(rule) == hash(same)
    assert rule != other
    assert repr(rule).startswith(f"{type(rule).__name__}(") and repr(rule).count("InGroup(") == 1


def test_pickle_and_deepcopy(deep: Deep) -> None:
    """Deep rules pickle and deep-copy (to equal rules, spans included)."""
    rule = deep.rule
    assert pickle.loads(pickle.dumps(rule)) == rule
    assert copy.deepcopy(rule) == rule
    parsed = parse("NOT (" * 3_000 + "customer.x = 1 OR customer.y = 2" + ")" * 3_000)
    copied = copy.deepcopy(parsed)
    assert [node.span for node in walk(copied)] == [node.span for node in walk(parsed)]  # type: ignore[attr-defined]


# -- evaluation --------------------------------------------------------------------


def test_compiles_to_the_shallow_answer(deep: Deep) -> None:
    """The compiled deep rule, and a MemoryRepository's select, answer as the shallow rule does."""
    rule, shallow = deep.rule, deep.shallow
    predicate, reference = compile(rule), compile(shallow)
    for customer in CUSTOMERS:
        assert predicate(customer, NOW, groups=_groups) is reference(customer, NOW, groups=_groups)
    repository = MemoryRepository(CUSTOMERS)
    expected = repository.select(shallow, NOW, groups=_groups)
    assert expected  # the shapes select somebody, and not everybody
    assert expected != {c.id for c in CUSTOMERS}
    assert repository.select(rule, NOW, groups=_groups) == expected


def test_validates(deep: Deep) -> None:
    """validate checks every condition of a deep rule; an unknown attribute at the bottom is found."""
    rule = deep.rule
    assert validate(rule, SCHEMA) is rule
    with pytest.raises(UnknownAttributeError, match=r"customer\.x"):
        validate(rule, Schema({"customer": {"never_set": "text"}}))


def test_explains(deep: Deep) -> None:
    """explain gives the shallow rule's result, one line per node, each indented by its depth."""
    rule, shallow = deep.rule, deep.shallow
    for customer in CUSTOMERS:
        explanation = explain(rule, customer, NOW, groups=_groups)
        assert explanation.result == explain(shallow, customer, NOW, groups=_groups).result
    word = {True: "true", False: "false", None: "unknown"}[explanation.result]
    assert next(explanation.lines()) == f"[{word}] {abbreviate(rule)}"
    count = sum(1 for _ in walk(rule))
    # Each line is the node's own explanation, indented by its depth: checked in the middle and at the bottom.
    picked = {count // 2, count - 3, count - 2, count - 1}
    lines = zip(_levels(rule), explanation.lines(), strict=True)  # strict: one line per node
    for index, ((node, level), line) in enumerate(lines):
        if index in picked:
            assert line == "  " * level + next(explain(node, customer, NOW, groups=_groups).lines())
        if node is IN_VIP:  # customer 4 is in VIP
            assert level >= DEPTH and line == "  " * level + "[true] customer in group \"VIP\"  (value: 'member')"


def test_explains_the_not_chain_word_for_word() -> None:
    """The first lines of a NOT chain's explanation, as written."""
    explanation = explain(_chain(X, "!", DEPTH), CUSTOMERS[0], NOW)
    top = list(itertools.islice(explanation.lines(), 3))
    assert top == [
        "[true] " + ("NOT " * 25)[:97] + "...",
        "  [false] " + ("NOT " * 25)[:97] + "...",
        "    [true] " + ("NOT " * 25)[:97] + "...",
    ]
    last = collections.deque(explanation.lines(), maxlen=1)[0]
    assert last == "  " * DEPTH + "[true] customer.x = 1  (value: 1; compared with 1)"


def test_explanations_compare_hash_and_print(deep: Deep) -> None:
    """Explanations of deep rules compare, hash, print their repr and turn into JSON data."""
    rule = deep.rule
    explanation = explain(rule, CUSTOMERS[0], NOW, groups=_groups)
    again = explain(rule, CUSTOMERS[0], NOW, groups=_groups)
    assert explanation == again and hash(explanation) == hash(again)
    assert explanation != explain(rule, CUSTOMERS[1], NOW, groups=_groups)
    assert repr(explanation).count("Explanation(") == sum(1 for _ in walk(rule))
    data, level = explanation_data(explanation), 0
    while "children" in data:  # down the chain, to the first condition of BASE
        data = next((child for child in data["children"] if "children" in child), data["children"][0])
        level += 1
    assert level > DEPTH and data == {"rule": "customer.x = 1", "result": True, "value": 1, "compared_to": 1}


# -- groups ------------------------------------------------------------------------


def test_groups_in_memory() -> None:
    """A group with a 10,000-deep rule (a moving time condition, a group test) has the shallow rule's
    members, now and later, and follows a rename of the group it tests (one shape: each step parses
    the rule's text again)."""
    shape = SHAPES["mixed"]
    recent = Condition(Path("visit", "last_time"), Op.GT, Relative(30, Unit.DAYS))  # over 30 days ago
    base = And([recent, BASE])
    repository = MemoryRepository(
        [
            Customer(1, {"x": 1}, [Event("visit", NOW - dt.timedelta(days=40))]),
            Customer(2, {"x": 1}, [Event("visit", NOW - dt.timedelta(days=10))]),
            Customer(3, {"x": 2}, [Event("visit", NOW - dt.timedelta(days=40))]),
            Customer(4, {"x": 2}, [Event("visit", NOW - dt.timedelta(days=40))]),
            Customer(5, {"x": 2}),
        ]
    )
    groups = Groups(repository)
    groups.create("VIP", "customer.x = 2 AND visit.count >= 1")
    groups.create("Deep", shape.over(base))
    groups.create("Shallow", shape.meaning(base))
    for moment in (NOW, NOW + dt.timedelta(days=25)):
        assert dict(groups.members("Deep", moment)) == dict(groups.members("Shallow", moment))
    assert groups.why("Deep", 2, NOW).explanation is not None
    groups.rename("VIP", "Gold")
    text = groups.definition("Deep").rule
    assert text is not None and 'customer in group "Gold"' in text and '"VIP"' not in text
    assert dict(groups.members("Deep", NOW)) == dict(groups.members("Shallow", NOW))


# -- the walks themselves ------------------------------------------------------------


def test_transform_rebuilds_only_what_changed() -> None:
    """transform swaps nodes of a 10,000-deep rule without recursion, offers nothing under a replaced
    node, shares what did not change and keeps the spans of rebuilt branches."""
    y = Condition(Path("customer", "y"), Op.EQ, 2)
    rule = _chain(And([y, X]), "!|", DEPTH)  # y and x at the bottom, under NOTs and ORs with fillers
    offered: list[Node] = []

    def change(node: Node) -> Node:
        offered.append(node)
        if node is X:
            return Condition(X.path, Op.EQ, 2)
        return Not(X) if isinstance(node, And) else node  # never offers y (nor x)

    changed = transform(rule, change)
    assert changed == _chain(Not(X), "!|", DEPTH)
    assert len(offered) == sum(1 for _ in walk(rule)) - 2
    assert transform(rule, lambda node: node) is rule
    kept = transform(rule, lambda node: Condition(X.path, Op.EQ, 2) if node is X else node)
    assert kept == _chain(And([y, Condition(X.path, Op.EQ, 2)]), "!|", DEPTH)
    assert [item is old for item, old in zip(children(kept), children(rule), strict=True)] == [False, True]
    parsed = parse("NOT (customer.y = 2 OR (" * 500 + "customer.x = 1 AND customer.z = 3" + "))" * 500)
    renamed = transform(parsed, lambda node: Condition(X.path, Op.EQ, 2) if node == X else node)
    assert [getattr(node, "span", None) for node in walk(renamed) if not isinstance(node, Condition)] == [
        getattr(node, "span", None) for node in walk(parsed) if not isinstance(node, Condition)
    ]


@given(rules(), st.integers(4, 120))
@settings(max_examples=100, deadline=None)
def test_abbreviations_abbreviate_every_node(rule: Node, width: int) -> None:
    """abbreviations(rule) holds abbreviate(node) for every node of the rule."""
    texts = abbreviations(rule, width)
    assert all(texts[id(node)] == abbreviate(node, width) for node in walk(rule))
