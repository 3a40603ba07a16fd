"""The campaign ledger: who each campaign enrolled, and the state of each (campaign, customer, action).

The ledger lives in the repository, so the cron job's memory is the data's:

- ``MemoryLedger`` keeps it in a :class:`cohorts.MemoryRepository` extension
  (snapshotted and restored by the repository's ``transaction()``).
- ``SQLLedger`` keeps it in three tables beside a :class:`cohorts.SQLRepository`'s
  own (SQLite or PostgreSQL): ``cohorts_campaign_audience`` (campaign,
  customer: the audience ledger), ``cohorts_campaign_actions`` (one row per
  campaign, customer and action, primary key on the three: the exactly-once
  key) and ``cohorts_campaign_keys`` (the action keys each campaign's rows
  were created for).

On PostgreSQL an action row is claimed in a transaction that stays open while
its handler runs and that records the outcome before the next action starts:
the claim is a row lock taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a
second runner skips the row). A process that dies holding a claim loses its
transaction, so the row is due again for the next run.

SQLite has one write lock for the whole database, which no runner may hold
while a handler runs (a handler that hangs would stop every writer). There a
claim marks the row ``running`` with the claimant's name and commits at once;
the handler's repository writes and the outcome then share one transaction,
begun by the first of them, so a handler that only sends holds no lock. A row
whose claimant died is due again at once (see :mod:`cohorts.sql.claimants`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from .model import CustomerId

__all__ = [
    "ActionSpec",
    "Claim",
    "Ledger",
    "LedgerEntry",
    "LedgerProvider",
    "MemoryLedger",
    "RunnerLocks",
    "held",
    "ledger_for",
]

PENDING = "pending"
DONE = "done"
FAILED = "failed"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"
SKIPPED = "skipped"
#: SQLite: claimed by the runner named in ``claimed_by``, whose handler is running (due again if it died).
RUNNING = "running"
#: The states in which an action is run again on the next run (failed ones within the retry limit too).
AGAIN = (PENDING, DEFERRED, SUPPRESSED)


@attrs.frozen
class ActionSpec:
    """An action's ledger key (``email-1``) and kind (``email``)."""

    key: str
    kind: str


@attrs.frozen
class LedgerEntry:
    """One (campaign, customer, action) row of the ledger."""

    campaign: str
    customer_id: CustomerId
    action: str
    kind: str
    state: str
    attempts: int
    reason: str | None
    error: str | None
    updated_at: str | None
    done_at: str | None


def is_due(state: str, attempts: int, retries: int) -> bool:
    """True when a row in ``state`` after ``attempts`` failed tries is run again: failed rows ``retries`` times."""
    return state in AGAIN or (state == FAILED and attempts <= retries)


class Claim(Protocol):
    """A held claim on one action row; record exactly one outcome before it is released."""

    @property
    def attempts(self) -> int:
        """How many times the handler ran for this row before (failed tries)."""
        ...

    def done(self, now: dt.datetime, channel: str | None = None) -> None:
        """The handler succeeded; ``channel`` counts it as a marketing message for frequency caps."""

    def fail(self, error: str, now: dt.datetime) -> None:
        """The handler raised ``error``."""

    def suppress(self, reason: str, now: dt.datetime) -> None:
        """Not run this time (unsubscribed, capped): reconsidered next run."""

    def defer(self, reason: str, now: dt.datetime) -> None:
        """Not run this time (quiet hours): run on a later run."""

    def skip(self, reason: str, now: dt.datetime) -> None:
        """Never to run (the customer is gone)."""

    def lock_customer(self) -> None:
        """Serialise frequency-cap checks of this customer across runners (until the claim ends)."""


class Ledger(Protocol):
    """Where campaigns keep their audience and the state of each action."""

    def enroll(self, campaign: str, ids: Collection[CustomerId], specs: Sequence[ActionSpec], now: dt.datetime) -> int:
        """Add the customers not yet enrolled, with a pending row per action; return how many were new."""
        ...

    def enrolled(self, campaign: str) -> set[CustomerId]:
        """Every customer the campaign ever enrolled."""
        ...

    def due(self, campaign: str, keys: Sequence[str], retries: int) -> list[tuple[CustomerId, str]]:
        """The (customer, action key) rows still to run."""
        ...

    def claim(
        self, campaign: str, customer_id: CustomerId, key: str, retries: int
    ) -> contextlib.AbstractContextManager[Claim | None]:
        """Hold one due row for the duration of the block, or None when it is taken or not due."""
        ...

    def sent(self, customer_id: CustomerId, channel: str, since: dt.datetime) -> int:
        """How many marketing messages on ``channel`` went to the customer since ``since``, in every campaign."""
        ...

    def entries(self, campaign: str | None = None) -> list[LedgerEntry]:
        """Every row of the ledger (of one campaign)."""
        ...


@runtime_checkable
class RunnerLocks(Protocol):
    """A repository with a lock that one campaign run at a time holds (``run_campaigns(..., exclusive=True)``).

    The lock is the database's, so runs in other processes see it; it is released
    when the block ends or the process holding it dies.
    """

    def runner_lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[bool]:
        """Hold the runner lock for the block: True when held; False at once when another run holds it,
        unless ``wait``, which waits for it."""
        ...


@contextlib.contextmanager
def held(lock: threading.Lock, wait: bool) -> Iterator[bool]:
    """Hold a process-local ``lock`` for the block (True), or yield False when it is taken and not ``wait``."""
    got = lock.acquire(blocking=wait)
    try:
        yield got
    finally:
        if got:
            lock.release()


@functools.lru_cache(maxsize=16)  # a run stamps every row with the same instant
def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


# -- in memory -----------------------------------------------------------------


@attrs.frozen
class _Row:
    kind: str
    state: str = PENDING
    attempts: int = 0
    reason: str | None = None
    error: str | None = None
    updated_at: str | None = None
    done_at: str | None = None


_Key = tuple[str, CustomerId, str]


class MemoryLedgerState:
    """The ledger of a memory repository (one per repository, held as an extension).

    Rows are immutable and replaced on change, so a snapshot (taken by every
    ``repository.transaction()``) is a shallow copy of the containers.
    """

    def __init__(self) -> None:
        self.audience: dict[str, set[CustomerId]] = {}
        self.keys: dict[str, dict[str, str]] = {}
        self.rows: dict[_Key, _Row] = {}
        self.again: dict[str, set[tuple[CustomerId, str]]] = {}
        self.sends: dict[tuple[CustomerId, str], tuple[dt.datetime, ...]] = {}
        self.running: set[_Key] = set()
        self.lock = threading.RLock()

    def _copy(self) -> tuple[Any, ...]:
        return (
            {c: set(ids) for c, ids in self.audience.items()},
            {c: dict(keys) for c, keys in self.keys.items()},
            dict(self.rows),
            {c: set(due) for c, due in self.again.items()},
            dict(self.sends),
        )

    def snapshot(self) -> Any:
        """A copy of the state, for the repository's transaction()."""
        with self.lock:
            return self._copy()

    def restore(self, snapshot: Any) -> None:
        snap = snapshot
        """Put back a snapshot."""
        with self.lock:
            self.audience, self.keys, self.rows, self.again, self.sends = snap
            self.audience, self.keys, self.rows, self.again, self.sends = self._copy()


class _MemoryClaim:
    def __init__(self, state: MemoryLedgerState, key: _Key, row: _Row) -> None:
        self._state = state
        self._key = key
        self._row = row

    @property
    def attempts(self) -> int:
        return self._row.attempts

    def _set(self, row: _Row) -> None:
        campaign, customer_id, key = self._key
        with self._state.lock:
            self._state.rows[self._key] = self._row = row
            again = self._state.again.setdefault(campaign, set())
            if row.state in (DONE, SKIPPED):
                again.discard((customer_id, key))
            else:
                again.add((customer_id, key))

    def done(self, now: dt.datetime, channel: str | None = None) -> None:
        stamp = iso(now)
        self._set(attrs.evolve(self._row, state=DONE, reason=None, updated_at=stamp, done_at=stamp))
        if channel is not None:
            with self._state.lock:
                sends = self._state.sends
                sends[self._key[1], channel] = (*sends.get((self._key[1], channel), ()), now)

    def fail(self, error: str, now: dt.datetime) -> None:
        row = self._row
        self._set(attrs.evolve(row, state=FAILED, attempts=row.attempts + 1, reason=None, error=error,
                               updated_at=iso(now)))

    def suppress(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=SUPPRESSED, reason=reason, updated_at=iso(now)))

    def defer(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=DEFERRED, reason=reason, updated_at=iso(now)))

    def skip(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=SKIPPED, reason=reason, updated_at=iso(now)))

    def lock_customer(self) -> None:
        return None


class MemoryLedger:
    """The ledger kept in a memory repository's extension state (see the module docstring).

    Example:
        >>> import datetime as dt
        >>> ledger = MemoryLedger(MemoryLedgerState())
        >>> now = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
        >>> ledger.enroll("Spring", {1, 2}, [ActionSpec("email-1", "email")], now)
        2
        >>> ledger.enroll("Spring", {1, 2, 3}, [ActionSpec("email-1", "email")], now)
        1
    """

    def __init__(self, state: MemoryLedgerState) -> None:
        self.state = state

    def enroll(self, campaign: str, ids: Collection[CustomerId], specs: Sequence[ActionSpec], now: dt.datetime) -> int:
        state = self.state
        with state.lock:
            enrolled = state.audience.setdefault(campaign, set())
            known = state.keys.setdefault(campaign, {})
            again = state.again.setdefault(campaign, set())
            rows = state.rows
            for spec in specs:
                if spec.key not in known:  # a new action: every enrolled customer gets it
                    for customer_id in enrolled:
                        if (campaign, customer_id, spec.key) not in rows:
                            rows[campaign, customer_id, spec.key] = _Row(spec.kind)
                            again.add((customer_id, spec.key))
                    known[spec.key] = spec.kind
            new = [i for i in ids if i not in enrolled]
            for customer_id in new:
                for spec in specs:
                    rows[campaign, customer_id, spec.key] = _Row(spec.kind)
                    again.add((customer_id, spec.key))
            enrolled.update(new)
            return len(new)

    def enrolled(self, campaign: str) -> set[CustomerId]:
        with self.state.lock:
            return set(self.state.audience.get(campaign, ()))

    def due(self, campaign: str, keys: Sequence[str], retries: int) -> list[tuple[CustomerId, str]]:
        wanted = set(keys)
        rows = self.state.rows
        with self.state.lock:
            due = []
            for customer_id, key in self.state.again.get(campaign, ()):
                row = rows[campaign, customer_id, key]
                if key in wanted and is_due(row.state, row.attempts, retries):
                    due.append((customer_id, key))
            return due

    @contextlib.contextmanager
    def claim(self, campaign: str, customer_id: CustomerId, key: str, retries: int) -> Iterator[_MemoryClaim | None]:
        state = self.state
        full = (campaign, customer_id, key)
        with state.lock:
            row = state.rows.get(full)
            free = row is not None and full not in state.running and is_due(row.state, row.attempts, retries)
            if free:
                state.running.add(full)
        if not free or row is None:
            yield None
            return
        try:
            yield _MemoryClaim(state, full, row)
        finally:
            with state.lock:
                state.running.discard(full)

    def sent(self, customer_id: CustomerId, channel: str, since: dt.datetime) -> int:
        with self.state.lock:
            return sum(1 for at in self.state.sends.get((customer_id, channel), ()) if at > since)

    def entries(self, campaign: str | None = None) -> list[LedgerEntry]:
        with self.state.lock:
            return [
                LedgerEntry(c, i, k, r.kind, r.state, r.attempts, r.reason, r.error, r.updated_at, r.done_at)
                for (c, i, k), r in self.state.rows.items()
                if campaign is None or c == campaign
            ]


# -- SQL -----------------------------------------------------------------------

Connect = Callable[[], contextlib.AbstractContextManager[Any]]


# -- the ledger of a repository ------------------------------------------------------


@runtime_checkable
class LedgerProvider(Protocol):
    """A repository that keeps a campaign ledger (every :class:`cohorts.Repository` does)."""

    def ledger(self) -> Ledger: ...


def ledger_for(repository: LedgerProvider) -> Ledger:
    """The ledger kept in ``repository``: SQL tables for a SQL repository, an extension for a memory one.

    Example:
        >>> from cohorts.repository import MemoryRepository
        >>> type(ledger_for(MemoryRepository())).__name__
        'MemoryLedger'
    """
    if not isinstance(repository, LedgerProvider):
        raise TypeError(
            f"{type(repository).__name__} keeps no campaign ledger: use a cohorts.Repository"
            " (MemoryRepository, SQLRepository) or pass ledger="
        )
    return repository.ledger()
