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

A full evaluation of a group is computed by the database (:meth:`SQLGroupStore.stage_rule`,
:meth:`SQLGroupStore.apply_rule`): the rule's matches go into a temporary table, which is compared
with the stored rule rows and marks, and the joiners, leavers and history rows are written by a few
``INSERT ... SELECT`` and ``DELETE`` statements, whatever the number of customers.

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

from ..ast import Node
from ..group_store import MARKS, GroupDef, HistoryRow, RuleRow, Slot, group_key
from ..model import CustomerId
from ..repository import GroupLookup
from ..timing import Plan
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
# The temporary tables of a pass computed in the database (see SQLGroupStore.apply_rule).
_TEMP_COLUMNS = {
    "staged": "group_id INTEGER NOT NULL, customer TEXT NOT NULL, PRIMARY KEY (group_id, customer)",
    "dues": "group_id INTEGER NOT NULL, customer TEXT NOT NULL, due BIGINT NOT NULL, PRIMARY KEY (group_id, customer)",
    "diff": "customer TEXT PRIMARY KEY, matched BOOLEAN NOT NULL, due BIGINT",
    "changed": "customer TEXT NOT NULL, before SMALLINT NOT NULL, after SMALLINT NOT NULL",
    "writes": "customer TEXT NOT NULL, matched BOOLEAN NOT NULL, since BIGINT, due BIGINT",
    "scope": "customer TEXT PRIMARY KEY, id TEXT NOT NULL, int_id BOOLEAN NOT NULL",
}


class Database(Protocol):
    """Where a store keeps its tables: an engine, the connection of the transaction in progress, and
    the rules run in that database."""

    @property
    def engine(self) -> sa.Engine:
        """The database."""
        ...

    def connect(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A connection in the current transaction, or in a new one committed at the block's end."""
        ...

    @property
    def restricts_rules(self) -> bool:
        """Whether :meth:`insert_matches` and :meth:`insert_dues` restrict themselves to a ``scope`` in the
        database (else the store re-evaluates few customers in Python)."""
        ...

    def insert_matches(
        self, rule: Node, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> None:
        """Insert ``(group_id, key)`` into the table named ``table`` for every customer ``rule`` is true
        for at ``now`` (keys as the store writes them: ``i:42``, ``s:c1``), in the current transaction.
        ``scope`` names a table of the customers to consider (columns ``customer``, the key, and ``id``
        and ``int_id``, its two parts), or is None for all."""
        ...

    def insert_dues(
        self, plan: Plan, now: dt.datetime, groups: GroupLookup | None, table: str, group_id: int, scope: str | None
    ) -> bool:
        """Insert ``(group_id, key, due)`` into the table named ``table`` for every customer (of ``scope``)
        whose answer to ``plan``'s rule time alone could change (``due``: the earliest instant, in
        microseconds), or return False when the database cannot compute them for this rule."""
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
        self._temp_names = {part: f"{prefix}pass_{part}" for part in _TEMP_COLUMNS}
        self._scope: str | None = None  # the table of the customers the pass in progress is restricted to

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

    # -- rules evaluated in the database -----------------------------------------

    def _temp(self, conn: Any) -> dict[str, str]:
        """The quoted names of the pass's temporary tables (each connection's own)."""
        quote = conn.dialect.identifier_preparer.quote
        return {part: quote(name) for part, name in self._temp_names.items()}

    def start_pass(self, scope: Collection[CustomerId] | None = None) -> None:
        """Create (on this connection) or empty the tables :meth:`stage_rule` and :meth:`apply_rule` fill;
        with ``scope``, the pass evaluates and writes only these customers."""
        with self._connect() as conn:
            for part, name in self._temp(conn).items():
                conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({_TEMP_COLUMNS[part]})")
                dialect(conn).empty(conn, name)
            self._scope = None
            if scope is not None:
                rows = [(encode_id(cid), str(cid), isinstance(cid, int)) for cid in scope]
                dialect(conn).bulk_load(conn, self._temp_names["scope"], ["customer", "id", "int_id"], rows)
                dialect(conn).analyze(conn, self._temp(conn)["scope"])
                self._scope = self._temp_names["scope"]

    @property
    def scopes(self) -> bool:
        """Whether a pass can be restricted to some customers in the database (see :meth:`start_pass`)."""
        return self.repository.restricts_rules

    def stage_rule(self, group_id: int, rule: Node, now: dt.datetime, groups: GroupLookup | None) -> None:
        """Evaluate ``rule`` over every customer (of the pass's scope), in the database, keeping its matches
        for :meth:`apply_rule` (once per group and pass)."""
        self.repository.insert_matches(rule, now, groups, self._temp_names["staged"], group_id, self._scope)

    def stage_dues(self, group_id: int, plan: Plan, now: dt.datetime, groups: GroupLookup | None) -> bool:
        """Find, in the database, when time alone could change each answer of ``plan``'s rule, for
        :meth:`apply_rule`; False when the rule's turning points need Python (nothing staged)."""
        return self.repository.insert_dues(plan, now, groups, self._temp_names["dues"], group_id, self._scope)

    def staged_members(self, group_id: int) -> set[CustomerId]:
        """The members a group has once its staged matches are applied (or kept after): marks and
        matches, less the excluded."""
        with self._connect() as conn:
            staged = self._temp(conn)["staged"]
            matched = f"SELECT customer FROM {staged} WHERE group_id = {group_id:d}"  # noqa: S608 - our own names
            return self._members(conn, matched, group_id)

    def members(self, group_id: int) -> set[CustomerId]:
        """The group's stored members: rule matches and marks, less the excluded."""
        with self._connect() as conn:
            rules = conn.dialect.identifier_preparer.quote(self.rules.name)
            matched = f"SELECT customer FROM {rules} WHERE group_id = {group_id:d} AND matched"  # noqa: S608 - ours
            return self._members(conn, matched, group_id)

    def _members(self, conn: Any, matched: str, group_id: int) -> set[CustomerId]:
        marks = conn.dialect.identifier_preparer.quote(self.marks.name)
        g = f"{group_id:d}"
        rows = conn.exec_driver_sql(
            f"{matched} UNION SELECT customer FROM {marks} WHERE group_id = {g}"  # noqa: S608 - our own quoted names
            f" AND kind IN ('manual', 'imported') EXCEPT SELECT customer FROM {marks} WHERE group_id = {g}"
            " AND kind = 'excluded'"
        )
        return {decode_id(key) for (key,) in rows}

    def apply_rule(
        self,
        group_id: int,
        version: int,
        now: dt.datetime,
        dues: Mapping[CustomerId, dt.datetime],
        cause: str,
        *,
        keep: bool = False,
    ) -> list[tuple[CustomerId, int, int]]:
        """Make the staged matches (and ``dues``, the next instant time could change each answer) the
        group's rule rows, add the history rows, and return each change as (customer, origins before,
        origins after) in bits. Computed by the database: a few statements whatever the size.
        ``keep`` keeps the staged matches for :meth:`staged_members` until the next pass."""
        at = micros(now)
        with self._connect() as conn:
            t = self._temp(conn)
            quote = conn.dialect.identifier_preparer.quote
            rules, marks, history = (quote(x.name) for x in (self.rules, self.marks, self.history_table))
            g = f"{group_id:d}"

            def run(sql: str, *params: Any) -> None:
                conn.exec_driver_sql(sql, tuple(params) if conn.dialect.paramstyle == "qmark" else params)

            marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"

            # The group's stored rows the pass can change: all of them, or those of the scope's customers
            # (found from the scope, so a pass over a few customers never reads a large group's rows).
            stored = f"{rules} AS r WHERE r.group_id = {g}"
            if self._scope is not None:
                stored = (
                    f"{t['scope']} AS p JOIN {rules} AS r ON r.group_id = {g} AND r.customer = p.customer WHERE 1 = 1"
                )

            for name in ("diff", "changed", "writes"):
                dialect(conn).empty(conn, t[name])
            if dues:
                rows = [(group_id, encode_id(cid), _micros(due)) for cid, due in dues.items()]
                dialect(conn).insert_many(conn, self._temp_names["dues"], ["group_id", "customer", "due"], rows)
            # The answers: matches, and non-matches whose answer time could change.
            run(
                f"INSERT INTO {t['diff']} (customer, matched, due)"  # noqa: S608 - our own quoted names
                " SELECT k.customer, MAX(k.hit) = 1, MAX(k.due) FROM ("
                f" SELECT customer, 1 AS hit, NULL AS due FROM {t['staged']} WHERE group_id = {g}"
                f" UNION ALL SELECT customer, 0, due FROM {t['dues']} WHERE group_id = {g}) AS k"
                " GROUP BY k.customer"
            )
            # Who joins or leaves through the rules: not excluded, origins from the marks.
            run(
                f"INSERT INTO {t['changed']} (customer, before, after)"  # noqa: S608 - our own quoted names
                " SELECT x.customer, COALESCE(mk.bits, 0) + 4 * x.was, COALESCE(mk.bits, 0) + 4 * x.is_now FROM ("
                f" SELECT d.customer, 0 AS was, 1 AS is_now FROM {t['diff']} AS d"
                f" LEFT JOIN {rules} AS r ON r.group_id = {g} AND r.customer = d.customer"
                " WHERE d.matched AND (r.customer IS NULL OR NOT r.matched)"
                f" UNION ALL SELECT r.customer, 1, 0 FROM {stored} AND r.matched"
                f" AND NOT EXISTS (SELECT 1 FROM {t['diff']} AS d WHERE d.customer = r.customer AND d.matched)"
                ") AS x LEFT JOIN (SELECT customer,"
                " SUM(CASE kind WHEN 'manual' THEN 1 WHEN 'imported' THEN 2 ELSE 0 END) AS bits,"
                " MAX(CASE kind WHEN 'excluded' THEN 1 ELSE 0 END) AS excluded"
                f" FROM {marks} WHERE group_id = {g} GROUP BY customer) AS mk ON mk.customer = x.customer"
                " WHERE COALESCE(mk.excluded, 0) = 0"
            )
            run(
                f"INSERT INTO {history} (group_id, customer, before, after, version, at, cause)"  # noqa: S608 - ours
                f" SELECT {g}, customer, before, after, {version:d}, {at:d}, {marker} FROM {t['changed']}",
                cause,
            )
            # The rows that differ from the stored ones (a kept match keeps its ``since``).
            run(
                f"INSERT INTO {t['writes']} (customer, matched, since, due)"  # noqa: S608 - our own quoted names
                " SELECT d.customer, d.matched,"
                f" CASE WHEN NOT d.matched THEN NULL WHEN r.matched THEN r.since ELSE {at:d} END, d.due"
                f" FROM {t['diff']} AS d LEFT JOIN {rules} AS r ON r.group_id = {g} AND r.customer = d.customer"
                f" WHERE r.customer IS NULL OR r.matched <> d.matched OR r.version <> {version:d}"
                " OR COALESCE(r.due, -1) <> COALESCE(d.due, -1)"
            )
            if self._scope is None:
                run(
                    f"DELETE FROM {rules} WHERE group_id = {g} AND ("  # noqa: S608 - our own quoted names
                    f"NOT EXISTS (SELECT 1 FROM {t['diff']} AS d WHERE d.customer = {rules}.customer)"
                    f" OR EXISTS (SELECT 1 FROM {t['writes']} AS w WHERE w.customer = {rules}.customer))"
                )
            else:
                run(
                    f"DELETE FROM {rules} WHERE group_id = {g} AND customer IN ("  # noqa: S608 - our own quoted names
                    f"SELECT p.customer FROM {t['scope']} AS p"
                    f" WHERE NOT EXISTS (SELECT 1 FROM {t['diff']} AS d WHERE d.customer = p.customer)"
                    f" UNION ALL SELECT customer FROM {t['writes']})"
                )
            run(
                f"INSERT INTO {rules} (group_id, customer, matched, version, since, evaluated_at, due)"  # noqa: S608
                f" SELECT {g}, customer, matched, {version:d}, since, {at:d}, due FROM {t['writes']}"
            )
            found = conn.exec_driver_sql(f"SELECT customer, before, after FROM {t['changed']}").all()  # noqa: S608
            if not keep:
                run(f"DELETE FROM {t['staged']} WHERE group_id = {g}")  # noqa: S608 - our own quoted names
        return [(decode_id(key), before, after) for key, before, after in found]

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
