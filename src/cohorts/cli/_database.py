"""The ``--db`` option: opening the database a command works on.

The SQL repository needs the ``sql`` extra (SQLAlchemy), so it is imported
when a command opens a database, never before.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..groups import Groups
from ._common import EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from ..sql import SQLRepository

__all__ = ["database_url", "open_groups", "open_repository", "sql_module"]


def database_url(args: argparse.Namespace, missing: str) -> str:
    """The database of ``--db``; ``missing`` is the usage error when there is none."""
    url: str | None = args.db
    if not url:
        raise CommandError(missing, EXIT_USAGE)
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


def open_repository(url: str) -> SQLRepository:
    """The SQL repository a ``--db URL`` names; a missing extra or a bad URL is a CommandError."""
    module = sql_module("--db")
    try:
        repository: SQLRepository = module.SQLRepository(url)
    except ValueError as error:
        raise CommandError(f"--db {url!r}: {error}", EXIT_USAGE) from None
    return repository


def open_groups(args: argparse.Namespace) -> Groups:
    """The groups of the database ``--db`` names."""
    return Groups(open_repository(database_url(args, "--db is required (a database URL or an SQLite file path)")))
