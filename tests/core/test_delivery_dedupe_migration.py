"""Migration 0003d: one row per delivery GUID, replayed bodies refused, on a database with data."""

from __future__ import annotations

import hashlib

import pytest
from alembic import command
from sqlalchemy import text

from bot.core.db import make_engine
from bot.ops import migrate
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database

INSERT = text("INSERT INTO delivery (hook_id, delivery_id, event, payload, received_at, status, attempts, "
              "next_attempt_at) VALUES (:hook, :guid, 'issues', :payload, '2026-12-01 10:00:00', 'processed', 1, "
              "'2026-12-01 10:00:00')")


def _exercise(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, "0002")
        with engine.begin() as conn:
            for hook, guid, payload in [(1, "a", '{"n": 1}'), (2, "a", '{"n": 1}'),  # one GUID, two hooks
                                        (1, "b", '{"n": 2}'), (1, "c", '{"n": 2}'),  # one body, two GUIDs
                                        (1, "d", '{"é": 3}')]:
                conn.execute(INSERT, {"hook": hook, "guid": guid, "payload": payload})
        migrate.upgrade(engine, "0003d")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT hook_id, delivery_id, payload_sha256 FROM delivery ORDER BY id")).all()
        digest = {p: hashlib.sha256(p.encode()).hexdigest() for p in ('{"n": 1}', '{"n": 2}', '{"é": 3}')}
        assert [tuple(r) for r in rows] == [(1, "a", digest['{"n": 1}']), (1, "b", digest['{"n": 2}']),
                                            (1, "c", None), (1, "d", digest['{"é": 3}'])]
        with engine.begin() as conn:
            with pytest.raises(Exception, match="(?i)unique"):
                with conn.begin_nested():
                    conn.execute(INSERT, {"hook": 9, "guid": "a", "payload": "{}"})
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "0002")
        migrate.upgrade(engine)
        assert migrate.drift(engine) == []
    finally:
        engine.dispose()


def test_upgrade_keeps_one_row_per_guid_and_hashes_stored_bodies_on_sqlite(tmp_path):
    _exercise(f"sqlite:///{tmp_path / 'old.sqlite3'}")


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_upgrade_keeps_one_row_per_guid_and_hashes_stored_bodies_on_postgresql():
    url = _create_pg_database(PG_URL)
    try:
        _exercise(url)
    finally:
        _drop_pg_database(PG_URL, url)
