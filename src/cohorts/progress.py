"""Progress of long work (imports, refreshes, campaign runs), and a terminal bar that shows it.

Long operations take an optional ``progress`` callback and call it now and
then with a :class:`Progress`: an ``int`` (how many items are done) that also
says what is being counted and, when known, the share done. The ``cohorts``
command shows it with :class:`TerminalBar` when standard error is a terminal,
and stays quiet otherwise.

Example:
    >>> p = Progress(250, 0.25, what="customers", stage="campaign Spring")
    >>> int(p), p.fraction, str(p)
    (250, 0.25, 'campaign Spring: 250 customers (25%)')
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeAlias

__all__ = ["Progress", "ProgressCallback", "TerminalBar"]


class Progress(int):
    """How many items are done, passed to ``progress`` callbacks.

    It is an ``int``; ``fraction`` tells how much is done (0 to 1, or None when
    unknown), ``what`` names the items ("rows", "customers", "groups"),
    ``stage`` the part of the work ("refresh: rules"), and ``rejected`` how many
    items were rejected so far (imports).
    """

    fraction: float | None
    rejected: int
    what: str
    stage: str

    def __new__(
        cls, done: int, fraction: float | None = None, rejected: int = 0, *, what: str = "rows", stage: str = ""
    ) -> Progress:
        value = super().__new__(cls, done)
        value.fraction = fraction
        value.rejected = rejected
        value.what = what
        value.stage = stage
        return value

    def __str__(self) -> str:
        text = f"{self.stage}: " if self.stage else ""
        text += f"{int(self):,} {self.what}"
        if self.fraction is not None:
            text += f" ({self.fraction:.0%})"
        if self.rejected:
            text += f", {self.rejected:,} rejected"
        return text

    def __repr__(self) -> str:
        return (
            f"Progress({int(self)}, fraction={self.fraction!r}, rejected={self.rejected}, "
            f"what={self.what!r}, stage={self.stage!r})"
        )


ProgressCallback: TypeAlias = Callable[[Progress], object]
"""What ``progress=`` arguments take."""


_WINDOW = 5.0  # seconds of recent progress the rate and the time left are read from


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class TerminalBar:
    """A one-line progress bar redrawn in place (at most ten times a second).

    Use :meth:`for_terminal` to get one only when the stream is a terminal.
    The rate and the time left (``ETA``) are read from the last few seconds of
    progress, so they follow the work's current pace rather than its start's;
    ``clock`` is the time source (``time.monotonic``).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = TerminalBar(out)
        >>> bar(Progress(3, 0.5, what="groups", stage="refresh"))
        >>> bar.done()
        >>> "[###############...............]  50% refresh: 3 groups" in out.getvalue()
        True
    """

    def __init__(self, stream: TextIO, width: int = 30, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.width = width
        self.clock = clock
        self.started = clock()
        self.shown = -1.0
        self.stage = ""
        self.drawn = False
        self.samples: collections.deque[tuple[float, int, float | None]] = collections.deque()

    @classmethod
    def for_terminal(cls, stream: TextIO | None = None, enabled: bool = True) -> TerminalBar | None:
        """A bar on ``stream`` (standard error by default) when it is a terminal and ``enabled``, else None."""
        target = stream if stream is not None else sys.stderr
        isatty = getattr(target, "isatty", None)
        return cls(target) if enabled and isatty is not None and isatty() else None

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        if progress.stage != self.stage:
            if self.drawn:
                self.stream.write("\n")
            self.stage, self.started, self.shown = progress.stage, now, -1.0
            self.samples.clear()
            self.samples.append((now, 0, 0.0 if progress.fraction is not None else None))
        samples = self.samples
        samples.append((now, int(progress), progress.fraction))
        while len(samples) > 2 and now - samples[1][0] >= _WINDOW:
            samples.popleft()
        if now - self.shown < 0.1 and progress.fraction != 1.0:
            return
        self.shown = now
        fraction = progress.fraction
        bar = ""
        if fraction is not None:
            filled = min(self.width, max(0, int(fraction * self.width)))
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} "
        label = f"{progress.stage}: " if progress.stage else ""
        first_time, first_count, first_fraction = samples[0]
        span = now - first_time
        rate = (int(progress) - first_count) / span if span > 0 else 0.0
        left = ""
        if fraction is not None and first_fraction is not None and fraction < 1.0 and fraction > first_fraction:
            left = f", ETA {_duration((1.0 - fraction) * span / (fraction - first_fraction))}"
        rejected = f", {progress.rejected:,} rejected" if progress.rejected else ""
        self.stream.write(f"\r{bar}{label}{int(progress):,} {progress.what} ({rate:,.0f}/s{left}){rejected}   ")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        """End the bar's line."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
        self.drawn = False
