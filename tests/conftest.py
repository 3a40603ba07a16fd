"""Shared fixtures: one throwaway PostgreSQL cluster per session, and repositories of every backend."""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

collect_ignore = ["typing"]

_spec = importlib.util.spec_from_file_location("cohorts_tests_pg", Path(__file__).with_name("pg.py"))
assert _spec is not None and _spec.loader is not None
pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg)

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL cluster (skips, or fails in CI, when it cannot start)."""
    try:
        cluster = pg.Cluster.start()
    except pg.ClusterUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is mandatory in CI and did not start: {error}")
        pytest.skip(f"no PostgreSQL: {error}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Any]:
    """An engine whose tables live in a fresh PostgreSQL schema, dropped afterwards."""
    import sqlalchemy as sa

    name = f"test_{os.getpid()}_{next(_schemas)}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={name}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a repository backend."""
    name: str = request.param
    return name


@pytest.fixture
def make_repository(backend: str, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A factory of empty repositories of the current backend: ``make_repository(schema=..., tz=...)``."""
    from cohorts.repository import MemoryRepository
    from cohorts.sql import SQLRepository

    def make(**options: Any) -> Any:
        if backend == "memory":
            return MemoryRepository(**options)
        if backend == "sqlite":
            return SQLRepository("sqlite://", **options)
        return SQLRepository(request.getfixturevalue("postgres_engine"), **options)

    return make


@pytest.fixture
def repository(make_repository: Callable[..., Any]) -> Any:
    """An empty repository of each backend (memory, SQLite, PostgreSQL)."""
    return make_repository()
