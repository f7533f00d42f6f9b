"""The grant lifecycle: bound to a numeric GitHub id, unique app ids and active domains (enforced
by the database), audit rows and allowlist versions for every change, nothing deleted."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.access import grants
from bot.allowlist import versioning
from bot.core.models import AllowlistChange, ApiKey, AuditEvent, Grant, GrantDomain, GrantStatus
from tests.request_helpers import APPLICANT, make_request

SRC = "https://github.com/acme/access/issues/1#issuecomment-9"


@pytest.fixture
def request_row(session):
    return make_request(session)


def new_grant(session, request, app_id="freeaichat", domains=("freeaichat.io",), tier="flower"):
    grant = grants.create_grant(session, request, tier, "maria-maint", app_id=app_id, domains=list(domains),
                                source=SRC)
    session.commit()
    return grant


def test_create_binds_the_numeric_id_and_records_everything(session, request_row):
    grant = grants.create_grant(session, request_row, "flower", "maria-maint", app_id=" FreeAIChat ",
                                domains=["FreeAIChat.io", "freeaichat.io", " app.freeaichat.io"], source=SRC)
    session.commit()
    assert (grant.app_id, grant.github_user_id, grant.github_login) == ("freeaichat", APPLICANT["id"],
                                                                        APPLICANT["login"])
    assert (grant.request_id, grant.issue_number, grant.source, grant.status) == (request_row.id, 1, "issue",
                                                                                 "active")
    assert grants.active_domains(session, grant) == ["freeaichat.io", "app.freeaichat.io"]
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "grant.created")).one()
    assert (event.actor, event.grant_id, event.source) == ("maria-maint", grant.id, SRC)
    change = session.exec(select(AllowlistChange)).one()
    assert (change.grant_id, change.change, change.version) == (grant.id, "created", grant.version)
    assert versioning.current_version(session) == grant.version == 1


def test_a_grant_without_request_needs_an_owner(session):
    with pytest.raises(ValueError):
        grants.create_grant(session, None, "seed", "system", app_id="selfapp", domains=[], source="portal")
    grant = grants.create_grant(session, None, "seed", "system", app_id="selfapp", domains=[], source="portal",
                                origin="self_service", github_user_id=42, github_login="selfie")
    assert (grant.github_user_id, grant.source, grant.request_id) == (42, "self_service", None)


def test_cli_source_marks_the_grant_origin(session, request_row):
    grant = grants.create_grant(session, request_row, "seed", "cli:ops", app_id="cliapp", domains=[], source="cli")
    assert grant.source == "cli"


def test_app_ids_are_unique_forever(session, request_row):
    first = new_grant(session, request_row)
    with pytest.raises(grants.GrantConflict) as taken:
        grants.create_grant(session, request_row, "seed", "x", app_id="freeaichat", domains=[], source=SRC)
    assert taken.value.kind == "app_id" and "freeaichat" in str(taken.value)
    grants.revoke_grant(session, first, "x", "gone", source=SRC)
    session.commit()
    with pytest.raises(grants.GrantConflict):
        grants.create_grant(session, request_row, "seed", "x", app_id="freeaichat", domains=[], source=SRC)


def test_domains_are_unique_among_active_grants(session, request_row):
    first = new_grant(session, request_row)
    with pytest.raises(grants.GrantConflict) as taken:
        grants.create_grant(session, request_row, "seed", "x", app_id="second", domains=["freeaichat.io"], source=SRC)
    assert taken.value.kind == "domain" and f"#{first.id}" in str(taken.value)
    session.rollback()
    assert session.exec(select(Grant)).all() == [first]  # nothing half-made

    grants.revoke_grant(session, first, "x", "gone", source=SRC)
    second = grants.create_grant(session, request_row, "seed", "x", app_id="second", domains=["freeaichat.io"],
                                 source=SRC)
    session.commit()
    rows = session.exec(select(GrantDomain).where(GrantDomain.domain == "freeaichat.io")).all()
    assert sorted((r.grant_id, r.active) for r in rows) == [(first.id, False), (second.id, True)]


def test_the_database_itself_refuses_a_second_active_domain(session, request_row):
    grant = new_grant(session, request_row)
    other = new_grant(session, request_row, app_id="other", domains=())
    session.add(GrantDomain(grant_id=other.id, domain="freeaichat.io", active=True))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    session.add(GrantDomain(grant_id=other.id, domain="freeaichat.io", active=False))  # history is fine
    session.commit()
    assert grants.domain_holders(session, ["freeaichat.io"])["freeaichat.io"].id == grant.id


def test_set_tier(session, request_row):
    grant = new_grant(session, request_row)
    assert grants.set_tier(session, grant, "nectar", "mo-maint", source=SRC) == "flower"
    session.commit()
    assert grant.tier == "nectar" and grant.version == 2
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "grant.tier_changed")).one()
    assert event.details == {"from": "flower", "to": "nectar"}
    grants.revoke_grant(session, grant, "mo-maint", "bye", source=SRC)
    with pytest.raises(grants.GrantNotActive):
        grants.set_tier(session, grant, "seed", "mo-maint", source=SRC)


def test_revoke_keeps_every_row_and_revokes_keys(session, request_row):
    grant = new_grant(session, request_row)
    session.add(ApiKey(grant_id=grant.id, kind="secret", sha256="a" * 64, display="bk_sk_aaaa…aaaa"))
    session.commit()
    grants.revoke_grant(session, grant, "mo-maint", "leaked", source=SRC)
    session.commit()
    assert (grant.status, grant.revoke_reason, grant.claimable) == (GrantStatus.REVOKED, "leaked", False)
    key = session.exec(select(ApiKey)).one()
    assert key.revoked_at is not None and key.revoke_reason == "grant revoked"
    [domain] = session.exec(select(GrantDomain)).all()
    assert not domain.active and domain.removed_at is not None
    assert [c.change for c in session.exec(select(AllowlistChange).order_by(AllowlistChange.version))] == [
        "created", "revoked"]
    with pytest.raises(grants.GrantNotActive):
        grants.revoke_grant(session, grant, "mo-maint", "again", source=SRC)


def test_add_and_remove_domains(session, request_row):
    grant = new_grant(session, request_row)
    other = new_grant(session, request_row, app_id="other", domains=("other.io",))
    grants.add_domain(session, grant, "New.FreeAIChat.io", "alice-dev", source="portal")
    assert grants.active_domains(session, grant) == ["freeaichat.io", "new.freeaichat.io"]
    with pytest.raises(grants.GrantConflict, match="already in this grant"):
        grants.add_domain(session, grant, "freeaichat.io", "alice-dev", source="portal")
    with pytest.raises(grants.GrantConflict, match="other"):
        grants.add_domain(session, grant, "other.io", "alice-dev", source="portal")
    assert grants.remove_domain(session, grant, "freeaichat.io", "alice-dev", source="portal") is True
    assert grants.remove_domain(session, grant, "freeaichat.io", "alice-dev", source="portal") is False
    grants.add_domain(session, other, "freeaichat.io", "bob", source="portal")  # freed: another may take it
    session.commit()
    actions = [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions.count("grant.domain_added") == 2 and actions.count("grant.domain_removed") == 1


def test_find_grant_by_id_or_app_id(session, request_row):
    grant = new_grant(session, request_row)
    assert grants.find_grant(session, grant.id) is grant
    assert grants.find_grant(session, "FreeAIChat") is grant
    assert grants.find_grant(session, "nothing") is None
    assert grants.grant_for_request(session, request_row) is grant
