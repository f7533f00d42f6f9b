"""The developer portal: My access, self-service on the basic tier, domains and keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.allowlist.versioning import current_version
from bot.core.config import load_policy
from bot.core.models import ApiKey, AuditEvent, DomainChange, Grant, GrantDomain, RequestState
from tests.portal_data import (
    APPLICANT,
    STRANGER,
    add_issue_for,
    add_people,
    csrf,
    fetch,
    install,
    make_grant,
    make_request,
    read,
    sign_in,
)


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


def policy_file(tmp_path, text: str):
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return load_policy(path)


def without_domain_proof(policy):
    """The policy with `domain_proof: none` on every tier: domains apply at once, as before proof
    of control existed (tests/access/test_domain_proof.py covers the default, which needs proof)."""
    return policy.model_copy(update={"tiers": [t.model_copy(update={"domain_proof": "none"}) for t in policy.tiers]})


def current_version_of(db) -> int:
    with Session(db) as s:
        return current_version(s)


def grants_of(db, person) -> list[Grant]:
    return read(db, select(Grant).where(Grant.github_user_id == person["id"]))


# --- My access ---------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in_and_brought_back(client):
    response = client.get("/me")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"] and "next=/me" in response.headers["Location"]


def test_home_page_leads_to_my_access(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/me")


def test_applicant_sees_requests_grants_domains_limits_and_version(client, session, db, world):
    make_request(session, number=7, state=RequestState.VALIDATED)
    approved = make_request(session, number=8, state=RequestState.APPROVED, referrer="chatapp")
    grant = make_grant(session, request=approved, app_id="chatapp", domains=("chat.example.com",))
    sign_in(client, APPLICANT, world)
    page = client.get("/me").get_data(as_text=True)
    assert "acme/access#7" in page and "acme/access#8" in page
    assert "validated" in page and "chatapp" in page and "chat.example.com" in page
    assert "300 requests/minute" in page  # the flower tier's limits from the policy
    assert f"allowlist version <strong>{grant.version}</strong>" in page
    assert "Claim your key" in page  # a fresh grant is claimable


def test_someone_with_nothing_gets_an_empty_state_that_says_what_to_do(client, session, db, world):
    make_grant(session)  # the applicant's, not the stranger's
    sign_in(client, STRANGER, world)
    page = client.get("/me").get_data(as_text=True)
    assert "You have no requests or grants yet." in page
    assert "freeaichat" not in page


def test_applicant_text_is_escaped(client, session, db, world):
    request = make_request(session, number=9)
    request.app_name = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    session.add(request)
    session.commit()
    sign_in(client, APPLICANT, world)
    page = client.get("/me").get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page


def test_higher_tiers_link_to_the_prefilled_issue_form(client, session, db, world):
    grant = make_grant(session, tier="seed", app_id="tinyapp", domains=())
    sign_in(client, APPLICANT, world)
    page = client.get("/me").get_data(as_text=True)
    assert "https://github.com/acme/access/issues/new?template=special-access.yml&amp;tier=flower" in page
    # "Request an upgrade" of an existing grant carries its app name, app id and domains
    assert ("https://github.com/acme/access/issues/new?template=special-access.yml&amp;app-name=tinyapp"
            "&amp;referrer=tinyapp&amp;tier=flower") in page
    # a new request stops at max_requestable_tier; an upgrade may ask above it (a maintainer decides)
    assert "special-access.yml&amp;tier=nectar" not in page
    assert "referrer=tinyapp&amp;tier=nectar" in page and "Request an upgrade to nectar" in page
    assert grant.tier == "seed"


def test_request_an_upgrade_prefills_the_domains_and_only_higher_tiers(client, session, db, world):
    make_grant(session, tier="flower", app_id="demo-app", domains=("demo-app.org", "api.demo-app.org"))
    sign_in(client, APPLICANT, world)
    page = client.get("/me").get_data(as_text=True)
    assert ("issues/new?template=special-access.yml&amp;app-name=demo-app&amp;referrer=demo-app"
            "&amp;domains=api.demo-app.org%0Ademo-app.org&amp;tier=nectar") in page
    assert "Request an upgrade to seed" not in page and "Request an upgrade to flower" not in page
    assert "Upgrade to" not in page  # no automatic tier above flower in the default policy


# --- Self-service -------------------------------------------------------------------------------


def test_self_service_creates_a_basic_grant_after_the_form_checks(client, session, db, world, runtime):
    runtime.policy = without_domain_proof(runtime.policy)
    sign_in(client, APPLICANT, world)
    form = client.get("/me/self-service").get_data(as_text=True)
    assert "Create my seed grant" in form
    response = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "MyChat",
                                                     "domains": "https://MyChat.example.com/path\n*.mychat.dev"})
    assert response.status_code == 302
    [grant] = grants_of(db, APPLICANT)
    assert (grant.app_id, grant.tier, grant.source, grant.claimable) == ("mychat", "seed", "self_service", True)
    domains = read(db, select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id))
    assert sorted(domains) == ["*.mychat.dev", "mychat.example.com"]
    event = read(db, select(AuditEvent).where(AuditEvent.grant_id == grant.id))[0]
    assert (event.action, event.actor, event.source) == ("grant.created", APPLICANT["login"], "portal")
    assert current_version_of(db) == grant.version
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "is ready" in page and "mychat" in page


def test_self_service_domains_wait_for_proof_of_control_by_default(client, session, db, world):
    sign_in(client, APPLICANT, world)
    response = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "stripey",
                                                     "domains": "stripe.com\n*.shopify.com"})
    assert response.status_code == 302
    [grant] = grants_of(db, APPLICANT)
    assert read(db, select(GrantDomain).where(GrantDomain.grant_id == grant.id)) == []  # nothing granted yet
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "wait for proof" in page and "beekeeper-verification=" in page
    assert "https://stripe.com/.well-known/beekeeper-verification.txt" in page
    assert "shopify.com/.well-known" not in page  # a wildcard is proven with DNS only


@pytest.mark.parametrize("app_id, domains, expected", [
    ("ab", "", "must be 3 to 39 characters"),
    ("admin", "", "is reserved"),
    ("goodname", "github.io", "public suffix"),
    ("goodname", "127.0.0.1", "IP addresses are not accepted"),
    ("", "", "please choose one"),
])
def test_self_service_reports_what_to_fix_and_creates_nothing(client, session, db, world, app_id, domains, expected):
    sign_in(client, APPLICANT, world)
    response = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": app_id,
                                                     "domains": domains})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert expected in page and "Please fix these" in page
    assert f'value="{app_id}"' in page  # what they typed is kept
    assert grants_of(db, APPLICANT) == []


def test_self_service_refuses_an_app_id_of_another_user(client, session, db, world):
    make_grant(session, owner=STRANGER, app_id="taken", domains=())
    sign_in(client, APPLICANT, world)
    page = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "taken",
                                                 "domains": ""}).get_data(as_text=True)
    assert "belongs to another GitHub account" in page
    assert grants_of(db, APPLICANT) == []


def test_self_service_needs_an_account_that_passes_the_applicant_checks(client, session, db, world):
    recent = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.add_user(APPLICANT["login"], APPLICANT["id"], created_at=recent)
    sign_in(client, APPLICANT, world)
    page = client.get("/me/self-service").get_data(as_text=True)
    assert "Self-service is not available for your account" in page and "3 days old" in page
    assert "Create my seed grant" not in page
    client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "youngapp", "domains": ""})
    assert grants_of(db, APPLICANT) == []


def test_an_open_issue_request_does_not_block_self_service(client, session, db, world):
    make_request(session, number=3, tier="flower")
    sign_in(client, APPLICANT, world)
    post(client, "/me/self-service", app_id="side-project", domains="")
    assert [g.app_id for g in grants_of(db, APPLICANT)] == ["side-project"]


def test_one_self_service_grant_per_account(client, session, db, world):
    make_grant(session, tier="seed", app_id="first", domains=(), origin="self_service")
    sign_in(client, APPLICANT, world)
    assert "You already have access" in client.get("/me").get_data(as_text=True)
    page = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "second",
                                                 "domains": ""}).get_data(as_text=True)
    assert "already have access as first" in page
    assert [g.app_id for g in grants_of(db, APPLICANT)] == ["first"]


def test_self_service_switched_off_by_policy(client, session, db, world, runtime, tmp_path):
    runtime.policy = policy_file(tmp_path, "self_service:\n  enabled: false\n")
    sign_in(client, APPLICANT, world)
    assert "Get a seed key" not in client.get("/me").get_data(as_text=True)
    page = client.post("/me/self-service", data={"csrf_token": csrf(client), "app_id": "offapp", "domains": ""})
    assert "switched off" in page.get_data(as_text=True)
    assert grants_of(db, APPLICANT) == []


def test_forms_without_the_csrf_token_are_refused(client, session, db, world):
    sign_in(client, APPLICANT, world)
    csrf(client)
    response = client.post("/me/self-service", data={"app_id": "nocsrf", "domains": ""})
    assert response.status_code == 400
    assert grants_of(db, APPLICANT) == []


# --- Domains ------------------------------------------------------------------------------------


def post(client, url, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def test_adding_a_domain_on_an_automatic_tier_applies_at_once(client, session, db, world, runtime):
    runtime.policy = without_domain_proof(runtime.policy)
    grant = make_grant(session, tier="seed", app_id="seedapp", domains=())
    version = grant.version
    sign_in(client, APPLICANT, world)
    response = post(client, f"/me/grants/{grant.id}/domains", domain="New.Example.com")
    assert response.status_code == 302
    assert read(db, select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id)) == \
        ["new.example.com"]
    assert fetch(db, Grant, grant.id).version > version
    assert "was added" in client.get("/me").get_data(as_text=True)


def test_adding_a_domain_on_a_reviewed_tier_opens_a_review_and_tells_the_issue(client, session, db, world):
    request = make_request(session, number=12, state=RequestState.APPROVED)
    add_issue_for(world, request, state="closed", labels=["special-access", "approved"])
    grant = make_grant(session, request=request)
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="beta.freeaichat.com")
    assert read(db, select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id,
                                                         GrantDomain.active == True)) == [  # noqa: E712
        "freeaichat.com"]
    change = read(db, select(DomainChange))[0]
    assert (change.domain, change.state, change.requested_by) == ("beta.freeaichat.com", "pending",
                                                                  APPLICANT["login"])
    assert read(db, select(AuditEvent).where(AuditEvent.action == "domain.change_requested"))[0]
    [comment] = world.bot_comments("acme/access", 12)
    assert "beta.freeaichat.com" in comment["body"] and "review" in comment["body"]
    page = client.get("/me").get_data(as_text=True)
    assert "waits for a maintainer" in page and "Waiting for a maintainer" in page


def test_removing_a_domain_applies_at_once_even_on_a_reviewed_tier(client, session, db, world):
    grant = make_grant(session, domains=("a.example.com", "b.example.com"))
    row = read(db, select(GrantDomain).where(GrantDomain.domain == "a.example.com"))[0]
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains/{row.id}/remove")
    assert read(db, select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id,
                                                         GrantDomain.active == True)) == [  # noqa: E712
        "b.example.com"]


def test_a_bad_or_taken_domain_is_refused_with_the_reason(client, session, db, world):
    make_grant(session, owner=STRANGER, app_id="theirs", domains=("taken.example.com",))
    grant = make_grant(session, tier="seed", app_id="mine", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="taken.example.com")
    assert "already granted to another GitHub account" in client.get("/me").get_data(as_text=True)
    post(client, f"/me/grants/{grant.id}/domains", domain="localhost")
    assert "not reachable from the internet" in client.get("/me").get_data(as_text=True)
    assert read(db, select(GrantDomain).where(GrantDomain.grant_id == grant.id)) == []


def test_a_pending_domain_can_be_withdrawn(client, session, db, world):
    grant = make_grant(session)
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="later.example.com")
    change = read(db, select(DomainChange))[0]
    post(client, f"/me/grants/{grant.id}/domain-changes/{change.id}/withdraw")
    assert fetch(db, DomainChange, change.id).state == "withdrawn"


def test_nobody_else_can_touch_a_grant(client, session, db, world):
    grant = make_grant(session)
    sign_in(client, STRANGER, world)
    response = post(client, f"/me/grants/{grant.id}/domains", domain="evil.example.com")
    assert response.status_code == 404
    assert "freeaichat" not in response.get_data(as_text=True)
    assert read(db, select(DomainChange)) == []


# --- Keys ---------------------------------------------------------------------------------------


def test_claim_shows_the_keys_once_and_stores_only_hashes(client, session, db, world):
    grant = make_grant(session, tier="seed", app_id="keyapp", domains=())
    sign_in(client, APPLICANT, world)
    response = post(client, f"/me/grants/{grant.id}/keys/claim")
    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
    page = response.get_data(as_text=True)
    secret = re.search(r"bk_sk_[0-9A-Za-z]{36}", page).group(0)
    assert re.search(r"bk_pk_[0-9A-Za-z]{36}", page)
    stored = read(db, select(ApiKey))
    assert {k.kind for k in stored} == {"secret", "publishable"}
    assert keyformat.sha256_hex(secret) in {k.sha256 for k in stored}
    home = client.get("/me").get_data(as_text=True)
    assert secret not in home and keyformat.display(secret) in home
    assert "Claim your key" not in home  # claimed: a second claim needs a rotation
    again = post(client, f"/me/grants/{grant.id}/keys/claim")
    assert again.status_code == 302
    assert "already claimed" in client.get("/me").get_data(as_text=True)
    assert len(read(db, select(ApiKey))) == 2


def test_rotation_keeps_the_old_key_for_the_grace_period(client, session, db, world, frozen_clock):
    grant = make_grant(session, tier="seed", app_id="rotapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/keys/claim")
    post(client, f"/me/grants/{grant.id}/keys/rotate")
    page = client.get("/me").get_data(as_text=True)
    assert "keeps working until" in page and "expiring" in page and "Claim your key" in page
    old = read(db, select(ApiKey).where(ApiKey.kind == "secret"))[0]
    assert old.expires_at is not None
    post(client, f"/me/grants/{grant.id}/keys/claim")
    assert len(read(db, select(ApiKey).where(ApiKey.kind == "secret"))) == 2
    assert "Last rotated" in client.get("/me").get_data(as_text=True)


def test_revoking_a_key_is_immediate_and_audited(client, session, db, world):
    grant = make_grant(session, tier="seed", app_id="revapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/keys/claim")
    key = read(db, select(ApiKey).where(ApiKey.kind == "secret"))[0]
    post(client, f"/me/grants/{grant.id}/keys/{key.id}/revoke")
    assert fetch(db, ApiKey, key.id).revoked_at is not None
    event = read(db, select(AuditEvent).where(AuditEvent.action == "key.revoked"))[0]
    assert (event.actor, event.source) == (APPLICANT["login"], "portal")
    assert "is revoked" in client.get("/me").get_data(as_text=True)


def test_nobody_else_can_claim_rotate_or_revoke(client, session, db, world):
    grant = make_grant(session, tier="seed", app_id="ownedapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/keys/claim")
    key = read(db, select(ApiKey))[0]
    post(client, f"/me/grants/{grant.id}/keys/rotate")  # claimable again
    sign_in(client, STRANGER, world)
    for url in (f"/me/grants/{grant.id}/keys/claim", f"/me/grants/{grant.id}/keys/rotate",
                f"/me/grants/{grant.id}/keys/{key.id}/revoke"):
        response = post(client, url)
        assert response.status_code == 404 and "bk_" not in response.get_data(as_text=True)
    assert len(read(db, select(ApiKey))) == 2 and fetch(db, ApiKey, key.id).revoked_at is None


SPROUT_POLICY = """tiers:
  - {name: seed, rank: 1, requests_per_minute: 60, concurrency: 2, daily_quota: 10000, auto_approve: true}
  - {name: sprout, rank: 2, requests_per_minute: 120, concurrency: 4, daily_quota: 20000, auto_approve: true}
  - {name: flower, rank: 3, requests_per_minute: 300, concurrency: 8, daily_quota: 100000}
max_requestable_tier: flower
"""


def test_self_service_upgrades_to_a_higher_automatic_tier_at_once(client, session, db, world, runtime, tmp_path):
    runtime.policy = policy_file(tmp_path, SPROUT_POLICY)
    grant = make_grant(session, tier="seed", app_id="tinyapp", domains=())
    theirs = make_grant(session, owner=STRANGER, tier="seed", app_id="theirs", domains=())
    sign_in(client, APPLICANT, world)
    page = client.get("/me").get_data(as_text=True)
    assert "Upgrade to sprout now" in page and "Upgrade to flower now" not in page
    before = current_version_of(db)

    # Not an automatic tier, and not one's own grant: refused, nothing changes.
    client.post(f"/me/grants/{grant.id}/upgrade", data={"csrf_token": csrf(client), "tier": "flower"})
    assert "needs a maintainer" in client.get("/me").get_data(as_text=True)
    assert client.post(f"/me/grants/{theirs.id}/upgrade",
                       data={"csrf_token": csrf(client), "tier": "sprout"}).status_code == 404
    assert current_version_of(db) == before

    client.post(f"/me/grants/{grant.id}/upgrade", data={"csrf_token": csrf(client), "tier": "sprout"})
    [mine] = grants_of(db, APPLICANT)
    assert (mine.id, mine.tier) == (grant.id, "sprout")
    assert current_version_of(db) == before + 1
    [changed] = read(db, select(AuditEvent).where(AuditEvent.action == "grant.tier_changed"))
    assert (changed.actor, changed.details["from"], changed.details["to"]) == (APPLICANT["login"], "seed", "sprout")
    assert [g.tier for g in grants_of(db, STRANGER)] == ["seed"]
