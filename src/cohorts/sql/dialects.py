"""SQL dialects: what differs between the databases cohorts writes SQL for, as small objects.

The compilers (:mod:`cohorts.sql.compiler`, :mod:`cohorts.sql.host`) decide what a
condition means, from :mod:`cohorts.semantics`; a dialect only says how each piece
is spelled: a bound parameter with its type, a text test, a read of a shadow
field, a semi-join, a bulk insert. There is one instance per dialect, found by
name with :func:`dialect`, and no ``if postgresql`` anywhere else.

Adding a database is one subclass of :class:`Dialect` in its own module,
registered with :func:`register`, plus its entry in the differential tests
(``docs/repositories.md`` lists the steps).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

import sqlalchemy as sa

from ..errors import RuleError
from ..pattern import Pattern
from ..values import FALSE_WORDS, TRUE_WORDS, Kind, exact_number

__all__ = ["WRITES", "Dialect", "PostgreSQL", "SQLite", "database_file", "dialect", "register"]

#: The execution option that marks a connection's transactions as writes: on SQLite they take the
#: database's write lock as they begin (the host's own transactions on the same engine do not).
WRITES = "cohorts_writes"

ParamStyle: TypeAlias = Literal["qmark", "pyformat", "named"]
Test: TypeAlias = Callable[[str], str]
"""A test of a value: given the SQL of the value, SQL true when it passes."""
Watched: TypeAlias = tuple[str, str, str]
"""A table whose writes triggers log: the triggers' name, the table, the column of the customer id."""


class Binder(Protocol):
    """Binds a value as a parameter and returns its marker in the SQL text (cast to ``cast`` where typed)."""

    def __call__(self, value: Any, cast: str | None = None) -> str: ...


# SQL types of the values a test compares, on databases whose parameters need one.
SQL_TYPES = {
    Kind.TEXT: "TEXT",
    Kind.PHONE: "TEXT",
    Kind.NUMBER: "NUMERIC",
    Kind.BOOLEAN: "BOOLEAN",
    Kind.TIME: "BIGINT",
}
COMPARISONS = {"==": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def quote(name: str) -> str:
    """``name`` (optionally ``schema.table``) as quoted SQL identifiers."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def sql_type(kind: Kind | None, default: str = "NUMERIC") -> str:
    """The SQL type of values of ``kind``."""
    return SQL_TYPES.get(kind, default) if kind is not None else default


class HostQuery(Protocol):
    """What a dialect reads of a host-table query being compiled."""

    @property
    def tz_name(self) -> str: ...
    region: str

    def bind(self, value: Any, cast: str | None = None) -> str: ...

    def alias(self, prefix: str) -> str: ...


class Dialect:
    """How one database spells what the compilers and stores need. Subclasses override what differs."""

    name: ClassVar[str]
    param_style: ClassVar[ParamStyle]
    explain_prefix: ClassVar[str]
    typed_parameters: ClassVar[bool] = False
    """Whether parameters are cast to their SQL type (PostgreSQL infers nothing from an untyped parameter)."""
    max_nesting: ClassVar[int] = 64
    """How deep AND/OR groups nest in one expression before the compiler splits them out."""
    max_width: ClassVar[int] = 0
    """How many items one AND/OR joins before the compiler groups them (0: any number)."""
    max_tree: ClassVar[int] = 0
    """How deep the database's expression tree may grow, counting each item of a flat AND/OR (0: no limit)."""
    max_list: ClassVar[int] = 500
    """How many values an ``in`` list binds one by one; longer lists are bound as one parameter."""
    host_native_times: ClassVar[bool] = False
    """Whether host-table times are read as the database's own time values (else as microseconds)."""
    host_phones: ClassVar[bool] = False
    """Whether :meth:`host_read` reads phone numbers (else they are read from a table of E.164 numbers)."""
    advisory_locks: ClassVar[bool] = False
    """Whether the database has session-level advisory locks (``pg_advisory_lock``), which the campaign
    runner lock uses; without them the lock is a file lock beside the database file."""
    row_locks: ClassVar[bool] = False
    """Whether a transaction can lock single rows (``FOR UPDATE SKIP LOCKED``): a campaign claim then
    holds its row's lock while the handler runs; without them a claimed row is marked running."""

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"

    # -- parameters

    def parameter(self, value: Any) -> Any:
        """A value as bound: as it is, where the database compares numbers as Python does."""
        return value

    def typed(self, mark: str, cast: str | None) -> str:
        """A parameter marker with its type, where the database needs one."""
        return f"CAST({mark} AS {cast})" if cast is not None and self.typed_parameters else mark

    # -- tests of text values (folded at write time: only comparisons are left to SQL)

    def compare(self, x: str, symbol: str, value: str, sql_type: str) -> str:
        """``x <symbol> value`` where symbol is one of ``== < <= > >=``; text orders by code point."""
        return f"{x} {COMPARISONS[symbol]} {value}"

    # -- sums and averages: compared as exact decimals (cohorts.values.exact_decimal)

    def exact_sum(self, x: str) -> str:
        """The exact sum of the numbers ``x`` over a group's rows (NULLs skipped), as :meth:`exact_compare`
        reads it: NUMERIC, where the numbers are (their stored text read as a decimal)."""
        return f"sum({x})"

    def exact_compare(self, total: str, symbol: str, constant: str, times: str | None) -> str:
        """SQL true when ``total`` (from :meth:`exact_sum`) ``<symbol>`` the decimal ``constant`` (bound as
        decimal text) times ``times`` (None: once), without rounding: an average is compared as
        ``sum <symbol> constant * count``."""
        scaled = constant if times is None else f"{constant} * {times}"
        return f"{total} {COMPARISONS[symbol]} {scaled}"

    def has(self, x: str, needle: str) -> str:
        raise NotImplementedError

    def starts(self, x: str, prefix: str) -> str:
        raise NotImplementedError

    def ends(self, x: str, suffix: str) -> str:
        raise NotImplementedError

    def pattern_source(self, pattern: Pattern) -> str:
        """What :meth:`matches` binds for a ``matches`` pattern: its text for the engine of this dialect."""
        raise NotImplementedError

    def matches(self, x: str, pattern: str) -> str:
        """SQL true when the bound pattern (from :meth:`pattern_source`) matches somewhere in text ``x``."""
        raise NotImplementedError

    # -- reading the shadow column (JSON of typed readings; see cohorts.sql.storage)

    def shadow_field(self, bind: Binder, column: str, key: str, field: str, kind: Kind | None) -> str:
        """The typed reading ``field`` of attribute ``key`` (NULL when unknown)."""
        raise NotImplementedError

    def shadow_present(self, bind: Binder, column: str, key: str, field: str | None) -> str:
        """SQL true when the shadow has attribute ``key`` (or its ``field``)."""
        raise NotImplementedError

    def shadow_elements(
        self, bind: Binder, alias: str, column: str, key: str, field: str, kind: Kind | None, test: Test
    ) -> str:
        """SQL true when an element of the list reading ``field`` passes ``test``."""
        raise NotImplementedError

    def shadow_contains(self, bind: Binder, column: str, documents: Sequence[object]) -> str | None:
        """SQL true when the shadow contains one of ``documents`` (None: no faster form than the plain test)."""
        return None

    # -- sets of keys

    def semi(self, key: str, select: str, alias: str, negate: bool) -> str:
        """SQL true when ``key`` is (not) among the ``customer_pk`` values that ``select`` returns."""
        return f"{key} {'NOT IN' if negate else 'IN'} ({select})"

    def in_texts(self, bind: Binder, x: str, values: Sequence[str]) -> str:
        """SQL true when the text ``x`` is one of ``values`` (one parameter, however many values)."""
        return self.in_keys(bind, x, self.key_list(list(values)), "TEXT")

    def in_keys(self, bind: Binder, x: str, keys: object, sql_type: str) -> str:
        """SQL true when ``x`` (of ``sql_type``) is among ``keys``, bound as one parameter made by :meth:`key_list`."""
        raise NotImplementedError

    def in_list(self, bind: Binder, x: str, values: Sequence[Any], cast: str) -> str:
        """SQL true when ``x`` is one of ``values`` (sorted constants): one parameter each, or one for a long list."""
        if len(values) <= self.max_list:
            return f"{x} IN ({', '.join(bind(v, cast) for v in values)})"
        return self.in_keys(bind, x, self.key_list(list(values)), cast)

    def key_list(self, keys: list[Any]) -> object:
        """Many keys as the value of one parameter."""
        return keys

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """``column IN values`` as a SQLAlchemy clause bound as one parameter, however many the values
        (an expanding ``IN`` costs a bind parameter, and its rendering, per value)."""
        return column.in_(list(values))

    # -- host tables: values read from the host's own columns (see cohorts.sql.host)

    def json_at(self, bind: Binder, column: str, keys: Sequence[str]) -> str:
        """The JSON value of ``column`` at nested ``keys``."""
        raise NotImplementedError

    def host_read(self, q: HostQuery, source: str, is_json: bool, reading: str) -> str:
        """``source`` (a column, or JSON from :meth:`json_at`) read as :mod:`cohorts.values` reads it.

        ``reading`` is a shadow field (t, n, b, m, p, y, mo, d, w) or ``k`` for "known"; the
        result is NULL when the value is unknown. Raise RuleError for readings the database
        cannot do. A JSON array or object reads as NULL (but is known).
        """
        raise NotImplementedError

    def host_part(self, q: HostQuery, time: str, reading: str) -> str:
        """The year, month, day or ISO weekday (``reading``) of ``time`` as :meth:`host_read` reads times."""
        raise NotImplementedError

    def host_elements(self, q: HostQuery, source: str, reading: str, test: Test) -> str:
        """SQL true when the JSON value ``source`` is an array with an element whose reading passes ``test``."""
        raise NotImplementedError

    def host_time(self, bind: Binder, value: Any) -> str:
        """A time parameter as :meth:`host_read` reads times, where ``host_native_times``."""
        raise NotImplementedError

    def host_connection(self, conn: sa.Connection) -> None:
        """Ready a connection for host-table queries (functions the SQL calls)."""

    # -- statements of the repository and the stores

    def prepare(self, engine: sa.Engine) -> None:
        """Set up a new engine (connection settings)."""

    # -- the change log (a table of ``seq`` and ``customer``; see cohorts.sql.repository)

    def prepare_change_log(self, conn: sa.Connection, table: str) -> None:
        """Add what the dialect's change log needs beyond ``seq`` and ``customer``."""

    def change_position(self, conn: sa.Connection, table: str) -> str:
        """The position after every change committed so far."""
        return str(conn.exec_driver_sql(f"SELECT coalesce(max(seq), 0) FROM {table}").scalar_one())  # noqa: S608 - ours

    def changes_since(self, conn: sa.Connection, table: str, position: str) -> tuple[list[str], str]:
        """The customers of the changes after ``position``, and the position after them.

        Writes are serial here (one writer at a time commits in ``seq`` order), so the position is a ``seq``.
        """
        rows = conn.exec_driver_sql(
            f"SELECT seq, customer FROM {table} WHERE seq > {self.placeholder('p')} ORDER BY seq",  # noqa: S608 - ours
            {"p": int(position)},
        ).all()
        return [row[1] for row in rows], str(rows[-1][0]) if rows else position

    def forget_changes(self, conn: sa.Connection, table: str, position: str) -> None:
        """Delete the changes before ``position``."""
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE seq <= {self.placeholder('p')}", {"p": int(position)})  # noqa: S608 - ours

    # -- triggers that log the host's writes in a HostRepository's change log

    def install_change_triggers(self, conn: sa.Connection, log: str, watched: Sequence[Watched]) -> None:
        """Install (or replace) triggers that log, in the change log ``log``, the customer id of every row
        written to each watched table (deletes included), as :func:`cohorts.sql.storage.encode_id` writes it.

        Each of ``watched`` is (name, table, column): the triggers' names start with ``name``, and ``column``
        of ``table`` holds the customer id. Nothing is installed when one of them cannot be watched.
        """
        raise NotImplementedError(
            f"change-log triggers are offered on {' and '.join(names_with_triggers())}; on {self.name}, give the"
            " tables updated_at watermarks (HostTable(..., updated_at=...), HostEvents(..., updated_at=...)) and"
            " call HostRepository.changed(*ids, connection=conn) for deletes and unwatermarked writes"
        )

    def remove_change_triggers(self, conn: sa.Connection, watched: Sequence[Watched]) -> None:
        """Remove what :meth:`install_change_triggers` installed for ``watched``; missing ones are skipped."""
        self.install_change_triggers(conn, "", watched)  # the same refusal

    def scope_id(self, alias: str, sql_type: str | None) -> str:
        """The id of a row ``alias`` of a group store's scope table (``id`` as text, ``int_id``), typed as
        the host's id column (of ``sql_type``, None when it declares none) holds it."""
        return f"CAST({alias}.id AS {sql_type})" if sql_type else f"{alias}.id"

    def empty(self, conn: sa.Connection, table: str) -> None:
        """Delete every row of the (quoted) table, a temporary one emptied many times in a transaction."""
        conn.exec_driver_sql(f"DELETE FROM {table}")  # noqa: S608 - a quoted name of ours

    def analyze(self, conn: sa.Connection, table: str) -> None:
        """Give the planner the size of a (quoted) temporary table just filled (nothing where it looks)."""

    def lock(self, conn: sa.Connection, key: int) -> None:
        """Hold a lock on ``key`` until the transaction ends (nothing where writes are serial anyway)."""

    def busy(self, error: Exception, *, conflict: bool = False) -> bool:
        """Whether ``error`` came from a concurrent transaction, so the work can be tried again: the
        database was busy, a deadlock or serialisation failure, and with ``conflict`` a unique key
        that another transaction inserted meanwhile."""
        return False

    def placeholder(self, name: str, cast: str | None = None) -> str:
        """A named placeholder for ``exec_driver_sql`` with a dict of parameters."""
        raise NotImplementedError

    def insert_many(
        self, conn: sa.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
        or_ignore: bool = False,
    ) -> None:
        """Insert many rows with the driver's executemany (``or_ignore``: skip rows whose key is stored)."""
        if not rows:
            return
        marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        quote = conn.dialect.identifier_preparer.quote
        sql = (
            f"{self.insert_verb(or_ignore)} INTO {quote(table)} ({', '.join(quote(c) for c in columns)})"
            f" VALUES ({', '.join(marker for _ in columns)}){self.insert_suffix(or_ignore)}"
        )
        conn.exec_driver_sql(sql, list(rows))

    def insert_verb(self, or_ignore: bool) -> str:
        return "INSERT"

    def insert_suffix(self, or_ignore: bool) -> str:
        return " ON CONFLICT DO NOTHING" if or_ignore else ""

    def bulk_load(self, conn: sa.Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Load many new rows as fast as the database takes them."""
        self.insert_many(conn, table, columns, rows)

    def upsert_statement(self, table: sa.Table) -> Any:
        """An ``INSERT`` that can take ``.on_conflict_do_nothing()`` / ``.on_conflict_do_update()``."""
        raise NotImplementedError

    def allocate(self, conn: sa.Connection, table: str, meta: str, count: int) -> list[int]:
        """``count`` new primary keys of ``table`` (column ``pk``), in order."""
        raise NotImplementedError

    def claim_rows(self, select: sa.Select[Any], table: sa.Table, where: Sequence[Any], columns: Sequence[Any]) -> Any:
        """A statement that locks the rows ``where`` selects for this transaction and returns ``columns``;
        rows another transaction holds are skipped or waited for, as the database can."""
        raise NotImplementedError


def _plain_json_key(key: str) -> bool:
    """Whether a JSON1 path can name ``key`` as ``."key"``: printable ASCII without ``"`` or ``\\``."""
    return key.isascii() and key.isprintable() and '"' not in key and "\\" not in key


class SQLite(Dialect):
    """SQLite 3.35+ with JSON1: the embedded default. Shadows are JSON text read with ``json_extract``."""

    name = "sqlite"
    param_style = "qmark"
    explain_prefix = "EXPLAIN QUERY PLAN "
    max_nesting = 10  # SQLite's parser stack (YYSTACKDEPTH) is 100 entries in common builds
    max_width = 50
    max_tree = 400  # SQLITE_MAX_EXPR_DEPTH is 1000, and a flat OR of n items is n deep
    host_phones = True  # cohorts_read() parses them with phonenumbers

    def exact_sum(self, x: str) -> str:
        # SQLite keeps floats: cohorts' own aggregate adds their decimals and gives the sum as text.
        return f"cohorts_sum({x})"

    def exact_compare(self, total: str, symbol: str, constant: str, times: str | None) -> str:
        return f"cohorts_compare({total}, {constant}, {times or 'NULL'}) {COMPARISONS[symbol]} 0"

    def has(self, x: str, needle: str) -> str:
        return f"instr({x}, {needle}) > 0"

    def starts(self, x: str, prefix: str) -> str:
        return f"substr({x}, 1, length({prefix})) = {prefix}"

    def ends(self, x: str, suffix: str) -> str:
        return f"substr({x}, -length({suffix})) = {suffix}"

    def pattern_source(self, pattern: Pattern) -> str:
        return pattern.text  # cohorts_matches() checks and compiles it as the evaluator does

    def matches(self, x: str, pattern: str) -> str:
        return f"cohorts_matches({pattern}, {x})"

    @staticmethod
    def _path(key: str, field: str | None) -> str:
        return f'$."{key}"' + (f".{field}" if field else "")

    def shadow_field(self, bind: Binder, column: str, key: str, field: str, kind: Kind | None) -> str:
        return f"json_extract({column}, {bind(self._path(key, field))})"

    def shadow_present(self, bind: Binder, column: str, key: str, field: str | None) -> str:
        return f"json_type({column}, {bind(self._path(key, field))}) IS NOT NULL"

    def shadow_elements(
        self, bind: Binder, alias: str, column: str, key: str, field: str, kind: Kind | None, test: Test
    ) -> str:
        path = bind(self._path(key, field))
        return f"EXISTS (SELECT 1 FROM json_each({column}, {path}) AS {alias} WHERE {test(f'{alias}.value')})"  # noqa: S608 - names are ours; values are bound

    def in_keys(self, bind: Binder, x: str, keys: object, sql_type: str) -> str:
        return f"{x} IN (SELECT value FROM json_each({bind(keys)}))"  # noqa: S608 - bound values

    def key_list(self, keys: list[Any]) -> object:
        return json.dumps(keys)

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        each = sa.func.json_each(sa.bindparam(None, json.dumps(list(values)), type_=sa.Text)).table_valued("value")
        return column.in_(sa.select(each.c.value).scalar_subquery())

    def json_at(self, bind: Binder, column: str, keys: Sequence[str]) -> str:
        """The JSON at ``keys``: a JSON1 path (``-> '$."a"."b"'``) for plain keys, a key lookup otherwise.

        A path cannot quote ``"`` and SQLite compares a path's label with the key
        as the JSON text spells it (escapes and all), so a key with a quote, a
        backslash or a character other than printable ASCII is found by
        ``json_each``, whose ``key`` is the decoded text.
        """
        source, plain = column, []
        for key in keys:
            if _plain_json_key(key):
                plain.append(key)
                continue
            source = self._json_path(bind, source, plain)
            plain = []
            found = f"(SELECT json_quote(value) FROM json_each({source}) WHERE key = {bind(key)})"  # noqa: S608 - bound
            source = f"({found})"
        return self._json_path(bind, source, plain)

    @staticmethod
    def _json_path(bind: Binder, source: str, keys: Sequence[str]) -> str:
        if not keys:
            return source
        path = "$" + "".join(f'."{key}"' for key in keys)
        return f"({source} -> {bind(path)})"

    def host_read(self, q: HostQuery, source: str, is_json: bool, reading: str) -> str:
        function = "cohorts_json" if is_json else "cohorts_read"
        return f"{function}({source}, {q.bind(reading)}, {q.bind(q.tz_name)}, {q.bind(q.region)})"

    def host_part(self, q: HostQuery, time: str, reading: str) -> str:
        return f"cohorts_part({time}, {q.bind(reading)}, {q.bind(q.tz_name)})"

    def host_elements(self, q: HostQuery, source: str, reading: str, test: Test) -> str:
        alias = q.alias("j")
        readings = f"cohorts_json_list({source}, {q.bind(reading)}, {q.bind(q.tz_name)}, {q.bind(q.region)})"
        return f"EXISTS (SELECT 1 FROM json_each({readings}) AS {alias} WHERE {test(f'{alias}.value')})"  # noqa: S608 - names are ours; values are bound

    def host_connection(self, conn: sa.Connection) -> None:
        from . import functions

        functions.register(conn)

    def prepare(self, engine: sa.Engine) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself.
        from . import functions

        # How long a transaction waits for another's write lock: the URL's ``?timeout=SECONDS`` (pysqlite's
        # own option), else 10 s.
        busy_ms = round(1000 * float(engine.url.query.get("timeout", _BUSY_SECONDS)))  # type: ignore[arg-type]

        @sa.event.listens_for(engine, "connect")
        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            functions.register_own(dbapi_connection)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
            cursor.execute("PRAGMA cache_size = -65536")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def begin(connection: sa.Connection) -> None:
            # A transaction that reads and then writes cannot wait for the write lock: its upgrade fails
            # at once ("database is locked") if another connection wrote since it read. So cohorts'
            # writing transactions take the lock as they begin, waiting up to the busy timeout.
            writes = connection.get_execution_options().get(WRITES, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

        if engine.url.database in (None, "", ":memory:") or "mode=memory" in str(engine.url):
            # Disposing of an in-memory database's connection would drop the database: set it up in place.
            with engine.connect() as conn:
                connect(conn.connection.dbapi_connection, None)
        else:
            engine.dispose()  # connections made before the listeners would lack them

    def placeholder(self, name: str, cast: str | None = None) -> str:
        return f":{name}"

    def insert_verb(self, or_ignore: bool) -> str:
        return "INSERT OR IGNORE" if or_ignore else "INSERT"

    def insert_suffix(self, or_ignore: bool) -> str:
        return ""

    def upsert_statement(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def allocate(self, conn: sa.Connection, table: str, meta: str, count: int) -> list[int]:
        # Take SQLite's write lock (a write to the meta table) before reading the highest pk.
        conn.exec_driver_sql(f"UPDATE {meta} SET value = value WHERE key = 'schema_version'")  # noqa: S608 - ours
        top = conn.exec_driver_sql(f"SELECT coalesce(max(pk), 0) FROM {table}").scalar_one()  # noqa: S608 - ours
        return list(range(top + 1, top + 1 + count))

    _TRIGGER_EVENTS = ("i", "u", "d")  # the suffixes of the three triggers of a (table, column)

    def install_change_triggers(self, conn: sa.Connection, log: str, watched: Sequence[Watched]) -> None:
        # SQLite cannot call cohorts' encoder: each value is logged with the prefix of its storage class,
        # ``i:`` for an integer and ``s:`` for anything else, as Python reads it (integer or text ids).
        # It has no TRUNCATE; a DELETE without WHERE fires the row triggers.
        for _, table, _ in watched:
            if table.rpartition(".")[0] not in ("", "main"):
                raise NotImplementedError(
                    f"on SQLite, triggers are offered on tables of the main database, not {table}"
                    " (an attached database's triggers cannot write the change log): use updated_at watermarks"
                    " or HostRepository.changed there"
                )
        self.remove_change_triggers(conn, watched)
        target = quote(log)
        for name, table, column in watched:
            c, t = quote(column), quote(table.rpartition(".")[2])

            def log_row(row: str, when: str, c: str = c) -> str:
                key = f"(CASE typeof({row}.{c}) WHEN 'integer' THEN 'i:' ELSE 's:' END || {row}.{c})"
                return f"INSERT INTO {target} (customer) SELECT {key} WHERE {when};"

            bodies = {
                "i": f"AFTER INSERT ON {t} BEGIN {log_row('NEW', f'NEW.{c} IS NOT NULL')} END",
                "u": f"AFTER UPDATE ON {t} BEGIN {log_row('OLD', f'OLD.{c} IS NOT NULL')}"
                f" {log_row('NEW', f'NEW.{c} IS NOT NULL AND NEW.{c} IS NOT OLD.{c}')} END",
                "d": f"AFTER DELETE ON {t} BEGIN {log_row('OLD', f'OLD.{c} IS NOT NULL')} END",
            }
            for event in self._TRIGGER_EVENTS:
                conn.exec_driver_sql(f"CREATE TRIGGER {quote(f'{name}_{event}')} {bodies[event]}")

    def remove_change_triggers(self, conn: sa.Connection, watched: Sequence[Watched]) -> None:
        for name, _, _ in watched:
            for event in self._TRIGGER_EVENTS:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(f'{name}_{event}')}")

    def scope_id(self, alias: str, sql_type: str | None) -> str:
        # A column's values keep their own types (an undeclared id column holds integers and text).
        return f"CASE WHEN {alias}.int_id THEN CAST({alias}.id AS INTEGER) ELSE {alias}.id END"

    def busy(self, error: Exception, *, conflict: bool = False) -> bool:
        return "locked" in str(error)

    def claim_rows(self, select: sa.Select[Any], table: sa.Table, where: Sequence[Any], columns: Sequence[Any]) -> Any:
        # The first write takes SQLite's database lock, held until the outcome commits.
        return sa.update(table).where(*where).values({table.c.attempts: table.c.attempts}).returning(*columns)


_BUSY_SECONDS = 10.0  # how long a SQLite transaction waits for the write lock, unless the URL says

_PG_PARTS = {"y": "YEAR", "mo": "MONTH", "d": "DAY", "w": "ISODOW"}

# ISO text PostgreSQL reads as a time, exactly the instants Python's fromisoformat gives:
# a real calendar date (years 0001-9999), HH:MM[:SS[.ffffff]], an offset Z or ±HH:MM up to 15:59.
_PG_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_PG_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_PG_LEAP_DAY = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29"
_PG_DATE = rf"(?:{_PG_YEAR}-{_PG_MONTH_DAY}|{_PG_LEAP_DAY})"
_PG_CLOCK = r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_PG_DATE_RE = rf"^{_PG_DATE}$"
_PG_NAIVE_RE = rf"^{_PG_DATE}{_PG_CLOCK}$"
_PG_AWARE_RE = rf"^{_PG_DATE}{_PG_CLOCK}(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$"
# Numeric text PostgreSQL reads as to_number does (ASCII digits, exponents up to 99).
_PG_NUMBER_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?$"


def _exact(document: Any) -> Any:
    """A JSON document with its floats as :func:`cohorts.values.exact_number` writes them in shadows."""
    if document.__class__ is float:
        return exact_number(document)
    if isinstance(document, dict):
        return {key: _exact(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_exact(value) for value in document]
    return document


def _pg_fold(text: str) -> str:
    """SQL folding the PostgreSQL text ``text`` as values.py folds a string: trimmed, NFC, lower case.

    ASCII text, nearly all of it, takes the cheap arm: byte-wise ``lower`` is ICU's there, and
    normalising is the identity, which saves most of the cost per row on a host's table. Both
    arms carry the "C" collation, so the result compares by code point, as Python compares.
    """
    trimmed = f"btrim({text})"
    return (
        f"(CASE WHEN octet_length({text}) = char_length({text})"
        f" THEN NULLIF(lower({trimmed} COLLATE \"C\"), '')"
        f" ELSE NULLIF(lower(normalize({trimmed}, NFC) COLLATE \"und-x-icu\") COLLATE \"C\", '') END)"
    )


_COPY_ROWS = 50  # from this many rows, PostgreSQL inserts go through COPY


class PostgreSQL(Dialect):
    """PostgreSQL 13+ through psycopg 3: shadows are JSONB with a GIN index, bulk loads use COPY."""

    name = "postgresql"
    param_style = "pyformat"
    explain_prefix = "EXPLAIN "
    typed_parameters = True
    host_native_times = True
    advisory_locks = True
    row_locks = True

    def parameter(self, value: Any) -> Any:
        """Floats of 2**53 and more bound as the integers they are, as the shadow writes them (exact numerics)."""
        if value.__class__ is float:
            return exact_number(value)
        if value.__class__ is list:
            return [exact_number(v) if v.__class__ is float else v for v in value]
        return value

    def compare(self, x: str, symbol: str, value: str, sql_type: str) -> str:
        collate = ' COLLATE "C"' if sql_type == "TEXT" and symbol != "==" else ""  # code-point order, as Python
        return f"{x}{collate} {COMPARISONS[symbol]} {value}"

    def has(self, x: str, needle: str) -> str:
        return f"strpos({x}, {needle}) > 0"

    def starts(self, x: str, prefix: str) -> str:
        return f"starts_with({x}, {prefix})"

    def ends(self, x: str, suffix: str) -> str:
        return f"right({x}, length({suffix})) = {suffix}"

    def pattern_source(self, pattern: Pattern) -> str:
        return pattern.posix

    def matches(self, x: str, pattern: str) -> str:
        return f"({x} ~ {pattern})"

    def shadow_field(self, bind: Binder, column: str, key: str, field: str, kind: Kind | None) -> str:
        text = f"({column} #>> {bind([key, field], 'TEXT[]')})"
        cast = sql_type(kind)
        return text if cast == "TEXT" else f"CAST({text} AS {cast})"

    def shadow_present(self, bind: Binder, column: str, key: str, field: str | None) -> str:
        return f"({column} #> {bind([key, field] if field else [key], 'TEXT[]')}) IS NOT NULL"

    def shadow_elements(
        self, bind: Binder, alias: str, column: str, key: str, field: str, kind: Kind | None, test: Test
    ) -> str:
        cast = sql_type(kind, "TEXT")
        value = f"{alias}.v" if cast == "TEXT" else f"CAST({alias}.v AS {cast})"
        path = bind([key, field], "TEXT[]")
        return (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({column} #> {path}) AS {alias}(v)"  # noqa: S608 - names are ours; values are bound
            f" WHERE {test(value)})"
        )

    def shadow_contains(self, bind: Binder, column: str, documents: Sequence[object]) -> str | None:
        if not documents:
            return "(1 = 0)"
        return "(" + " OR ".join(f"{column} @> {bind(json.dumps(_exact(d)), 'JSONB')}" for d in documents) + ")"

    def semi(self, key: str, select: str, alias: str, negate: bool) -> str:
        return (
            f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM ({select}) AS {alias}"  # noqa: S608 - names are ours; values are bound
            f" WHERE {alias}.customer_pk = {key})"
        )

    def in_keys(self, bind: Binder, x: str, keys: object, sql_type: str) -> str:
        return f"{x} = ANY({bind(keys, sql_type + '[]')})"

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        from sqlalchemy.dialects.postgresql import ARRAY

        values = list(values)
        item: Any = column.type
        if isinstance(item, sa.types.NullType):  # a lightweight column: the values say what the array holds
            whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            item = sa.BigInteger() if values and whole else sa.Text()
        return column == sa.any_(sa.bindparam(None, values, type_=ARRAY(item)))

    def in_list(self, bind: Binder, x: str, values: Sequence[Any], cast: str) -> str:
        def number(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        if len(values) > self.max_list and len({type(v) for v in values if number(v)}) > 1:
            values = [str(v) if number(v) else v for v in values]  # one array type: numerals cast to NUMERIC
        return super().in_list(bind, x, values, cast)

    def json_at(self, bind: Binder, column: str, keys: Sequence[str]) -> str:
        return f"(CAST({column} AS JSONB) #> {bind(list(keys), 'TEXT[]')})"

    def host_read(self, q: HostQuery, source: str, is_json: bool, reading: str) -> str:
        if reading == "p":
            raise RuleError(
                "phone numbers are not read on PostgreSQL host tables here: conditions on a customer's phone"
                " attribute are answered by a cohorts.HostRepository, which keeps its E.164 numbers in a table"
                " of its own (HostTable.select(..., phone_table=repository.phone_table) reads it too); an"
                " event's field cannot be a phone number"
            )
        if reading in _PG_PARTS:
            return self.host_part(q, self.host_read(q, source, is_json, "m"), reading)
        return self._json_reading(q, source, reading) if is_json else self._column_reading(source, reading)

    @staticmethod
    def _column_reading(column: str, reading: str) -> str:
        match reading:
            case "k":
                return f"NULLIF(btrim(CAST({column} AS TEXT)), '')"
            case "t":
                return _pg_fold(f"CAST({column} AS TEXT)")
            case "n":
                return f"CAST({column} AS NUMERIC)"
            case "b":
                return f"CAST({column} AS BOOLEAN)"
        assert reading == "m"
        return f"CAST({column} AS TIMESTAMPTZ)"  # a plain cast: an index on a timestamptz column serves it

    def _json_reading(self, q: HostQuery, v: str, reading: str) -> str:
        """A ``jsonb`` value ``v`` read as values.py reads the value ``json.loads`` gives."""
        kind = f"jsonb_typeof({v})"
        text = f"({v} #>> '{{}}')"
        trimmed = f"btrim({text})"
        match reading:
            case "k":
                k = q.alias("k")
                element = (
                    f"jsonb_typeof({k}.x) IN ('number', 'boolean', 'object')"
                    f" OR (jsonb_typeof({k}.x) = 'string' AND btrim({k}.x #>> '{{}}') <> '')"
                    f" OR (jsonb_typeof({k}.x) = 'array' AND jsonb_array_length({k}.x) > 0)"
                )
                any_known = f"EXISTS (SELECT 1 FROM jsonb_array_elements({v}) AS {k}(x) WHERE {element})"  # noqa: S608 - names are ours; values are bound
                return (
                    f"(CASE {kind} WHEN 'string' THEN NULLIF({trimmed}, '') WHEN 'number' THEN 'number'"
                    f" WHEN 'boolean' THEN 'boolean' WHEN 'object' THEN 'object'"
                    f" WHEN 'array' THEN CASE WHEN {any_known} THEN 'array' END END)"
                )
            case "t":
                return f"(CASE WHEN {kind} IN ('string', 'number') THEN {_pg_fold(text)} END)"
            case "n":
                number = q.bind(_PG_NUMBER_RE, "TEXT")
                return (
                    f"(CASE {kind} WHEN 'number' THEN CAST({text} AS NUMERIC)"
                    f" WHEN 'string' THEN CASE WHEN {trimmed} ~ {number} THEN CAST({trimmed} AS NUMERIC) END END)"
                )
            case "b":
                word = f"lower({trimmed})"
                yes, no = q.bind(sorted(TRUE_WORDS), "TEXT[]"), q.bind(sorted(FALSE_WORDS), "TEXT[]")
                return (
                    f"(CASE {kind} WHEN 'boolean' THEN CAST({text} AS BOOLEAN)"
                    f" WHEN 'number' THEN CASE {text} WHEN '1' THEN TRUE WHEN '0' THEN FALSE END"
                    f" WHEN 'string' THEN CASE WHEN {word} = ANY({yes}) THEN TRUE WHEN {word} = ANY({no}) THEN FALSE"
                    " END END)"
                )
        assert reading == "m"
        zone = q.bind(q.tz_name, "TEXT")
        date, naive, aware = (q.bind(r, "TEXT") for r in (_PG_DATE_RE, _PG_NAIVE_RE, _PG_AWARE_RE))
        return (
            f"(CASE WHEN {kind} = 'string' THEN CASE"
            f" WHEN {trimmed} ~ {date} THEN CAST(CAST({trimmed} AS DATE) AS TIMESTAMP) AT TIME ZONE {zone}"
            f" WHEN {trimmed} ~ {naive} THEN CAST({trimmed} AS TIMESTAMP) AT TIME ZONE {zone}"
            f" WHEN {trimmed} ~ {aware} THEN CAST({trimmed} AS TIMESTAMPTZ) END END)"
        )

    def host_part(self, q: HostQuery, time: str, reading: str) -> str:
        zone = q.bind(q.tz_name, "TEXT")
        return f"CAST(EXTRACT({_PG_PARTS[reading]} FROM {time} AT TIME ZONE {zone}) AS NUMERIC)"

    def host_elements(self, q: HostQuery, source: str, reading: str, test: Test) -> str:
        alias = q.alias("j")
        array = f"CASE WHEN jsonb_typeof({source}) = 'array' THEN {source} END"
        value = self._json_reading(q, f"{alias}.x", reading)
        return f"EXISTS (SELECT 1 FROM jsonb_array_elements({array}) AS {alias}(x) WHERE {test(value)})"  # noqa: S608 - names are ours; values are bound

    def host_time(self, bind: Binder, value: Any) -> str:
        return bind(value, "TIMESTAMPTZ")  # times are timestamptz values on host tables, not microseconds

    def empty(self, conn: sa.Connection, table: str) -> None:
        # Deleted rows stay until a vacuum, and autovacuum never visits temporary tables: every later
        # scan would read them again. TRUNCATE gives the table new, empty storage.
        conn.exec_driver_sql(f"TRUNCATE {table}")

    def analyze(self, conn: sa.Connection, table: str) -> None:
        # Autovacuum never analyzes temporary tables: without this the planner guesses their size and
        # may scan one once per customer.
        conn.exec_driver_sql(f"ANALYZE {table}")

    def lock(self, conn: sa.Connection, key: int) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    # serialization_failure, deadlock_detected; unique_violation
    _TRANSIENT: ClassVar[frozenset[str]] = frozenset({"40001", "40P01"})

    def busy(self, error: Exception, *, conflict: bool = False) -> bool:
        # SQLAlchemy wraps the driver's error (``orig``); COPY raises the driver's own.
        state = getattr(getattr(error, "orig", None) or error, "sqlstate", None)
        return state in self._TRANSIENT or (conflict and state == "23505")

    # Writers commit in any order, so a seq is no position: a transaction that took seq 7 may commit
    # after one that took seq 8. Each change row records its transaction (xid8); every transaction
    # below the snapshot's xmin has ended, so "changes of transactions from xmin on" misses none.

    def prepare_change_log(self, conn: sa.Connection, table: str) -> None:
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id()"
        )
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {table}_xid ON {table} (xid)")

    def change_position(self, conn: sa.Connection, table: str) -> str:
        return str(conn.exec_driver_sql("SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)").scalar_one())

    def changes_since(self, conn: sa.Connection, table: str, position: str) -> tuple[list[str], str]:
        now = self.change_position(conn, table)
        rows = conn.exec_driver_sql(
            f"SELECT customer FROM {table} WHERE xid >= CAST(%(p)s AS xid8) ORDER BY seq", {"p": position}  # noqa: S608 - ours
        ).all()
        return [row[0] for row in rows], now

    def forget_changes(self, conn: sa.Connection, table: str, position: str) -> None:
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE xid < CAST(%(p)s AS xid8)", {"p": position})  # noqa: S608 - ours

    # One PL/pgSQL function per (table, column), called by an AFTER INSERT OR UPDATE OR DELETE row
    # trigger and a BEFORE TRUNCATE statement trigger (named ``{name}_t``). Row triggers rather than
    # statement triggers with transition tables: a transition table serves a trigger of one event only,
    # and a row trigger sees both ids of an update that moves a row to another customer.

    def install_change_triggers(self, conn: sa.Connection, log: str, watched: Sequence[Watched]) -> None:
        schema = self._current_schema(conn)
        for name, table, column in watched:
            function = f"{schema}.{quote(name)}"
            prefix = self._id_prefix(conn, table, column)
            conn.exec_driver_sql(self._trigger_function(function, f"{schema}.{quote(log)}", column, prefix))
            for trigger, timing in (
                (name, "AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW"),
                (f"{name}_t", "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT"),
            ):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {quote(table)}")
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {quote(trigger)} {timing.format(t=quote(table))} EXECUTE FUNCTION {function}()"
                )

    def remove_change_triggers(self, conn: sa.Connection, watched: Sequence[Watched]) -> None:
        schema = self._current_schema(conn)
        for name, table, _ in watched:
            for trigger in (name, f"{name}_t"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote(trigger)} ON {quote(table)}")
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {schema}.{quote(name)}()")

    @staticmethod
    def _current_schema(conn: sa.Connection) -> str:
        """The schema the change log is in (the first of the search path), quoted: the triggers name it in
        full, so the host's writes reach it whatever their own search path."""
        return quote(str(conn.exec_driver_sql("SELECT current_schema()").scalar_one()))

    @staticmethod
    def _id_prefix(conn: sa.Connection, table: str, column: str) -> str:
        """``i:`` when ``column`` is an integer column (its values are integer ids), else ``s:``."""
        schema, _, plain = table.rpartition(".")
        for info in sa.inspect(conn).get_columns(plain, schema=schema or None):
            if info["name"] == column:
                try:
                    return "i:" if info["type"].python_type is int else "s:"
                except NotImplementedError:
                    return "s:"
        raise ValueError(f"install_triggers: the table {table} has no column {column!r}")

    @staticmethod
    def _trigger_function(function: str, log: str, column: str, prefix: str) -> str:
        """The function that logs the customers of the rows written (the whole table before a TRUNCATE).

        It runs with its owner's rights (``SECURITY DEFINER``), so the roles that write the host's tables
        need no rights on the change log, and with a fixed search path: every name in it is qualified
        (the log by the schema it was installed in, the truncated table by the trigger's own).
        """
        c = quote(column)

        def log_row(row: str) -> str:
            return f"INSERT INTO {log} (customer) VALUES ('{prefix}' || CAST({row}.{c} AS TEXT));"  # noqa: S608 - ours

        # no format(): its %I would be taken for a driver placeholder
        truncate = (
            f"'INSERT INTO {log} (customer) SELECT DISTINCT ''{prefix}'' || CAST({c} AS TEXT) FROM '"  # noqa: S608 - ours
            f" || quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME) || ' WHERE {c} IS NOT NULL'"
        )
        return f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $cohorts$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE {truncate};
    ELSIF TG_OP = 'INSERT' THEN
        IF NEW.{c} IS NOT NULL THEN {log_row("NEW")} END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.{c} IS NOT NULL THEN {log_row("OLD")} END IF;
    ELSE
        IF OLD.{c} IS NOT NULL THEN {log_row("OLD")} END IF;
        IF NEW.{c} IS NOT NULL AND NEW.{c} IS DISTINCT FROM OLD.{c} THEN {log_row("NEW")} END IF;
    END IF;
    RETURN NULL;
END
$cohorts$"""

    def placeholder(self, name: str, cast: str | None = None) -> str:
        return f"CAST(%({name})s AS {cast})" if cast else f"%({name})s"

    def insert_many(
        self, conn: sa.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
        or_ignore: bool = False,
    ) -> None:
        if or_ignore or len(rows) < _COPY_ROWS:
            super().insert_many(conn, table, columns, rows, or_ignore=or_ignore)
            return
        self.bulk_load(conn, table, columns, rows)  # COPY: about a tenth of an executemany's cost per row

    def bulk_load(
        self, conn: sa.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        quote = conn.dialect.identifier_preparer.quote
        driver: Any = conn.connection.driver_connection
        names = ", ".join(quote(c) for c in columns)
        with driver.cursor() as cursor, cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def upsert_statement(self, table: sa.Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def allocate(self, conn: sa.Connection, table: str, meta: str, count: int) -> list[int]:
        rows = conn.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'pk')) FROM generate_series(1, %(n)s)",  # noqa: S608 - ours
            {"n": count},
        )
        return [row[0] for row in rows]

    def claim_rows(self, select: sa.Select[Any], table: sa.Table, where: Sequence[Any], columns: Sequence[Any]) -> Any:
        # A row lock; another runner skips the row instead of waiting.
        return select.with_for_update(skip_locked=True)


_DIALECTS: dict[str, Dialect] = {}


def register(instance: Dialect) -> Dialect:
    """Make ``instance`` the dialect of databases named ``instance.name`` (SQLAlchemy's dialect name)."""
    _DIALECTS[instance.name] = instance
    return instance


register(SQLite())
register(PostgreSQL())


def dialect(name: str | Dialect | sa.Engine | sa.Connection) -> Dialect:
    """The dialect of a name (``"sqlite"``, ``"postgresql"``), an engine or a connection.

    Example:
        >>> dialect("sqlite")
        <Dialect sqlite>
    """
    if isinstance(name, Dialect):
        return name
    if isinstance(name, sa.Engine | sa.Connection):
        name = name.dialect.name
    found = _DIALECTS.get(name) if isinstance(name, str) else None
    if found is None:
        known = " or ".join(repr(n) for n in sorted(_DIALECTS))
        raise ValueError(f"dialect is {known}, not {name!r}")
    return found


def names() -> Iterable[str]:
    """The names of the registered dialects."""
    return sorted(_DIALECTS)


def names_with_triggers() -> list[str]:
    """The names of the registered dialects that install change-log triggers."""
    return [
        name
        for name, found in sorted(_DIALECTS.items())
        if type(found).install_change_triggers is not Dialect.install_change_triggers
    ]


def database_file(engine: sa.Engine) -> str | None:
    """The path of the file ``engine``'s database lives in (SQLite), None in memory or on a server."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or dialect(engine).advisory_locks:
        return None
    return str(database)
