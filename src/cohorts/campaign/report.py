"""What a cron run did: a :class:`CampaignReport` per campaign in a :class:`RunReport`, as text, JSON and HTML."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import attrs

from .._html import html_table, html_text
from ..model import CustomerId

__all__ = ["MAX_FAILURES", "CampaignReport", "Failure", "RunReport"]

#: How many failures a CampaignReport lists (``failed`` counts them all).
MAX_FAILURES = 100


@attrs.frozen
class Failure:
    """One action that failed for one customer in this run."""

    customer_id: CustomerId
    action: str
    attempt: int
    error: str
    final: bool


@attrs.frozen
class CampaignReport:
    """What one campaign did in one run."""

    name: str
    eligible: bool
    reasons: tuple[str, ...] = ()
    audience: int = 0
    added: int = 0
    done: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    busy: int = 0
    seconds: float = 0.0
    suppressed_reasons: Mapping[str, int] = attrs.field(factory=dict)
    failures: tuple[Failure, ...] = ()
    error: str | None = None
    stopped: int = 0
    left: int = 0

    @property
    def ok(self) -> bool:
        """True when no action failed and the audience could be evaluated."""
        return self.failed == 0 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "name": self.name,
            "eligible": self.eligible,
            "reasons": list(self.reasons),
            "audience": self.audience,
            "added": self.added,
            "done": self.done,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "deferred": self.deferred,
            "busy": self.busy,
            "seconds": round(self.seconds, 6),
            "suppressed_reasons": dict(self.suppressed_reasons),
            "failures": [
                attrs.asdict(failure) for failure in self.failures
            ],
            "error": self.error,
            "stopped": self.stopped,
            "left": self.left,
        }


_COLUMNS = ("campaign", "eligible", "audience", "added", "done", "failed", "suppressed", "deferred", "seconds")


@attrs.frozen
class RunReport:
    """What a cron run did, per campaign: printable as a table and as JSON.

    ``str`` gives the table and the :meth:`problems` under it; the CLI prints
    :meth:`rows` as a table fitted to the terminal instead.

    Example:
        >>> spring = CampaignReport("Spring", False, ("not published",))
        >>> print(RunReport(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), (spring,)))
        campaign  eligible                audience  added  done  failed  suppressed  deferred  seconds
        Spring    no: not published              0      0     0       0           0         0    0.000
    """

    now: dt.datetime
    campaigns: tuple[CampaignReport, ...]
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Actions that failed in this run, over every campaign."""
        return sum(c.failed for c in self.campaigns)

    @property
    def ok(self) -> bool:
        """True when no action failed and every eligible campaign's audience could be evaluated."""
        return all(c.ok for c in self.campaigns)

    @property
    def left(self) -> int:
        """Due actions this run left for the next one, its budget (``max_actions``, ``max_seconds``) spent."""
        return sum(c.left for c in self.campaigns)

    def __getitem__(self, name: str) -> CampaignReport:
        for report in self.campaigns:
            if report.name == name:
                return report
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "now": self.now.isoformat(),
            "seconds": round(self.seconds, 6),
            "failed": self.failed,
            "left": self.left,
            "ok": self.ok,
            "campaigns": [c.to_dict() for c in self.campaigns],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text: the same text as ``str``."""
        printer.text(str(self))

    def rows(self) -> list[dict[str, Any]]:
        """The table's rows, one per campaign: for a table that fits a terminal (the CLI's) or for HTML.

        Example:
            >>> spring = CampaignReport("Spring", False, ("not published",), seconds=0.0123)
            >>> RunReport(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), (spring,)).rows()
            [{'campaign': 'Spring', 'eligible': 'no: not published', 'audience': 0, 'added': 0, 'done': 0,
              'failed': 0, 'suppressed': 0, 'deferred': 0, 'seconds': '0.012'}]
        """
        return [
            {
                "campaign": c.name,
                "eligible": "yes" if c.eligible else "no: " + "; ".join(c.reasons),
                "audience": c.audience,
                "added": c.added,
                "done": c.done,
                "failed": c.failed,
                "suppressed": c.suppressed,
                "deferred": c.deferred,
                "seconds": f"{c.seconds:.3f}",
            }
            for c in self.campaigns
        ]

    def problems(self) -> list[str]:
        """The lines under the table: each audience not evaluated, each campaign's first 10 failures, the
        actions stopped because their customer left the audience, and those left for the next run."""
        lines = []
        for c in self.campaigns:
            if c.error is not None:
                lines.append(f"! {c.name}: {c.error}")
            for f in c.failures[:10]:
                final = "; no retry left" if f.final else ""
                who = f"{f.action} failed for {f.customer_id!r} (attempt {f.attempt}{final})"
                lines.append(f"! {c.name}: {who}: {f.error}")
            if c.failed > 10:
                lines.append(f"! {c.name}: ... and {c.failed - 10} more failures (see to_json())")
            if c.stopped:
                lines.append(f"- {c.name}: {c.stopped} action(s) stopped: the customer left the audience")
            if c.left:
                lines.append(f"- {c.name}: {c.left} due action(s) left for the next run (budget spent)")
        return lines

    def _repr_html_(self) -> str:
        table = html_table(self.rows(), caption=f"campaign run at {self.now.isoformat()}")
        problems = self.problems()
        return table + (html_text("\n".join(problems)) if problems else "")

    def __str__(self) -> str:
        rows = [list(_COLUMNS), *([str(row[column]) for column in _COLUMNS] for row in self.rows())]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(widths[i + 2]) for i, cell in enumerate(row[2:])]
            lines.append("  ".join(cells).rstrip())
        return "\n".join([*lines, *self.problems()])
