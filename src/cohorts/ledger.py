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

An action row is claimed in a transaction that stays open while its handler
runs and that records the outcome before the next action starts. On
PostgreSQL the claim is a row lock taken with ``SELECT ... FOR UPDATE SKIP
LOCKED`` (a second runner skips the row); on SQLite it is the database write
lock taken by a conditional ``UPDATE``. A process that dies holding a claim
loses its transaction, so the row is due again for the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

import attrs

from .model import CustomerId

__all__ = ["ActionSpec", "Claim", "Ledger", "LedgerEntry", "MemoryLedger", "SQLLedger", "ledger_for"]

PENDING = "pending"
DONE = "done"
FAILED = "failed"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"
SKIPPED = "skipped"
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


@functools.lru_cache(maxsize=16)  # a run stamps every row with the same instant
def _iso(moment: dt.datetime) -> str:
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

    def restore(self, snap: Any) -> None:
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
        stamp = _iso(now)
        self._set(attrs.evolve(self._row, state=DONE, reason=None, updated_at=stamp, done_at=stamp))
        if channel is not None:
            with self._state.lock:
                sends = self._state.sends
                sends[self._key[1], channel] = (*sends.get((self._key[1], channel), ()), now)

    def fail(self, error: str, now: dt.datetime) -> None:
        row = self._row
        self._set(attrs.evolve(row, state=FAILED, attempts=row.attempts + 1, reason=None, error=error,
                               updated_at=_iso(now)))

    def suppress(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=SUPPRESSED, reason=reason, updated_at=_iso(now)))

    def defer(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=DEFERRED, reason=reason, updated_at=_iso(now)))

    def skip(self, reason: str, now: dt.datetime) -> None:
        self._set(attrs.evolve(self._row, state=SKIPPED, reason=reason, updated_at=_iso(now)))

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


def _encode(customer_id: CustomerId) -> str:
    if isinstance(customer_id, bool) or not isinstance(customer_id, int | str):
        raise TypeError(f"a customer id is text or an integer, not {customer_id!r}")
    return json.dumps(customer_id, ensure_ascii=False)


def _decode(text: str) -> CustomerId:
    value = json.loads(text)
    if not isinstance(value, int | str):
        raise ValueError(f"ledger row with a bad customer id {text!r}")
    return value


_CHUNK = 20_000
_DDL_LOCK = 7302017  # the advisory lock taken while creating the ledger tables on PostgreSQL


class SQLLedger:
    """The ledger in SQL tables beside the repository's (SQLite or PostgreSQL; see the module docstring).

    ``connect`` opens a transaction and yields its SQLAlchemy Connection,
    committing on a normal exit and rolling back on an exception; by default
    ``engine.begin``. On a :class:`cohorts.SQLRepository`, :func:`ledger_for`
    passes the repository's own transaction, so handlers' repository writes
    commit with the ledger row that records them.
    """

    def __init__(self, engine: Any, connect: Connect | None = None) -> None:
        import sqlalchemy as sa

        self.engine = engine
        self._connect: Connect = connect if connect is not None else engine.begin
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the campaign ledger supports SQLite and PostgreSQL, not {self.dialect}")
        self._sa = sa
        meta = sa.MetaData()
        self.audience = sa.Table(
            "cohorts_campaign_audience", meta,
            sa.Column("campaign", sa.String(200), primary_key=True),
            sa.Column("customer", sa.String(200), primary_key=True),
            sa.Column("added_at", sa.String(40), nullable=False),
        )
        self.actions = sa.Table(
            "cohorts_campaign_actions", meta,
            sa.Column("campaign", sa.String(200), primary_key=True),
            sa.Column("customer", sa.String(200), primary_key=True),
            sa.Column("action", sa.String(200), primary_key=True),
            sa.Column("kind", sa.String(100), nullable=False),
            sa.Column("state", sa.String(20), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("error", sa.Text),
            sa.Column("updated_at", sa.String(40)),
            sa.Column("done_at", sa.String(40)),
            sa.Index("ix_cohorts_campaign_actions_due", "campaign", "state"),
            sa.Index("ix_cohorts_campaign_actions_sent", "customer", "kind", "done_at"),
        )
        self.keys = sa.Table(
            "cohorts_campaign_keys", meta,
            sa.Column("campaign", sa.String(200), primary_key=True),
            sa.Column("actions", sa.Text, nullable=False),
        )
        self.metadata = meta
        act = self.actions
        key = (act.c.campaign == sa.bindparam("b_campaign"), act.c.customer == sa.bindparam("b_customer"),
               act.c.action == sa.bindparam("b_action"))
        retry = sa.and_(act.c.state == FAILED, act.c.attempts <= sa.bindparam("b_retries"))
        due = sa.or_(act.c.state.in_(AGAIN), retry)
        columns = (act.c.state, act.c.attempts, act.c.error, act.c.done_at)
        self._claim_statement: Any
        if self.dialect == "postgresql":  # a row lock; another runner skips the row instead of waiting
            self._claim_statement = sa.select(*columns).where(*key, due).with_for_update(skip_locked=True)
        else:  # the first write takes SQLite's database lock, held until the outcome commits
            self._claim_statement = (
                sa.update(act).where(*key, due).values(attempts=act.c.attempts).returning(*columns)
            )
        self._outcome_statement = sa.update(act).where(*key).values(
            state=sa.bindparam("b_state"), attempts=sa.bindparam("b_attempts"), reason=sa.bindparam("b_reason"),
            error=sa.bindparam("b_error"), updated_at=sa.bindparam("b_updated_at"), done_at=sa.bindparam("b_done_at"),
        )
        self._create_tables()

    def _create_tables(self) -> None:
        sa = self._sa
        with self.engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
        if {t.name for t in self.metadata.sorted_tables} <= present:
            return
        for attempt in itertools.count(1):
            try:
                with self.engine.begin() as conn:
                    if self.dialect == "postgresql":  # runners starting together must not create the tables twice
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK)))
                    self.metadata.create_all(conn)
                return
            except sa.exc.OperationalError as error:
                # SQLite refuses a read transaction's upgrade to a write while another runner writes
                # ("database is locked", without waiting): try again shortly.
                if self.dialect != "sqlite" or "locked" not in str(error) or attempt >= 100:
                    raise
                time.sleep(0.05)

    def _insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def enroll(self, campaign: str, ids: Collection[CustomerId], specs: Sequence[ActionSpec], now: dt.datetime) -> int:
        sa = self._sa
        aud, act = self.audience, self.actions
        stamp = _iso(now)
        with self._connect() as conn:
            # Write first: on SQLite this takes the database lock; on PostgreSQL the row lock below makes
            # concurrent runners enroll one campaign one after the other, so "added" counts are exact.
            conn.execute(self._insert(self.keys).on_conflict_do_nothing(), {"campaign": campaign, "actions": "{}"})
            query = sa.select(self.keys.c.actions).where(self.keys.c.campaign == campaign)
            if self.dialect == "postgresql":
                query = query.with_for_update()
            stored = conn.execute(query).scalar_one()
            known: dict[str, str] = json.loads(stored)
            for spec in specs:
                if spec.key in known:
                    continue
                rows = sa.select(
                    sa.literal(campaign), aud.c.customer, sa.literal(spec.key), sa.literal(spec.kind),
                    sa.literal(PENDING), sa.literal(0), sa.literal(stamp),
                ).where(aud.c.campaign == campaign)
                columns = ["campaign", "customer", "action", "kind", "state", "attempts", "updated_at"]
                conn.execute(self._insert(act).from_select(columns, rows).on_conflict_do_nothing())
                known[spec.key] = spec.kind
            if json.loads(stored) != known:
                conn.execute(
                    sa.update(self.keys).where(self.keys.c.campaign == campaign).values(actions=json.dumps(known))
                )
            existing = set(conn.execute(sa.select(aud.c.customer).where(aud.c.campaign == campaign)).scalars())
            new = sorted({_encode(i) for i in ids} - existing)
            added = 0
            for start in range(0, len(new), _CHUNK):
                chunk = new[start : start + _CHUNK]
                inserted = conn.execute(
                    self._insert(aud).on_conflict_do_nothing().returning(aud.c.customer),
                    [{"campaign": campaign, "customer": c, "added_at": stamp} for c in chunk],
                ).scalars().all()
                added += len(inserted)
                if specs and inserted:
                    conn.execute(
                        self._insert(act).on_conflict_do_nothing(),
                        [
                            {"campaign": campaign, "customer": c, "action": s.key, "kind": s.kind, "state": PENDING,
                             "attempts": 0, "updated_at": stamp}
                            for c in sorted(inserted)
                            for s in specs
                        ],
                    )
            return added

    def enrolled(self, campaign: str) -> set[CustomerId]:
        sa = self._sa
        with self._connect() as conn:
            query = sa.select(self.audience.c.customer).where(self.audience.c.campaign == campaign)
            return {_decode(c) for c in conn.execute(query).scalars()}

    def _due_clause(self, retries: int) -> Any:
        sa = self._sa
        state, attempts = self.actions.c.state, self.actions.c.attempts
        return sa.or_(state.in_(AGAIN), sa.and_(state == FAILED, attempts <= retries))

    def due(self, campaign: str, keys: Sequence[str], retries: int) -> list[tuple[CustomerId, str]]:
        sa = self._sa
        act = self.actions
        if not keys:
            return []
        query = sa.select(act.c.customer, act.c.action).where(
            act.c.campaign == campaign, act.c.action.in_(list(keys)), self._due_clause(retries)
        )
        with self._connect() as conn:
            return [(_decode(c), a) for c, a in conn.execute(query)]

    @contextlib.contextmanager
    def claim(self, campaign: str, customer_id: CustomerId, key: str, retries: int) -> Iterator[_SQLClaim | None]:
        params = {"b_campaign": campaign, "b_customer": _encode(customer_id), "b_action": key, "b_retries": retries}
        with self._connect() as conn:
            row = conn.execute(self._claim_statement, params).first()
            if row is None:  # locked by another runner, done, or out of retries
                yield None
                return
            yield _SQLClaim(self, conn, params, row.attempts, row.error, row.done_at, customer_id)

    def sent(self, customer_id: CustomerId, channel: str, since: dt.datetime) -> int:
        sa = self._sa
        act = self.actions
        query = sa.select(sa.func.count()).where(
            act.c.customer == _encode(customer_id),
            act.c.kind == channel,
            act.c.state == DONE,
            act.c.done_at > _iso(since),
        )
        with self._connect() as conn:
            return int(conn.execute(query).scalar_one())

    def entries(self, campaign: str | None = None) -> list[LedgerEntry]:
        sa = self._sa
        act = self.actions
        query = sa.select(act).order_by(act.c.campaign, act.c.customer, act.c.action)
        if campaign is not None:
            query = query.where(act.c.campaign == campaign)
        with self._connect() as conn:
            return [
                LedgerEntry(r.campaign, _decode(r.customer), r.action, r.kind, r.state, r.attempts, r.reason, r.error,
                            r.updated_at, r.done_at)
                for r in conn.execute(query)
            ]


class _SQLClaim:
    def __init__(
        self,
        ledger: SQLLedger,
        conn: Any,
        key: dict[str, Any],
        attempts: int,
        error: str | None,
        done_at: str | None,
        customer_id: CustomerId,
    ) -> None:
        self._ledger = ledger
        self._conn = conn
        self._key = key
        self._attempts = attempts
        self._error = error
        self._done_at = done_at
        self._customer = customer_id

    @property
    def attempts(self) -> int:
        return self._attempts

    def _set(self, state: str, now: dt.datetime, reason: str | None = None, *, done: bool = False,
             error: str | None = None) -> None:
        failed = error is not None
        self._conn.execute(self._ledger._outcome_statement, {
            **self._key,
            "b_state": state,
            "b_attempts": self._attempts + 1 if failed else self._attempts,
            "b_reason": reason,
            "b_error": error if failed else self._error,
            "b_updated_at": _iso(now),
            "b_done_at": _iso(now) if done else self._done_at,
        })

    def done(self, now: dt.datetime, channel: str | None = None) -> None:
        self._set(DONE, now, done=True)

    def fail(self, error: str, now: dt.datetime) -> None:
        self._set(FAILED, now, error=error)

    def suppress(self, reason: str, now: dt.datetime) -> None:
        self._set(SUPPRESSED, now, reason)

    def defer(self, reason: str, now: dt.datetime) -> None:
        self._set(DEFERRED, now, reason)

    def skip(self, reason: str, now: dt.datetime) -> None:
        self._set(SKIPPED, now, reason)

    def lock_customer(self) -> None:
        if self._ledger.dialect == "postgresql":
            sa = self._ledger._sa
            digest = hashlib.blake2b(_encode(self._customer).encode(), digest_size=8).digest()
            self._conn.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))


# -- choosing the ledger of a repository ------------------------------------------

_EXTENSION = "cohorts.campaigns.ledger"


def ledger_for(repository: Any) -> Ledger:
    """The ledger kept in ``repository``: SQL tables for a SQL repository, an extension for a memory one.

    Example:
        >>> from cohorts.repository import MemoryRepository
        >>> type(ledger_for(MemoryRepository())).__name__
        'MemoryLedger'
    """
    engine = getattr(repository, "engine", None)
    if engine is not None:
        transaction, connect = getattr(repository, "transaction", None), getattr(repository, "connect", None)
        if callable(transaction) and callable(connect):

            @contextlib.contextmanager
            def inside() -> Iterator[Any]:
                with transaction(), connect() as conn:
                    yield conn

            return SQLLedger(engine, inside)
        return SQLLedger(engine)
    extension = getattr(repository, "extension", None)
    if callable(extension):
        state = extension(_EXTENSION, MemoryLedgerState)
        if not isinstance(state, MemoryLedgerState):
            raise TypeError(f"the repository's {_EXTENSION!r} extension is not a ledger: {state!r}")
        return MemoryLedger(state)
    raise TypeError(
        f"{type(repository).__name__} has no place for a campaign ledger: use a MemoryRepository or SQLRepository,"
        " or pass ledger="
    )
