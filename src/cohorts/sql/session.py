"""Connections and transactions shared by a repository and the stores that write beside it.

A :class:`Session` hands out the connection of the transaction in progress
(in this thread or task), so the group store and the campaign ledger write in
the same transaction as the repository; blocks nest as savepoints.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..ledger import held
from .dialects import WRITES, database_file, dialect
from .storage import encode_id

if TYPE_CHECKING:
    import datetime as dt

    from ..ast import Node
    from ..group_store import GroupStore
    from ..ledger import Ledger
    from ..repository import GroupLookup
    from ..schema import Schema
    from ..timing import Plan

__all__ = ["Session", "Transactional", "log_changes"]


class Session:
    """The transaction in progress on ``engine``, per thread and task.

    ``rolled_back`` is called when a :meth:`transaction` block raises, so that
    settings changed inside (a declared schema) go with the rolled-back writes.
    """

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self.engine = engine
        self._current: contextvars.ContextVar[sa.Connection | None] = contextvars.ContextVar(name, default=None)
        self._lazy: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar(
            f"{name}-lazy", default=None
        )

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection in the current transaction, or in a new one committed at the block's end."""
        current = self._joined()
        if current is not None:
            yield current
            return
        with self._begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reads only: the transaction in progress, or a snapshot of its own that takes
        no write lock (and does not begin a :meth:`lazily` block's transaction)."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.begin() as conn:
            yield conn

    def _joined(self) -> sa.Connection | None:
        """The transaction in progress, begun now if a :meth:`lazily` block waits for one."""
        current = self._current.get()
        if current is None and (lazy := self._lazy.get()) is not None:
            current = lazy.enter_context(self._begin())  # open until the block ends
        return current

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A transaction that may write: on SQLite it waits for the write lock as it begins."""
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITES: True})
            with conn.begin():
                token = self._current.set(conn)
                try:
                    yield conn
                finally:
                    self._current.reset(token)

    @contextlib.contextmanager
    def lazily(self) -> Iterator[None]:
        """One transaction for the block, begun by its first statement (none if nothing runs inside)
        and committed at its end, or rolled back if it raises.

        On SQLite a transaction holds the database's write lock from its start: a block that may write
        nothing (a campaign handler that only sends) then holds no lock at all.
        """
        if self._current.get() is not None or self._lazy.get() is not None:
            yield  # inside a transaction already
            return
        with contextlib.ExitStack() as stack:
            token = self._lazy.set(stack)
            try:
                yield
            finally:
                self._lazy.reset(token)

    @contextlib.contextmanager
    def transaction(self, rolled_back: Callable[[], None] | None = None) -> Iterator[None]:
        """Writes inside the block are committed at its end, or rolled back if it raises; nested blocks
        are savepoints."""
        current = self._joined()
        try:
            if current is not None:
                with current.begin_nested():
                    yield
                return
            with self.connect():
                yield
        except BaseException:
            if rolled_back is not None:
                rolled_back()
            raise


class Transactional:
    """What a SQL repository shares: its transactions, and the stores of group and campaign state
    in tables named with ``state_prefix``, written in those transactions.

    A subclass sets ``engine``, ``_session``, ``_schema`` (restored when a transaction rolls back)
    and ``state_prefix``.
    """

    engine: sa.Engine
    state_prefix: str
    _session: Session
    _schema: Schema | None
    _group_store: GroupStore | None = None
    _ledger: Ledger | None = None

    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection in the current transaction, or in a new one committed at the block's end.

        Other modules' stores write through it, so :meth:`transaction` covers them too.
        """
        return self._session.connect()

    def read(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection for reads only (see :meth:`Session.read`)."""
        return self._session.read()

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Writes inside the block (this repository's and other stores' through :meth:`connect`) are
        committed at its end, or rolled back if it raises. Nested blocks are savepoints."""
        schema = self._schema

        def rolled_back() -> None:
            self._schema = schema  # a schema declared inside goes with the rolled-back writes

        return self._session.transaction(rolled_back)

    restricts_rules = False
    """Whether :meth:`insert_matches` and :meth:`insert_dues` restrict themselves to a scope in the database."""

    def insert_matches(
        self, rule: Node, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> None:
        """Insert ``(group_id, key)`` into the table named ``table`` for every customer (of the table named
        ``scope``) ``rule`` is true for at ``now``, in the current transaction (each repository runs its
        rules its own way)."""
        raise NotImplementedError

    def insert_dues(
        self, plan: Plan, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> bool:
        """Insert ``(group_id, key, due)`` into the table named ``table`` for the customers whose answer to
        ``plan``'s rule time alone could change, or return False when this repository cannot."""
        raise NotImplementedError

    def group_store(self) -> GroupStore:
        """The groups' tables (see :mod:`cohorts.sql.groups`), written in this repository's transactions."""
        if self._group_store is None:
            from .groups import SQLGroupStore

            self._group_store = SQLGroupStore(self, self.state_prefix)
        return self._group_store

    def runner_lock(self, *, wait: bool = False) -> contextlib.AbstractContextManager[bool]:
        """The lock one campaign run at a time holds on this database (see
        :class:`cohorts.ledger.RunnerLocks`), named after ``state_prefix``: True when held."""
        return runner_lock(self.engine, f"{self.state_prefix}campaign_runner", wait)

    def ledger(self) -> Ledger:
        """The campaign ledger's tables (see :mod:`cohorts.sql.ledger`): handlers' writes commit with its rows."""
        if self._ledger is None:
            from .ledger import SQLLedger

            @contextlib.contextmanager
            def inside() -> Iterator[sa.Connection]:
                with self.transaction(), self.connect() as conn:
                    yield conn

            self._ledger = SQLLedger(self.engine, inside, self.state_prefix, self._session.lazily)
        return self._ledger


_LOCAL_LOCKS: weakref.WeakKeyDictionary[sa.Engine, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key for ``name``: a signed 64-bit number, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def _advisory(engine: sa.Engine, name: str, wait: bool) -> Iterator[bool]:
    """A session-level advisory lock on a connection of its own, held across the run's transactions."""
    key = _lock_key(name)
    with engine.connect() as conn:
        take = sa.func.pg_advisory_lock(key) if wait else sa.func.pg_try_advisory_lock(key)
        result = conn.execute(sa.select(take)).scalar()
        conn.commit()
        got = wait or bool(result)
        try:
            yield got
        finally:
            if got:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()


@contextlib.contextmanager
def _file_lock(path: str, wait: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (made if missing), which the system drops when the process dies."""
    import fcntl

    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def runner_lock(engine: sa.Engine, name: str, wait: bool) -> contextlib.AbstractContextManager[bool]:
    """The lock named ``name`` that one campaign run at a time holds on ``engine``'s database.

    PostgreSQL: a session-level advisory lock. A SQLite file: an ``flock`` on the
    file ``<database>.<name>.lock`` beside it (POSIX; elsewhere, and for an
    in-memory database, a lock of this process).
    """
    if dialect(engine).advisory_locks:
        return _advisory(engine, name, wait)
    database = database_file(engine)
    if database is not None and os.name == "posix":
        return _file_lock(f"{os.path.abspath(database)}.{name}.lock", wait)
    locks = _LOCAL_LOCKS.setdefault(engine, {})
    return held(locks.setdefault(name, threading.Lock()), wait)


def log_changes(conn: sa.Connection, table: sa.Table, customer_ids: Iterable[object]) -> None:
    """Record in the change log ``table`` that these customers were written (in the writing transaction)."""
    rows = [(encode_id(cid),) for cid in customer_ids]  # type: ignore[arg-type]
    if rows:
        dialect(conn).insert_many(conn, table.name, ["customer"], rows)
