"""PostgreSQL for the tests: a database per test, cloned from one migrated template.

The server at ``FLOORSYNC_TEST_PG`` (default: this machine's, 127.0.0.1:5432 as ``postgres``,
trust auth; CI starts it with ``deploy/bootstrap.sh postgresql``). Cloning the template costs a
file copy, not thirteen migrations.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from floorsync.server.ledger import Store

ADMIN = os.environ.get("FLOORSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "floorsync_test_"


def url_of(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


@contextmanager
def database(template: str | None = None) -> Iterator[str]:
    """A new, empty (or cloned) database's URL; dropped after, whatever its connections."""
    name = PREFIX + uuid.uuid4().hex[:12]
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template))
    _admin(create)
    try:
        yield url_of(name)
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def migrated() -> Iterator[str]:
    """A database holding the current schema and nothing else: the template of the others."""
    with database() as url:
        with Store(url):
            pass
        yield url


def name_of(url: str) -> str:
    return url.rsplit("/", 1)[1]
