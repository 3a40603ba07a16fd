"""Notebook display: every result object has an HTML form that holds the same facts as its text, escaped."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

import pytest

import cohorts

NOW = dt.datetime(2026, 11, 16, 14, tzinfo=dt.UTC)


class _Cells(HTMLParser):
    """Collects the text of table cells and checks that every opened tag is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.cells: list[str] = []
        self.rows = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        if tag in ("td", "th"):
            self._cell = []
        if tag == "tr":
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open}"
        self.open.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_html(text: str) -> _Cells:
    parser = _Cells()
    parser.feed(text)
    parser.close()
    assert parser.open == []
    return parser


def test_report_is_a_table_with_escaped_names() -> None:
    repository = cohorts.MemoryRepository([cohorts.Customer(1, {"tags": ["vip"]}), cohorts.Customer(2, {})])
    groups = cohorts.Groups(repository)
    groups.create("<b>VIP</b>", 'customer.tags contains "VIP"')
    groups.create("All")
    groups.add("All", 1, 2)
    rows = cohorts.report(groups, now=NOW)
    page = rows._repr_html_()
    assert "<b>VIP</b>" not in page and "&lt;b&gt;VIP&lt;/b&gt;" in page
    cells = parse_html(page)
    assert cells.rows == 1 + len(rows)
    assert cells.cells[:2] == ["group", "customers"]
    assert {"<b>VIP</b>", "All", "1", "2"} <= set(cells.cells)


def test_rules_explanations_previews_and_why() -> None:
    rule = cohorts.parse('customer.city = "<Laval>"')
    assert rule._repr_html_() == "<code>customer.city = &quot;&lt;Laval&gt;&quot;</code>"
    customer = cohorts.Customer(1, {"city": "<laval>"})
    explanation = cohorts.explain(rule, customer, NOW)
    page = explanation._repr_html_()
    assert '<span class="cohorts-true" style="color:#1a7f37;font-weight:bold">[true]</span>' in page
    import html
    import re

    assert html.unescape(re.sub(r"</?(pre|span)[^>]*>", "", page)) == str(explanation)  # the same facts
    assert "&lt;laval&gt;" in page and "<laval>" not in page
    unknown = cohorts.explain('customer.city = "x" or customer.age > 3', cohorts.Customer(2, {"city": "x"}), NOW)
    assert 'class="cohorts-unknown"' in unknown._repr_html_() and 'class="cohorts-true"' in unknown._repr_html_()
    repository = cohorts.MemoryRepository([customer, cohorts.Customer(2, {"city": "Montréal"})])
    groups = cohorts.Groups(repository)
    groups.create("Laval", 'customer.city = "<Laval>"')
    why = groups.why("Laval", 1, NOW)
    assert why._repr_html_().startswith("<pre>customer 1 is in group &#x27;Laval&#x27;")
    preview = groups.preview("Laval", 'customer.city = "Montréal"', NOW)
    assert "1 joining, 1 leaving" in preview._repr_html_()


def test_run_report_lists_every_campaign_and_its_failures() -> None:
    repository = cohorts.MemoryRepository([cohorts.Customer(1, {"status": "active"})])

    def broken(customer: cohorts.Customer, action: cohorts.Action, campaign: cohorts.Campaign) -> None:
        raise RuntimeError("provider <down>")

    campaigns = [
        cohorts.Campaign("Hello", published=True, actions=[cohorts.Action("track")]),
        cohorts.Campaign("Later", published=False, actions=[cohorts.Action("track")]),
    ]
    run = cohorts.run_campaigns(campaigns, repository, None, {"track": broken}, NOW)
    page = run._repr_html_()
    cells = parse_html(page)
    assert cells.rows == 3
    assert "Hello" in cells.cells and "no: not published" in cells.cells
    assert "provider &lt;down&gt;" in page


def test_import_report_and_preview(tmp_path: Path) -> None:
    path = tmp_path / "clients.csv"
    path.write_text("Name,Cell\nAnn,514 555 0101\nBob,514 555 0102 / 514 555 0103 / 12\n", encoding="utf-8")
    preview = cohorts.preview_file(path)
    cells = parse_html(preview._repr_html_())
    assert cells.rows == 3 and "Ann" in cells.cells
    report = cohorts.import_file(path, cohorts.MemoryRepository(), region="CA")
    page = report._repr_html_()
    cells = parse_html(page)
    assert "3" in cells.cells and "Cell" in cells.cells
    assert any(cell.startswith("two phone numbers in one cell") for cell in cells.cells)
    assert "created 1" in page


def test_ipython_shows_the_text_not_the_repr() -> None:
    """In IPython (terminal or notebook text), results print as their readable text."""
    pretty = pytest.importorskip("IPython.lib.pretty").pretty
    customer = cohorts.Customer(1, {"city": "Laval", "tags": ["vip"]})
    for text in ['customer.city = "Laval" AND customer in group "VIP"', 'NOT customer.tags contains "vip"',
                 'customer.city = "Laval"', 'customer not in group "VIP"']:
        rule = cohorts.parse(text)
        assert pretty(rule) == str(rule)
    explanation = cohorts.explain('customer.city = "laval"', customer, NOW)
    assert pretty(explanation) == str(explanation)
    groups = cohorts.Groups(cohorts.MemoryRepository([customer]))
    groups.create("VIP", 'customer.tags contains "VIP"')
    for value in (groups.why("VIP", 1, NOW), groups.preview("VIP", None, NOW), cohorts.report(groups, now=NOW)):
        assert pretty(value) == str(value)


def test_members_show_as_a_table_of_origins_with_the_rest_counted() -> None:
    """A group's members in a notebook: escaped ids, a yes/no column per origin, the first 50 rows
    and a count of the rest; rows() gives them all, and the mapping equals the plain dict."""
    from cohorts import Customer, Groups, MemoryRepository

    now = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    repo = MemoryRepository([Customer(f"<c{i:03d}>", {"n": i}) for i in range(120)])
    groups = Groups(repo)
    groups.create("Big", "customer.n >= 10")
    groups.add("Big", "<c000>", now=now)
    members = groups.members("Big", now)
    page = members._repr_html_()
    assert "<caption>Big: 111 members at 2026-11-16T00:00:00+00:00</caption>" in page
    assert page.count("<tr>") == 51 and "… and 61 more" in page
    assert "&lt;c000&gt;" in page and "<c000>" not in page
    assert len(members.rows()) == 111 and members.rows()[0] == {
        "customer_id": "<c000>", "manual": True, "imported": False, "rules": False,
    }
    assert members == dict(members.items()) and list(members)[:2] == ["<c000>", "<c010>"]
