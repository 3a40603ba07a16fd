"""Customers in SQL (SQLite or PostgreSQL), with rules compiled to one SQL query.

- :mod:`~cohorts.sql.dialects`: what differs between databases, as one small object per dialect;
- :mod:`~cohorts.sql.storage`: values as stored (attributes as written, their typed shadow), the tables;
- :mod:`~cohorts.sql.compiler`: rules to SQL over those tables (:func:`to_sql`);
- :mod:`~cohorts.sql.repository`: :class:`SQLRepository`;
- :mod:`~cohorts.sql.host`: rules on a host's own tables (:class:`HostTable`, :class:`HostEvents`, :class:`JsonField`);
- :mod:`~cohorts.sql.compose`: rules as SQLAlchemy expressions to compose into the host's queries (:func:`where`);
- :mod:`~cohorts.sql.host_repository`: those tables as a repository (:class:`HostRepository`, :class:`HostWriter`);
- :mod:`~cohorts.sql.groups` and :mod:`~cohorts.sql.ledger`: the stores of group state and of the campaign ledger.

Rule values and JSON paths are always bound parameters: :func:`to_sql` returns
the SQL text and its parameters for users who run rules in their own warehouse.
``docs/repositories.md`` describes the tables.
"""

from .compiler import to_sql
from .compose import install_functions, select_ids, where
from .dialects import Dialect, PostgreSQL, SQLite, dialect
from .host import HostEvents, HostTable, JsonField
from .host_repository import HostRepository, HostWriter
from .repository import SCHEMA_VERSION, SQLRepository
from .storage import micros, shadow_key, shadow_of

__all__ = [
    "SCHEMA_VERSION",
    "Dialect",
    "HostEvents",
    "HostRepository",
    "HostTable",
    "HostWriter",
    "JsonField",
    "PostgreSQL",
    "SQLRepository",
    "SQLite",
    "dialect",
    "install_functions",
    "micros",
    "select_ids",
    "shadow_key",
    "shadow_of",
    "to_sql",
    "where",
]
