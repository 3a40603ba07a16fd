"""The ``--db`` option: which database a command works on, and opening it.

``--db`` takes a SQLite file path, a SQLAlchemy URL (``sqlite:///customers.db``)
or a PostgreSQL URL; without it, the ``COHORTS_DB`` environment variable. A
database that cannot be opened is a :class:`cohorts.DatabaseError`, and a SQLite
file is only made by the commands that create data (``create=True``); the others
say that it does not exist. The SQL repository needs the ``sql`` extra
(SQLAlchemy), so it is imported when a command opens a database, never before.

With ``--config FILE`` whose ``[host]`` section maps the host's own tables (a
:class:`cohorts.config.HostSpec`), the database is opened as a
:class:`cohorts.HostRepository` over them instead; it is never made, since the
host's tables must be there, and a mapping that does not fit them is a
:class:`cohorts.ConfigError` naming the file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from ..config import ConfigError, HostSpec, load_config
from ..errors import CohortsError, DatabaseError
from ..groups import Groups
from ._common import EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from ..sql import HostRepository, SQLRepository

    DatabaseRepository: TypeAlias = SQLRepository | HostRepository

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "add_config_option",
    "add_db_option",
    "database_url",
    "host_of",
    "open_groups",
    "open_repository",
    "sql_module",
]

ENVIRONMENT_VARIABLE = "COHORTS_DB"
"""Where ``--db`` is read from when a command line has none."""

_CREATORS = "cohorts import and cohorts groups create"


def add_db_option(parser: argparse.ArgumentParser, extra_help: str = "") -> None:
    """Give a command the ``--db URL`` option, which defaults to ``$COHORTS_DB``."""
    text = f"database URL or SQLite file path (default: ${ENVIRONMENT_VARIABLE}){extra_help}"
    parser.add_argument("--db", metavar="URL", help=text)


def add_config_option(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    """Give a command the ``--config FILE`` option, whose ``[host]`` section maps the host's own tables."""
    what = what or "with a [host] section, --db is read as the host's own tables (a HostRepository) instead of " \
        "cohorts' customers tables"
    parser.add_argument("--config", metavar="FILE", help=f"a TOML configuration; {what}")


def host_of(args: argparse.Namespace) -> HostSpec | None:
    """The ``[host]`` section of the ``--config`` file (None without the option or the section)."""
    path: str | None = args.config
    return None if path is None else load_config(path).host


def database_url(args: argparse.Namespace, missing: str = "") -> str:
    """The database of ``--db``, else of ``$COHORTS_DB``; ``missing`` is the usage error when neither is set."""
    url: str = args.db or os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not url:
        default = f"--db is required (a database URL or an SQLite file path; or set {ENVIRONMENT_VARIABLE})"
        raise CommandError(missing or default, EXIT_USAGE)
    return url


def sql_module(option: str) -> Any:
    """The module :mod:`cohorts.sql`, or a CommandError saying what ``option`` lacks."""
    try:
        from .. import sql
    except ModuleNotFoundError as error:
        if error.name == "cohorts.sql":
            raise CommandError(f"{option} is not available: this version of cohorts has no SQL compiler") from None
        if error.name and error.name.split(".")[0] in ("sqlalchemy", "psycopg"):
            raise CommandError(
                f"{option} needs the sql extra: pip install 'cohorts[sql]' ({error.name} is missing)"
            ) from None
        raise
    return sql


def open_repository(url: str, *, create: bool = False, host: HostSpec | None = None) -> DatabaseRepository:
    """The repository at ``url``; the errors users can fix are DatabaseError, ConfigError or CommandError.

    Without ``host``, cohorts' own tables (a SQLRepository): a SQLite file that
    does not exist is made only when ``create``, and then a note on standard
    error says so. With ``host``, a HostRepository over the tables it maps
    (``create`` is ignored: the host's tables must exist); a table or column of
    the mapping that the database lacks is a ConfigError.
    """
    module = sql_module("--db" if host is None else "the [host] section")
    host_table = None if host is None else host.host_table()  # the file's errors come first
    shown = _hide_password(url)
    path = _sqlite_file(url)
    new = path is not None and not os.path.exists(path)
    if path is not None and new:
        folder = os.path.dirname(os.path.abspath(path))
        if host is not None:
            raise DatabaseError(shown, "it does not exist (check the path: the [host] section maps existing tables)")
        if not create:
            raise DatabaseError(shown, f"it does not exist (check the path; {_CREATORS} make a new database)")
        if not os.path.isdir(folder):
            raise DatabaseError(shown, f"the folder {folder} does not exist")
    repository: DatabaseRepository
    if host is None or host_table is None:
        with _opening(url, shown):
            repository = module.SQLRepository(url)
    else:
        with _opening(url, shown):
            try:
                repository = module.HostRepository(url, host_table, state_prefix=host.state_prefix)
            except ValueError as error:  # the mapping does not fit the database, or the prefix is taken
                raise ConfigError(host.source, "host", str(error)) from None
    if new:
        print(f"note: created the database {path}", file=sys.stderr)
    return repository


@contextlib.contextmanager
def _opening(url: str, shown: str) -> Iterator[None]:
    """SQLAlchemy's errors while opening the database at ``url`` as DatabaseError or CommandError."""
    import sqlalchemy.exc

    try:
        yield
    except CohortsError:
        raise
    except ValueError as error:
        raise CommandError(f"--db {shown!r}: {error}", EXIT_USAGE) from None
    except sqlalchemy.exc.NoSuchModuleError:
        kind = url.partition("://")[0]
        raise DatabaseError(
            shown, f"{kind!r} is not a kind of database (use a SQLite file path or a sqlite:// or postgresql:// URL)"
        ) from None
    except sqlalchemy.exc.DBAPIError as error:
        raise DatabaseError(shown, _first_line(error.orig or error)) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise DatabaseError(shown, _first_line(error)) from None
    except ModuleNotFoundError as error:  # the driver the URL names
        if (error.name or "").startswith("psycopg"):
            raise CommandError(
                f"--db needs the postgres extra: pip install 'cohorts[postgres]' ({error.name} is missing)"
            ) from None
        raise DatabaseError(shown, f"its driver is not installed ({error.name} is missing)") from None


@contextlib.contextmanager
def open_groups(args: argparse.Namespace, *, create: bool = False) -> Iterator[Groups]:
    """The groups of the database ``--db`` (or ``$COHORTS_DB``) names, over the host's tables when the
    ``--config`` file has a ``[host]`` section; its connections are closed at the end of the block."""
    with contextlib.closing(open_repository(database_url(args), create=create, host=host_of(args))) as repository:
        yield Groups(repository)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite ``url`` (or bare path) names; None for other databases and in-memory SQLite."""
    if "://" not in url:
        return None if url == ":memory:" else url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # opening it says what is wrong
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a SQLite URI: its own options decide
    return database


def _hide_password(url: str) -> str:
    """``url`` as it may be shown: ``postgresql://me:***@host/db``."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
