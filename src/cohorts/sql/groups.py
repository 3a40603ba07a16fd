"""The group store of a ``SQLRepository`` or ``HostRepository``: tables beside the customers, written in
its transactions.

Tables (created on first use; every statement has bound parameters only):

``cohorts_groups``
    one row per group: ``id``, ``key`` (the case-folded name, unique),
    ``name``, ``rule`` (canonical text), ``description``, ``version``,
    ``evaluated`` and ``changed_at``.
``cohorts_group_marks``
    ``(group_id, customer, kind)`` for the ``manual``, ``imported`` and
    ``excluded`` marks; indexed by customer for ``groups_of``. On SQLite it is
    created ``WITHOUT ROWID`` (a database made by an earlier version keeps its
    table with a rowid: both are read and written alike).
``cohorts_group_rules``
    ``(group_id, customer)`` with ``matched``, ``version``, ``since``,
    ``evaluated_at`` and ``due``: the last answer of the rules, kept for
    members and for non-members whose answer time could change. Indexed by
    ``due``, so a refresh at a later ``now`` reads only what is due.
``cohorts_group_digests``
    per customer, a digest of what the rules read (``key_set`` names what was read).
``cohorts_group_meta``
    settings such as the moment the stored memberships are valid at.

Customer ids are stored as text with a type prefix (``i:42``, ``s:c1``) so
integer and text ids stay distinct. Times are microseconds since the epoch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from ..group_store import MARKS, GroupDef, HistoryRow, RuleRow, Slot, group_key
from ..model import CustomerId
from .compiler import Params
from .dialects import dialect
from .host import driver_params
from .storage import EPOCH, decode_id, encode_id, micros

__all__ = ["SQLGroupStore"]

_CHUNK = 500
_DDL_LOCK = 7302018  # creating the group tables, where the dialect has a lock
_STORE_LOCK = 7302019  # a catch-up in progress
_GENERATION = "definitions_generation"
T = TypeVar("T")


class Database(Protocol):
    """Where a store keeps its tables: an engine, and the connection of the transaction in progress."""

    @property
    def engine(self) -> sa.Engine:
        """The database."""
        ...

    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection in the current transaction, or in a new one committed at the block's end."""
        ...


@functools.lru_cache(maxsize=65536)
def _micros(value: dt.datetime | None) -> int | None:
    return None if value is None else micros(value)  # the same few instants recur: cached


def _insert(conn: Any, table: sa.Table, rows: Sequence[tuple[Any, ...]], *, or_ignore: bool = False) -> None:
    """Insert many rows with the driver's own executemany (``or_ignore``: skip rows whose key is stored)."""
    dialect(conn).insert_many(conn, table.name, [c.name for c in table.columns], rows, or_ignore=or_ignore)


def _instant(value: int | None) -> dt.datetime | None:
    if value is None:
        return None
    return EPOCH + dt.timedelta(microseconds=value)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class SQLGroupStore:
    """A :class:`cohorts.group_store.GroupStore` in the repository's database."""

    def __init__(self, repository: Database, prefix: str = "cohorts_") -> None:
        self.repository = repository
        metadata = sa.MetaData()
        self.groups = sa.Table(
            f"{prefix}groups",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("key", sa.Text, nullable=False, unique=True),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("rule", sa.Text),
            sa.Column("description", sa.Text, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("evaluated", sa.Integer, nullable=False),
            sa.Column("changed_at", sa.BigInteger),
            sa.Column("evaluated_at", sa.BigInteger),
        )
        self.marks = sa.Table(
            f"{prefix}group_marks",
            metadata,
            sa.Column("group_id", sa.Integer, primary_key=True),
            sa.Column("customer", sa.Text, primary_key=True),
            sa.Column("kind", sa.String(8), primary_key=True),
            sa.Index(f"{prefix}group_marks_customer", "customer"),
            # SQLite: the rows live in the primary key's b-tree, so a mark costs two index inserts, not three.
            sqlite_with_rowid=False,
        )
        self.rules = sa.Table(
            f"{prefix}group_rules",
            metadata,
            sa.Column("group_id", sa.Integer, primary_key=True),
            sa.Column("customer", sa.Text, primary_key=True),
            sa.Column("matched", sa.Boolean, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("since", sa.BigInteger),
            sa.Column("evaluated_at", sa.BigInteger, nullable=False),
            sa.Column("due", sa.BigInteger),
            sa.Index(f"{prefix}group_rules_customer", "customer"),
            sa.Index(f"{prefix}group_rules_due", "due"),
        )
        self.digest_table = sa.Table(
            f"{prefix}group_digests",
            metadata,
            sa.Column("customer", sa.Text, primary_key=True),
            sa.Column("key_set", sa.Text, nullable=False),
            sa.Column("digest", sa.LargeBinary, nullable=False),
        )
        self.meta = sa.Table(
            f"{prefix}group_meta",
            metadata,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        self.history_table = sa.Table(
            f"{prefix}group_history",
            metadata,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
            sa.Column("group_id", sa.Integer, nullable=False),
            sa.Column("customer", sa.Text, nullable=False),
            sa.Column("before", sa.SmallInteger, nullable=False),
            sa.Column("after", sa.SmallInteger, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("at", sa.BigInteger, nullable=False),
            sa.Column("cause", sa.String(10), nullable=False),
            sa.Index(f"{prefix}group_history_group", "group_id", "at"),
            sa.Index(f"{prefix}group_history_customer", "customer"),
        )
        with repository.engine.begin() as conn:
            dialect(conn).lock(conn, _DDL_LOCK)
            metadata.create_all(conn)
        self._definitions: tuple[str | None, tuple[GroupDef, ...]] | None = None

    def _connect(self) -> Any:
        return self.repository.connect()

    # -- definitions -------------------------------------------------------

    def definitions(self) -> list[GroupDef]:
        """Every group definition (read again only when the stored generation changed)."""
        generation = self.get_meta(_GENERATION)
        if self._definitions is not None and self._definitions[0] == generation:
            return list(self._definitions[1])
        g = self.groups
        with self._connect() as conn:
            rows = conn.execute(sa.select(g).order_by(g.c.id)).all()
        found = [
            GroupDef(
                row.id,
                row.name,
                row.rule,
                row.description,
                row.version,
                row.evaluated,
                _instant(row.changed_at),
                _instant(row.evaluated_at),
            )
            for row in rows
        ]
        self._definitions = (generation, tuple(found))
        return found

    def forget(self) -> None:
        """Drop cached definitions (after a rollback)."""
        self._definitions = None

    def _bump(self) -> None:
        """Mark the definitions changed, for every store reading this database."""
        self.set_meta(_GENERATION, uuid.uuid4().hex)  # never reused, even after a rollback
        self._definitions = None

    def save_definition(self, definition: GroupDef) -> None:
        """Insert or replace the definition with this id."""
        self.save_definitions([definition])

    def save_definitions(self, definitions: Sequence[GroupDef]) -> None:
        """Insert or replace several definitions."""
        rows = [
            (
                d.id,
                group_key(d.name),
                d.name,
                d.rule,
                d.description,
                d.version,
                d.evaluated,
                _micros(d.changed_at),
                _micros(d.evaluated_at),
            )
            for d in definitions
        ]
        with self._connect() as conn:
            conn.execute(sa.delete(self.groups).where(self.groups.c.id.in_([d.id for d in definitions])))
            _insert(conn, self.groups, rows)
        self._bump()

    def new_id(self) -> int:
        """An id no group uses."""
        with self._connect() as conn:
            top = conn.execute(sa.select(sa.func.max(self.groups.c.id))).scalar()
        return int(top or 0) + 1

    def drop_group(self, group_id: int) -> None:
        """Delete a group's definition and everything stored for it."""
        with self._connect() as conn:
            conn.execute(sa.delete(self.marks).where(self.marks.c.group_id == group_id))
            conn.execute(sa.delete(self.rules).where(self.rules.c.group_id == group_id))
            conn.execute(sa.delete(self.history_table).where(self.history_table.c.group_id == group_id))
            conn.execute(sa.delete(self.groups).where(self.groups.c.id == group_id))
        self._bump()

    # -- slots ---------------------------------------------------------------

    @staticmethod
    def _row(row: Any) -> RuleRow:
        evaluated = _instant(row.evaluated_at)
        assert evaluated is not None
        return RuleRow(bool(row.matched), row.version, _instant(row.since), evaluated, _instant(row.due))

    def slots(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, dict[int, Slot]]:
        """The non-empty slots of these customers, by group id."""
        found: dict[str, dict[int, dict[str, Any]]] = {}
        keys = [encode_id(cid) for cid in customer_ids]
        if not keys:
            return {}
        with self._connect() as conn:
            # One statement per table for any number of ids: the ids go as one parameter.
            params = Params(dialect(conn))
            among, bound = params.render(params.dialect.in_texts(params, "customer", keys))
            ids = driver_params(bound)
            quote = conn.dialect.identifier_preparer.quote
            marks = conn.exec_driver_sql(
                f"SELECT group_id, customer, kind FROM {quote(self.marks.name)} WHERE {among}",  # noqa: S608 - our own quoted names
                ids,
            )
            for gid, customer, kind in marks:
                found.setdefault(customer, {}).setdefault(gid, {})[kind] = True
            rules = conn.exec_driver_sql(
                "SELECT group_id, customer, matched, version, since, evaluated_at, due"  # noqa: S608 - our own quoted names
                f" FROM {quote(self.rules.name)} WHERE {among}",
                ids,
            )
            for row in rules:
                found.setdefault(row.customer, {}).setdefault(row.group_id, {})["rule"] = self._row(row)
        return {
            decode_id(key): {gid: Slot(**fields) for gid, fields in by_group.items()} for key, by_group in found.items()
        }

    def group_slots(self, group_id: int) -> dict[CustomerId, Slot]:
        """The non-empty slots of one group, by customer."""
        found: dict[str, dict[str, Any]] = {}
        with self._connect() as conn:
            marks = conn.execute(
                sa.select(self.marks.c.customer, self.marks.c.kind).where(self.marks.c.group_id == group_id)
            )
            for customer, kind in marks:
                found.setdefault(customer, {})[kind] = True
            for row in conn.execute(sa.select(self.rules).where(self.rules.c.group_id == group_id)):
                found.setdefault(row.customer, {})["rule"] = self._row(row)
        return {decode_id(key): Slot(**fields) for key, fields in found.items()}

    def set_marks(self, group_id: int, kind: str, customer_ids: Iterable[CustomerId], value: bool) -> None:
        """Set or clear a mark (``manual``, ``imported``, ``excluded``)."""
        if kind not in MARKS:
            raise ValueError(f"unknown mark {kind!r}")
        keys = list(dict.fromkeys(encode_id(cid) for cid in customer_ids))
        m = self.marks
        with self._connect() as conn:
            if value:  # one executemany; a mark already set stays as it is
                _insert(conn, m, [(group_id, key, kind) for key in keys], or_ignore=True)
                return
            among = dialect(conn).among
            conn.execute(sa.delete(m).where(m.c.group_id == group_id, m.c.kind == kind, among(m.c.customer, keys)))

    def put_rules(self, group_id: int, rows: Mapping[CustomerId, RuleRow | None], *, new: bool = False) -> None:
        """Store rule rows (None deletes the row); ``new`` says none of them is stored yet."""
        self.put_many({group_id: rows}, new=new)

    def put_many(self, rows: Mapping[int, Mapping[CustomerId, RuleRow | None]], *, new: bool = False) -> None:
        """Store the rule rows of several groups at once (None deletes the row).

        Few customers in many groups (an incremental refresh) are replaced
        customer by customer; many customers, group by group. Then one insert.
        """
        r = self.rules
        items = [(gid, encode_id(cid), row) for gid, by_customer in rows.items() for cid, row in by_customer.items()]
        with self._connect() as conn:
            if not new:  # replace: delete what is stored first
                by_customer: dict[str, list[int]] = {}
                for gid, key, _ in items:
                    by_customer.setdefault(key, []).append(gid)
                if len(by_customer) <= len(rows):
                    for key, gids in by_customer.items():
                        for part in _chunks(gids):
                            conn.execute(sa.delete(r).where(r.c.customer == key, r.c.group_id.in_(part)))
                else:
                    among = dialect(conn).among
                    for gid, by_id in rows.items():
                        keys = [encode_id(cid) for cid in by_id]
                        conn.execute(sa.delete(r).where(r.c.group_id == gid, among(r.c.customer, keys)))
            values = [
                (gid, key, row.matched, row.version, _micros(row.since), _micros(row.evaluated_at), _micros(row.due))
                for gid, key, row in items
                if row is not None
            ]
            for chunk in _chunks(values):
                _insert(conn, r, chunk)

    def due(self, now: dt.datetime) -> list[tuple[int, CustomerId]]:
        """The (group id, customer id) pairs whose ``due`` is at or before ``now``."""
        r = self.rules
        with self._connect() as conn:
            rows = conn.execute(sa.select(r.c.group_id, r.c.customer).where(r.c.due <= _micros(now))).all()
        return [(gid, decode_id(key)) for gid, key in rows]

    # -- digests and customers ---------------------------------------------------

    def digests(self, customer_ids: Collection[CustomerId]) -> dict[CustomerId, tuple[str, bytes]]:
        """The stored (keys version, digest) of these customers."""
        d = self.digest_table
        out: dict[CustomerId, tuple[str, bytes]] = {}
        keys = [encode_id(cid) for cid in customer_ids]
        if not keys:
            return out
        with self._connect() as conn:
            query = sa.select(d.c.customer, d.c.key_set, d.c.digest).where(dialect(conn).among(d.c.customer, keys))
            for key, version, digest in conn.execute(query):
                out[decode_id(key)] = (version, bytes(digest))
        return out

    def put_digests(self, rows: Mapping[CustomerId, tuple[str, bytes] | None]) -> None:
        """Store digests (None deletes)."""
        d = self.digest_table
        items = [(encode_id(cid), value) for cid, value in rows.items()]
        if not items:
            return
        with self._connect() as conn:
            conn.execute(sa.delete(d).where(dialect(conn).among(d.c.customer, [k for k, _ in items])))
            for chunk in _chunks(items):
                _insert(conn, d, [(key, value[0], value[1]) for key, value in chunk if value is not None])

    def customer_ids(self) -> set[CustomerId]:
        """Every customer with a digest or a slot."""
        query = sa.union(
            sa.select(self.digest_table.c.customer),
            sa.select(self.marks.c.customer),
            sa.select(self.rules.c.customer),
        )
        with self._connect() as conn:
            return {decode_id(key) for (key,) in conn.execute(query)}

    def drop_customers(self, customer_ids: Collection[CustomerId]) -> None:
        """Forget these customers everywhere."""
        keys = [encode_id(cid) for cid in customer_ids]
        if not keys:
            return
        with self._connect() as conn:
            among = dialect(conn).among
            for table in (self.marks, self.rules, self.digest_table):
                conn.execute(sa.delete(table).where(among(table.c.customer, keys)))

    def get_meta(self, key: str) -> str | None:
        """A stored setting."""
        with self._connect() as conn:
            value = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        with self._connect() as conn:
            conn.execute(sa.delete(self.meta).where(self.meta.c.key == key))
            conn.execute(sa.insert(self.meta).values(key=key, value=value))

    # -- the catch-up lock and the history ---------------------------------------

    def lock(self) -> None:
        """Hold the groups' state for this transaction: a second process's catch-up waits for this one."""
        with self._connect() as conn:
            found = dialect(conn)
            found.lock(conn, _STORE_LOCK)
            # SQLite: a write now takes the database's write lock, so this transaction never has to
            # upgrade a read to a write later (which fails at once when another process wrote meanwhile).
            conn.execute(sa.delete(self.meta).where(self.meta.c.key == "lock"))

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        """Append entries to the membership history."""
        if not rows:
            return
        values = [
            (r.group_id, encode_id(r.customer_id), r.before, r.after, r.version, _micros(r.at), r.cause) for r in rows
        ]
        columns = ["group_id", "customer", "before", "after", "version", "at", "cause"]
        with self._connect() as conn:
            for chunk in _chunks(values):
                dialect(conn).insert_many(conn, self.history_table.name, columns, chunk)

    def history(
        self,
        group_id: int | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        customer_id: CustomerId | None = None,
    ) -> list[HistoryRow]:
        """History entries in the order they were added (``start <= at < end``)."""
        h = self.history_table
        query = sa.select(h.c.group_id, h.c.customer, h.c.before, h.c.after, h.c.version, h.c.at, h.c.cause)
        if group_id is not None:
            query = query.where(h.c.group_id == group_id)
        if customer_id is not None:
            query = query.where(h.c.customer == encode_id(customer_id))
        if start is not None:
            query = query.where(h.c.at >= _micros(start))
        if end is not None:
            query = query.where(h.c.at < _micros(end))
        with self._connect() as conn:
            rows = conn.execute(query.order_by(h.c.seq)).all()
        return [
            HistoryRow(gid, decode_id(customer), before, after, version, _instant(at) or EPOCH, cause)
            for gid, customer, before, after, version, at, cause in rows
        ]

    def forget_history(self, before: dt.datetime) -> None:
        """Delete the entries found before ``before``."""
        with self._connect() as conn:
            conn.execute(sa.delete(self.history_table).where(self.history_table.c.at < _micros(before)))
