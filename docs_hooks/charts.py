"""Bar charts as SVG, drawn by the docs build: benchmark tables and a campaign run's funnel.

A chart is a list of *groups* (a measure, a campaign), each with its bars;
a bar is one value or a stack of values (a campaign's actions: done,
suppressed, deferred, failed). Bars in a group share one scale, groups do
not: a group is one measure, and measures of different sizes each fill the
width. The SVG is inline HTML whose colours come from the stylesheet
(``docs/stylesheets/extra.css``), so it follows the light and dark schemes.

:func:`table_chart` reads a Markdown table of performance.md into a chart;
:func:`campaign_funnel` runs the demo's campaigns on the bundled sample.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cohorts import RunReport

WIDTH = 760
LABEL = 170  # the label column, when labels are short enough to stand left of their bars
CHARACTER = 7.0  # the mean width of a character of 13px text, to leave room for a bar's value
LINE = 22
BAR = 16
SERIES = 6  # colour classes .series-0 to .series-5 in extra.css


@dataclass
class Segment:
    """One part of a bar: its size on the group's scale, the text shown, and its colour."""

    value: float
    text: str
    series: int = 0


@dataclass
class Bar:
    """A labelled bar, of one segment or a stack; ``text`` is shown after it (default: the segments' texts)."""

    label: str
    segments: list[Segment]
    text: str | None = None
    note: str = ""  # a line under the bar

    @property
    def shown(self) -> str:
        return self.text if self.text is not None else " + ".join(s.text for s in self.segments)

    @property
    def total(self) -> float:
        return sum(segment.value for segment in self.segments)


@dataclass
class Group:
    """Bars on one scale, under a title."""

    title: str
    bars: list[Bar]


@dataclass
class Chart:
    """Groups of bars, a title, a note under it (what is better), and a legend of stacked series."""

    title: str
    groups: list[Group]
    note: str = ""
    legend: list[tuple[int, str]] = field(default_factory=list)


def _text(x: float, y: float, text: str, css: str = "", anchor: str = "start") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{html.escape(text)}</text>'


def _colour(series: int) -> str:
    return f"series-{series % SERIES}"


def svg(chart: Chart) -> str:
    """The chart as one line of inline SVG in a ``<figure>``."""
    labels = [bar.label for group in chart.groups for bar in group.bars]
    beside = max((len(label) for label in labels), default=0) <= 22  # else each label goes above its bar
    left = LABEL if beside else 0
    parts: list[str] = []
    y = 0.0
    y += LINE
    parts.append(_text(0, y - 6, chart.title, "chart-title"))
    if chart.note:
        y += LINE - 4
        parts.append(_text(0, y - 6, chart.note, "chart-note"))
    if chart.legend:
        y += LINE
        x = 0.0
        for series, name in chart.legend:
            parts.append(f'<rect x="{x:.1f}" y="{y - 17:.1f}" width="12" height="12" class="{_colour(series)}"/>')
            parts.append(_text(x + 17, y - 6, name, "chart-legend"))
            x += 30 + 7.2 * len(name)
    for group in chart.groups:
        y += LINE + 6
        parts.append(_text(0, y - 6, group.title, "chart-group"))
        largest = max((bar.total for bar in group.bars), default=0.0) or 1.0
        # The widest scale on which every bar still has room for its value after it.
        span = min(
            [WIDTH - left - 40.0]
            + [(WIDTH - left - 8 - CHARACTER * len(bar.shown)) * largest / bar.total for bar in group.bars if bar.total]
        )
        for bar in group.bars:
            if not beside:
                y += LINE - 4
                parts.append(_text(0, y - 5, bar.label, "chart-label"))
            y += LINE
            if beside:
                parts.append(_text(left - 10, y - 6, bar.label, "chart-label", "end"))
            x = float(left)
            for segment in bar.segments:
                width = span * segment.value / largest
                if segment.value > 0:
                    width = max(width, 1.5)  # a value too small to see is still a mark
                    parts.append(
                        f'<rect x="{x:.1f}" y="{y - LINE + (LINE - BAR) / 2:.1f}" width="{width:.1f}" height="{BAR}"'
                        f' rx="2" class="{_colour(segment.series)}"><title>{html.escape(segment.text)}</title></rect>'
                    )
                x += width
            parts.append(_text(x + 6, y - 6, bar.shown, "chart-value"))
            if bar.note:
                y += LINE - 6
                parts.append(_text(left, y - 6, bar.note, "chart-note"))
    height = y + 8
    body = "".join(parts)
    label = html.escape(chart.title)
    return (
        f'<figure class="cohorts-chart"><svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}"'
        f' viewBox="0 0 {WIDTH} {height:.0f}" width="100%">{body}</svg></figure>'
    )


# -- benchmark tables ------------------------------------------------------------

_NUMBER = re.compile(r"(?P<number>\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?P<unit>µs|us|ms|s\b|×|x\b|MB|GB|%)?")
_SECONDS = {"µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def plain(cell: str) -> str:
    """A table cell as text: no emphasis, no code marks, no link targets."""
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return re.sub(r"[*`]", "", cell).strip()


def figure(cell: str) -> tuple[float, str, str] | None:
    """The first figure of a cell, its unit family (``time``, ``×``, or the unit) and its text; None when empty."""
    text = plain(cell)
    match = _NUMBER.search(text)
    if match is None:
        return None
    number = float(match["number"].replace(",", ""))
    unit = match["unit"] or ""
    if unit in _SECONDS:
        number, unit = number * _SECONDS[unit], "time"
    elif unit == "x":
        unit = "×"
    shown = match.group(0).strip()
    rest = text[match.end():].strip()
    if rest.startswith("(") and ")" in rest:  # "34,200 (COPY)", "889 ms (a scan)": the parenthesis says how
        shown += " " + rest[: rest.index(")") + 1]
    return number, unit, shown


def read_table(lines: Sequence[str]) -> list[list[str]]:
    """The cells of a Markdown table's lines, the header row first, without the separator row."""
    rows = []
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
            continue
        rows.append(cells)
    return rows


def table_chart(rows: list[list[str]], title: str, note: str, by: str) -> Chart:
    """A chart of a table: ``by="row"`` makes each row a group of bars, one per column (the columns' headers
    name them); ``by="column N"`` makes column N (1 is the first after the labels) one group, a bar per row."""
    header, body = rows[0], rows[1:]
    groups: list[Group] = []
    if by == "row":
        for row in body:
            bars = []
            for index, cell in enumerate(row[1:], start=1):
                found = figure(cell)
                if found is not None:
                    bars.append((plain(header[index]), found, index - 1))
            groups.append(_group(plain(row[0]), bars))
    elif (match := re.fullmatch(r"column (\d+)", by)) is not None:
        index = int(match[1])
        bars = []
        for number, row in enumerate(body):
            found = figure(row[index])
            if found is not None:
                bars.append((plain(row[0]), found, number))
        groups.append(_group(plain(header[index]), bars))
    else:
        raise ValueError(f"a chart is by row or by column N, not {by!r}")
    return Chart(title, groups, note)


#: Each backend has its colour in every chart; other bars take the colours in their order.
BACKENDS = {"sqlite": 0, "postgresql": 1, "memory": 2}


def series_of(label: str, position: int) -> int:
    """The colour of a bar: its backend's when the label names one, else its position's."""
    words = re.findall(r"[a-z]+", label.lower())
    return next((BACKENDS[word] for word in words if word in BACKENDS), position)


def _group(title: str, bars: list[tuple[str, tuple[float, str, str], int]]) -> Group:
    units = {unit for _, (_, unit, _), _ in bars}
    if len(units) > 1:
        raise ValueError(f"the bars of {title!r} mix units ({', '.join(sorted(units))}): they cannot share a scale")
    named = all(series_of(label, -1) >= 0 for label, _, _ in bars)
    return Group(
        title,
        [
            Bar(label, [Segment(value, text, series_of(label, position) if named else position)])
            for label, (value, _, text), position in bars
        ],
    )


# -- a campaign run's funnel -----------------------------------------------------

DONE, SUPPRESSED, DEFERRED, FAILED = 0, 3, 4, 5


def funnel_chart(report: RunReport, title: str, note: str) -> Chart:
    """A run report's funnel per eligible campaign: audience, customers enrolled, then their actions by outcome.

    The actions' bar is as long as the audience's and split in proportion to the outcomes (a customer has
    one row per action, so action counts are on another scale than customers).
    """
    groups = []
    for campaign in report.campaigns:
        if not campaign.eligible:
            continue
        actions = campaign.done + campaign.failed + campaign.suppressed + campaign.deferred
        # Actions are not customers: their bar is as long as the audience's, split by outcome.
        unit = campaign.audience / actions if actions else 0.0
        outcomes = [
            Segment(campaign.done * unit, f"{campaign.done:,} done", DONE),
            Segment(campaign.suppressed * unit, f"{campaign.suppressed:,} suppressed", SUPPRESSED),
            Segment(campaign.deferred * unit, f"{campaign.deferred:,} deferred", DEFERRED),
            Segment(campaign.failed * unit, f"{campaign.failed:,} failed", FAILED),
        ]
        shown = [segment.text for segment in outcomes if segment.value]
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(campaign.suppressed_reasons.items()))
        bars = [
            Bar("audience", [Segment(campaign.audience, f"{campaign.audience:,} customers", 1)]),
            Bar("enrolled", [Segment(campaign.added, f"{campaign.added:,} customers", 2)]),
            Bar("actions", outcomes, f"{actions:,} actions: " + ", ".join(shown), reasons and f"suppressed: {reasons}"),
        ]
        groups.append(Group(campaign.name, bars))
    legend = [(DONE, "done"), (SUPPRESSED, "suppressed"), (DEFERRED, "deferred"), (FAILED, "failed")]
    return Chart(title, groups, note, legend)


def campaign_funnel() -> Chart:
    """The first campaign run of ``cohorts demo`` (in memory, on the bundled sample of 3,000 customers)."""
    from cohorts import Groups, MemoryRepository, demo, import_file, run_campaigns, standard_handlers
    from cohorts.sample import SAMPLE_NOW, SAMPLE_SIZE, sample_customers, sample_schema

    repository = MemoryRepository(sample_customers(SAMPLE_SIZE), schema=sample_schema())
    groups = Groups(repository)
    for name, rule, description in demo.DEMO_GROUPS:
        groups.create(name, rule, description)
    import_file(demo.SAMPLE_IMPORT, repository, group="Spring clinic", region="CA")
    handlers = standard_handlers(repository, demo.RecordingSender())
    report = run_campaigns(demo.demo_campaigns(SAMPLE_NOW), repository, groups, handlers, SAMPLE_NOW)
    return funnel_chart(
        report,
        "The demo's campaign run, as the docs build ran it",
        f"{SAMPLE_SIZE:,} sample customers, run at {SAMPLE_NOW:%Y-%m-%d %H:%M} UTC; "
        "the unpublished campaign is not eligible and has no funnel",
    )


def group_sizes(names: Sequence[str] = ("Escape service", "Escape mailing"), weeks: int = 4, steps: int = 6) -> Chart:
    """The size of some of the demo's groups every ``weeks`` weeks, from their membership history.

    The groups are read at each moment (each read catches up on the memberships time made due, as a cron
    or a web app would), and ``groups.sizes`` replays the history those reads recorded.
    """
    import datetime as dt

    from cohorts import Groups, MemoryRepository, demo
    from cohorts.sample import SAMPLE_NOW, SAMPLE_SIZE, sample_customers, sample_schema

    groups = Groups(MemoryRepository(sample_customers(SAMPLE_SIZE), schema=sample_schema()))
    for name, rule, description in demo.DEMO_GROUPS:
        groups.create(name, rule, description)
    every = dt.timedelta(weeks=weeks)
    moments = [SAMPLE_NOW + every * step for step in range(steps + 1)]
    for moment in moments:
        groups.count(names[0], moment)
    chart_groups = []
    for series, name in enumerate(names, start=1):
        rows = groups.sizes(name, moments[0], moments[-1] + dt.timedelta(seconds=1), every)
        bars = [Bar(f"{row['at']:%Y-%m-%d}", [Segment(row["members"], f"{row['members']:,}", series)]) for row in rows]
        chart_groups.append(Group(name, bars))
    return Chart(
        "Members of two demo groups over time, from the membership history",
        chart_groups,
        f"{SAMPLE_SIZE:,} sample customers, read every {weeks} weeks from {SAMPLE_NOW:%Y-%m-%d}: repair orders"
        " pass 730 days and their owners leave, with no write and no refresh",
    )
