"""`beekeeper db copy`: every table copied to an empty database, verified, sequences reset."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text
from sqlmodel import Session

from bot.cli import State, main
from bot.core.clock import utcnow
from bot.core.db import make_engine
from bot.core.models import (
    AccessRequest,
    AllowlistChange,
    ApiKey,
    AuditEvent,
    Delivery,
    Grant,
    GrantDomain,
    Installation,
    SigningKey,
)
from bot.ops import dbcopy, migrate
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database

needs_pg = pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")


def fill(engine) -> dict[str, int]:
    """A small but varied database: unicode, JSON, NULLs, booleans, aware datetimes, gaps in ids."""
    now = utcnow()
    with Session(engine) as s:
        for i in range(1, 6):
            s.add(Delivery(delivery_id=f"guid-{i}", hook_id=31337, event="issues", action="opened",
                           installation_id=2**40 + i, payload=json.dumps({"n": i, "t": "héllo ✓"}),
                           status="processed" if i % 2 else "dead", attempts=i, last_error=None if i % 2 else "boom",
                           received_at=now - timedelta(minutes=i), processed_at=now if i % 2 else None))
        request = AccessRequest(repo="acme/access", issue_number=7, applicant_id=2**35, applicant_login="octo",
                                title="Special access: Ünïcode app", state="approved", requested_tier="flower",
                                values={"app_name": "Ünïcode", "domains": ["a.example", "*.b.example"]},
                                check_results=[{"check": "domain", "ok": True}], checks_ok=True,
                                body_sha256="ab" * 32, status_comment_id=123, decided_at=now)
        s.add(request)
        s.flush()
        grant = Grant(app_id="unicode-app", tier="flower", github_user_id=2**35, github_login="octo",
                      request_id=request.id, repo="acme/access", issue_number=7, approved_by="maint", version=3,
                      claimable=False)
        s.add(grant)
        s.flush()
        s.add(GrantDomain(grant_id=grant.id, domain="a.example"))
        s.add(GrantDomain(grant_id=grant.id, domain="old.example", active=False, removed_at=now))
        s.add(ApiKey(grant_id=grant.id, kind="secret", sha256="cd" * 32, display="bk_sk_AbC1…wxYz"))
        s.add(AuditEvent(actor="maint", action="request.approved", request_id=request.id, grant_id=grant.id,
                         details={"tier": "flower", "nested": {"x": [1, 2]}}, idempotency_key="approve:1"))
        s.add(AllowlistChange(version=3, grant_id=grant.id, app_id="unicode-app", change="created"))
        s.add(SigningKey(kid="k1", private_pem="-----BEGIN PRIVATE KEY-----\nx\n", public_jwk={"kty": "OKP"}))
        s.add(Installation(id=55_000_000_001, account_login="acme", repositories=["acme/access"]))
        s.commit()
        # a gap in the ids: the target's sequence must move past the highest, not the count
        s.delete(s.get(Delivery, 2))
        s.commit()
    with engine.begin() as conn:
        conn.execute(text("UPDATE allowlist_counter SET version = 3"))
    return counts(engine)


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in dbcopy.tables()}


@pytest.fixture
def target_url(tmp_path):
    """A new, empty database of the same kind the suite runs on."""
    if PG_URL:
        url = _create_pg_database(PG_URL)
        yield url
        _drop_pg_database(PG_URL, url)
    else:
        yield f"sqlite:///{tmp_path / 'target.sqlite3'}"


def _hashes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {t.name: dbcopy.table_hash(conn, t).hexdigest for t in dbcopy.tables()}


def test_every_table_is_copied_and_verified(db, target_url):
    source_counts = fill(db)
    result = dbcopy.copy_database(db, target_url, batch=2)
    target = make_engine(target_url)
    try:
        assert counts(target) == source_counts
        assert {t.name: t.rows for t in result.tables} == source_counts
        assert _hashes(target) == _hashes(db) == {t.name: t.checksum for t in result.tables}
        assert migrate.current_revision(target) == migrate.head_revision()
        with Session(target) as s:
            request = s.exec(select(AccessRequest)).scalar_one()
            assert request.values["domains"] == ["a.example", "*.b.example"] and request.title.endswith("Ünïcode app")
            assert request.decided_at.tzinfo is not None
            # sequences continue after the highest copied id (5, with 2 deleted): no collision
            s.add(Delivery(delivery_id="after-copy", event="ping", payload="{}"))
            s.commit()
            assert s.exec(select(Delivery.id).where(Delivery.delivery_id == "after-copy")).scalar_one() == 6
    finally:
        target.dispose()


def test_a_non_empty_target_is_refused_and_left_alone(db, target_url):
    fill(db)
    dbcopy.copy_database(db, target_url)
    target = make_engine(target_url)
    before = _hashes(target)
    with pytest.raises(dbcopy.CopyError, match="the target is not empty: table access_request has 1 row"):
        dbcopy.copy_database(db, target_url)
    assert _hashes(target) == before
    target.dispose()


def test_a_failed_verification_commits_nothing(db, target_url):
    """A target that changes rows as they arrive (here: a trigger) fails the checksum; all is rolled back."""
    fill(db)
    target = make_engine(target_url)
    migrate.upgrade(target)
    with target.begin() as conn:
        if target.dialect.name == "postgresql":
            conn.execute(text("CREATE FUNCTION tamper() RETURNS trigger AS $$ BEGIN NEW.event := 'tampered'; "
                              "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER tamper BEFORE INSERT ON delivery FOR EACH ROW EXECUTE FUNCTION tamper()"))
        else:
            conn.execute(text("CREATE TRIGGER tamper AFTER INSERT ON delivery BEGIN "
                              "UPDATE delivery SET event = 'tampered' WHERE id = NEW.id; END"))
    with pytest.raises(dbcopy.CopyError, match="verification failed for delivery"):
        dbcopy.copy_database(db, target_url)
    assert sum(counts(target).values()) == 1  # only the migration's seeded counter row
    target.dispose()


def test_refusals(db, tmp_path):
    with pytest.raises(dbcopy.CopyError, match="is the current database"):
        dbcopy.copy_database(db, db.url.render_as_string(hide_password=False))
    with pytest.raises(dbcopy.CopyError, match="postgresql://"):
        dbcopy.copy_database(db, "mysql://x@localhost/y")
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with pytest.raises(dbcopy.CopyError, match="beekeeper db upgrade"):
        dbcopy.copy_database(unmigrated, f"sqlite:///{tmp_path / 'new.sqlite3'}")
    unmigrated.dispose()
    foreign = make_engine(f"sqlite:///{tmp_path / 'foreign.sqlite3'}")
    with foreign.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id integer primary key)"))
    with pytest.raises(dbcopy.CopyError, match="tables \\(customers\\) that Beekeeper did not create"):
        dbcopy.copy_database(db, f"sqlite:///{tmp_path / 'foreign.sqlite3'}")
    foreign.dispose()


@needs_pg
def test_sqlite_to_postgresql_the_way_operators_grow(tmp_path):
    source = make_engine(f"sqlite:///{tmp_path / 'beekeeper.sqlite3'}")
    migrate.upgrade(source)
    source_counts = fill(source)
    url = _create_pg_database(PG_URL)
    try:
        dbcopy.copy_database(source, url)
        target = make_engine(url)
        assert counts(target) == source_counts
        assert _hashes(target) == _hashes(source)
        with target.begin() as conn:  # the next id comes from the reset sequence
            conn.execute(text("INSERT INTO audit_event (at, actor, action, details) VALUES (now(), 'x', 'y', '{}')"))
            assert conn.execute(text("SELECT max(id) FROM audit_event")).scalar() == 2
        target.dispose()
    finally:
        source.dispose()
        _drop_pg_database(PG_URL, url)


def test_the_command(runtime, target_url):
    total = sum(fill(runtime.engine).values())
    state = State()
    state._runtime = runtime
    result = CliRunner().invoke(main, ["db", "copy", "--to", target_url], obj=state)
    assert result.exit_code == 0, result.output
    assert re.search(r"^delivery +4 rows  sha256 [0-9a-f]{16}…  ok$", result.output, re.M)
    assert f"copied {total} rows" in result.output
    again = CliRunner().invoke(main, ["db", "copy", "--to", target_url], obj=state)
    assert again.exit_code == 1 and "not empty" in again.output
