"""The campaign ledger in SQL tables beside a :class:`cohorts.SQLRepository`'s own (see :mod:`cohorts.ledger`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from ..ledger import (
    AGAIN,
    DEFERRED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUPPRESSED,
    ActionSpec,
    Connect,
    LedgerEntry,
    iso,
)
from ..model import CustomerId
from .claimants import Claimants
from .dialects import database_file, dialect
from .storage import decode_id, encode_id

__all__ = ["SQLLedger"]


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

    def __init__(
        self,
        engine: Any,
        connect: Connect | None = None,
        prefix: str = "cohorts_",
        lazily: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.engine = engine
        self._connect: Connect = connect if connect is not None else engine.begin
        self._lazily = lazily if lazily is not None else contextlib.nullcontext
        self.dialect = dialect(engine)
        # Without row locks (SQLite), a claim is a row marked running, committed before the handler runs.
        self._claimants = None if self.dialect.row_locks or os.name != "posix" else Claimants(database_file(engine))
        self._dead: set[str] = set()  # claimants found dead: their running rows are due
        meta = sa.MetaData()
        self.audience = sa.Table(
            f"{prefix}campaign_audience", meta,
            sa.Column("campaign", sa.String(200), primary_key=True),
            sa.Column("customer", sa.String(200), primary_key=True),
            sa.Column("added_at", sa.String(40), nullable=False),
        )
        self.actions = sa.Table(
            f"{prefix}campaign_actions", meta,
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
            sa.Column("claimed_by", sa.String(80)),  # SQLite: the claimant of a running row
            sa.Index(f"ix_{prefix}campaign_actions_due", "campaign", "state"),
            sa.Index(f"ix_{prefix}campaign_actions_sent", "customer", "kind", "done_at"),
        )
        self.keys = sa.Table(
            f"{prefix}campaign_keys", meta,
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
        self._claim_statement = self.dialect.claim_rows(sa.select(*columns).where(*key, due), act, (*key, due), columns)
        # A running row whose claimant died (``b_dead``: their names) is due again.
        self._orphan = sa.and_(act.c.state == RUNNING, act.c.claimed_by.in_(sa.bindparam("b_dead", expanding=True)))
        self._find_statement = sa.select(*columns).where(*key, sa.or_(due, self._orphan))
        self._mark_statement = sa.update(act).where(*key).values(state=RUNNING, claimed_by=sa.bindparam("b_owner"))
        self._release_statement = (
            sa.update(act)
            .where(*key, act.c.state == RUNNING, act.c.claimed_by == sa.bindparam("b_owner"))
            .values(state=sa.bindparam("b_state"), claimed_by=None)
        )
        self._outcome_statement = sa.update(act).where(*key).values(
            state=sa.bindparam("b_state"), attempts=sa.bindparam("b_attempts"), reason=sa.bindparam("b_reason"),
            error=sa.bindparam("b_error"), updated_at=sa.bindparam("b_updated_at"), done_at=sa.bindparam("b_done_at"),
            claimed_by=None,
        )
        self._create_tables()

    def _create_tables(self) -> None:
        with self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            present = set(inspector.get_table_names())
            legacy = present >= {self.audience.name} and conn.execute(self._legacy_ids().limit(1)).first() is not None
            unclaimed = self.actions.name in present and "claimed_by" not in {
                c["name"] for c in inspector.get_columns(self.actions.name)
            }
        if {t.name for t in self.metadata.sorted_tables} <= present and not legacy and not unclaimed:
            return
        for attempt in itertools.count(1):
            try:
                with self.engine.begin() as conn:
                    self.dialect.lock(conn, _DDL_LOCK)  # runners starting together must not create the tables twice
                    self.metadata.create_all(conn)
                    self._migrate_ids(conn)
                    self._add_claimants(conn)
                return
            except sa.exc.OperationalError as error:
                # SQLite refuses a read transaction's upgrade to a write while another runner writes
                # ("database is locked", without waiting): try again shortly.
                if not self.dialect.busy(error) or attempt >= 100:
                    raise
                time.sleep(0.05)

    def _add_claimants(self, conn: sa.Connection) -> None:
        """Add the ``claimed_by`` column to a ledger made before cohorts kept it (one ALTER, rows kept)."""
        if "claimed_by" not in {c["name"] for c in sa.inspect(conn).get_columns(self.actions.name)}:
            quote = conn.dialect.identifier_preparer.quote
            conn.exec_driver_sql(f"ALTER TABLE {quote(self.actions.name)} ADD COLUMN claimed_by VARCHAR(80)")

    def _legacy_ids(self) -> sa.Select[Any]:
        """Audience rows whose customer is in the JSON encoding of cohorts 0.1 (``42``, ``"c1"``)."""
        customer = self.audience.c.customer
        return sa.select(customer).where(sa.not_(customer.like("i:%")), sa.not_(customer.like("s:%")))

    def _migrate_ids(self, conn: sa.Connection) -> None:
        """Re-encode customer ids stored as JSON (cohorts 0.1) as every other table does (``i:42``, ``s:c1``)."""
        legacy = {row[0] for row in conn.execute(self._legacy_ids().distinct())}
        legacy |= {
            row[0]
            for row in conn.execute(
                sa.select(self.actions.c.customer)
                .where(sa.not_(self.actions.c.customer.like("i:%")), sa.not_(self.actions.c.customer.like("s:%")))
                .distinct()
            )
        }
        for old in legacy:
            value = json.loads(old)
            new = encode_id(value)
            for table in (self.audience, self.actions):
                conn.execute(sa.update(table).where(table.c.customer == old).values(customer=new))

    def _insert(self, table: Any) -> Any:
        return self.dialect.upsert_statement(table)

    def enroll(self, campaign: str, ids: Collection[CustomerId], specs: Sequence[ActionSpec], now: dt.datetime) -> int:
        aud, act = self.audience, self.actions
        stamp = iso(now)
        with self._connect() as conn:
            # Write first: on SQLite this takes the database lock; on PostgreSQL the row lock below makes
            # concurrent runners enroll one campaign one after the other, so "added" counts are exact.
            conn.execute(self._insert(self.keys).on_conflict_do_nothing(), {"campaign": campaign, "actions": "{}"})
            query = sa.select(self.keys.c.actions).where(self.keys.c.campaign == campaign).with_for_update()
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
            new = sorted({encode_id(i) for i in ids} - existing)
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
        with self._connect() as conn:
            query = sa.select(self.audience.c.customer).where(self.audience.c.campaign == campaign)
            return {decode_id(c) for c in conn.execute(query).scalars()}

    def _due_clause(self, retries: int) -> Any:
        state, attempts = self.actions.c.state, self.actions.c.attempts
        return sa.or_(state.in_(AGAIN), sa.and_(state == FAILED, attempts <= retries))

    def due(self, campaign: str, keys: Sequence[str], retries: int) -> list[tuple[CustomerId, str]]:
        act = self.actions
        if not keys:
            return []
        due = self._due_clause(retries)
        with self._connect() as conn:
            if self._claimants is not None:  # rows left running by a claimant that died are due again
                claimants = conn.execute(
                    sa.select(act.c.claimed_by).where(act.c.campaign == campaign, act.c.state == RUNNING).distinct()
                ).scalars()
                self._dead.update(c for c in claimants if c is not None and not self._claimants.alive(c))
                due = sa.or_(due, self._orphan)
            query = sa.select(act.c.customer, act.c.action).where(
                act.c.campaign == campaign, act.c.action.in_(list(keys)), due
            )
            return [(decode_id(c), a) for c, a in conn.execute(query, {"b_dead": sorted(self._dead)})]

    @contextlib.contextmanager
    def claim(self, campaign: str, customer_id: CustomerId, key: str, retries: int) -> Iterator[_SQLClaim | None]:
        params = {"b_campaign": campaign, "b_customer": encode_id(customer_id), "b_action": key, "b_retries": retries}
        if self._claimants is None:  # a row lock held by the claim's transaction
            with self._connect() as conn:
                row = conn.execute(self._claim_statement, params).first()
                if row is None:  # locked by another runner, done, or out of retries
                    yield None
                    return
                yield _SQLClaim(self, conn, params, row.attempts, row.error, row.done_at, customer_id)
            return
        # SQLite: mark the row running and commit, so that no lock is held while the handler runs. The
        # handler's repository writes and the outcome then share one transaction, begun by the first
        # of them; a block that raises puts the row back as it was.
        owner = {**params, "b_owner": self._claimants.me()}
        with self._connect() as conn:  # a short write: the row is ours, or another runner's
            row = conn.execute(self._find_statement, {**params, "b_dead": sorted(self._dead)}).first()
            if row is not None:
                conn.execute(self._mark_statement, owner)
        if row is None:  # claimed by another runner, done, or out of retries
            yield None
            return
        claim = _SQLClaim(self, None, params, row.attempts, row.error, row.done_at, customer_id)
        recorded = False
        try:
            with self._lazily():
                yield claim
            recorded = claim.recorded
        finally:
            if not recorded:
                back = PENDING if row.state == RUNNING else row.state
                with self._connect() as conn:
                    conn.execute(self._release_statement, {**owner, "b_state": back})

    def sent(self, customer_id: CustomerId, channel: str, since: dt.datetime) -> int:
        act = self.actions
        query = sa.select(sa.func.count()).where(
            act.c.customer == encode_id(customer_id),
            act.c.kind == channel,
            act.c.state == DONE,
            act.c.done_at > iso(since),
        )
        with self._connect() as conn:
            return int(conn.execute(query).scalar_one())

    def entries(self, campaign: str | None = None) -> list[LedgerEntry]:
        act = self.actions
        query = sa.select(act).order_by(act.c.campaign, act.c.customer, act.c.action)
        if campaign is not None:
            query = query.where(act.c.campaign == campaign)
        with self._connect() as conn:
            return [
                LedgerEntry(r.campaign, decode_id(r.customer), r.action, r.kind, r.state, r.attempts, r.reason, r.error,
                            r.updated_at, r.done_at)
                for r in conn.execute(query)
            ]


class _SQLClaim:
    """A claim on one row: ``conn`` is the transaction holding its row lock, or None where the row is
    marked running (then each write goes through the ledger's transactions)."""

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
        self.recorded = False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._conn is not None:
            yield self._conn
        else:
            with self._ledger._connect() as conn:
                yield conn

    @property
    def attempts(self) -> int:
        return self._attempts

    def _set(self, state: str, now: dt.datetime, reason: str | None = None, *, done: bool = False,
             error: str | None = None) -> None:
        failed = error is not None
        with self._connection() as conn:
            conn.execute(self._ledger._outcome_statement, {
                **self._key,
                "b_state": state,
                "b_attempts": self._attempts + 1 if failed else self._attempts,
                "b_reason": reason,
                "b_error": error if failed else self._error,
                "b_updated_at": iso(now),
                "b_done_at": iso(now) if done else self._done_at,
            })
        self.recorded = True

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
        digest = hashlib.blake2b(encode_id(self._customer).encode(), digest_size=8).digest()
        # SQLite: the claim's transaction begins here, with the database's write lock, held until the
        # outcome is recorded (frequency caps are checked one runner at a time).
        with self._connection() as conn:
            self._ledger.dialect.lock(conn, int.from_bytes(digest, "big", signed=True))


