"""Upgrades, downgrades and domain additions of an existing grant (bot.requests.upgrades), end to end:
signed webhooks into /webhook, the worker, the fake GitHub, and the gateway client reading the
allowlist the change produced."""

from __future__ import annotations

import pytest
import responses
from sqlmodel import Session, select

from beekeeper_gateway import AllowlistClient
from bot.access import keys
from bot.allowlist import versioning
from bot.core.models import AccessRequest, ApiKey, AuditEvent, Grant, GrantDomain, RequestState
from tests.allowlist_support import ALLOWLIST_URL, AppBridge, add_gateway
from tests.conftest import REPO
from tests.request_helpers import (
    APPLICANT,
    MAINTAINER,
    STRANGER,
    add_people,
    form_body,
    open_issue,
    post_comment,
)


@pytest.fixture(autouse=True)
def people(fake_github):
    add_people(fake_github)


def body(*, tier: str, domains: str = "demo-app.org", referrer: str = "demo-app") -> str:
    return form_body(app_name="Demo App", referrer=referrer, tier=tier, domains=domains)


def request_row(runtime, number: int) -> AccessRequest:
    with Session(runtime.engine) as s:
        return s.exec(select(AccessRequest).where(AccessRequest.issue_number == number)).one()


def the_grant(runtime) -> Grant:
    with Session(runtime.engine) as s:
        [grant] = s.exec(select(Grant)).all()
        return grant


def domains_of(runtime, grant_id: int) -> list[str]:
    with Session(runtime.engine) as s:
        return sorted(s.exec(select(GrantDomain.domain).where(GrantDomain.grant_id == grant_id,
                                                               GrantDomain.active == True)).all())  # noqa: E712


def version(runtime) -> int:
    with Session(runtime.engine) as s:
        return versioning.current_version(s)


def status_body(fake, number: int) -> str:
    [status] = [c for c in fake.bot_comments(REPO, number) if "beekeeper:status" in c["body"]]
    return status["body"]


def key_rows(runtime, grant_id: int) -> list[tuple]:
    with Session(runtime.engine) as s:
        return sorted((k.kind, k.sha256, k.revoked_at, k.expires_at)
                      for k in s.exec(select(ApiKey).where(ApiKey.grant_id == grant_id)).all())


def audit_actions(runtime, grant_id: int) -> list[str]:
    with Session(runtime.engine) as s:
        return [e.action for e in s.exec(select(AuditEvent).where(AuditEvent.grant_id == grant_id)
                                         .order_by(AuditEvent.id)).all()]


@pytest.fixture
def flower(client, worker, runtime, fake_github):
    """demo-app approved at flower from issue #1, its keys claimed by the applicant."""
    first = open_issue(client, worker, fake_github, number=1, body=body(tier="flower"))
    post_comment(client, worker, fake_github, first, MAINTAINER, "/approve")
    grant = the_grant(runtime)
    assert (grant.tier, grant.app_id) == ("flower", "demo-app")
    with Session(runtime.engine) as s:
        issued = keys.claim(s, s.get(Grant, grant.id), APPLICANT["id"], prefix=runtime.policy.keys.prefix)
        plaintext = {item.kind: item.plaintext for item in issued}
        s.commit()
    return grant, plaintext, first


def test_upgrade_changes_the_same_grant_keeps_keys_and_links_both_issues(client, worker, runtime, fake_github,
                                                                          flower, app):
    grant, plaintext, _ = flower
    keys_before = key_rows(runtime, grant.id)

    second = open_issue(client, worker, fake_github, number=2,
                        body=body(tier="nectar", domains="demo-app.org\napi.demo-app.org"))
    report = status_body(fake_github, 2)
    # The report says it is an upgrade, at the top, with the current grant.
    top = report.split("\n", 3)[1:3]
    assert "Upgrade of `demo-app`: `flower` → `nectar`; domains: +`api.demo-app.org`" in "\n".join(top)
    assert "| Tier | `flower` |" in report and "`demo-app.org`" in report
    assert "| Keys | 2 in use" in report, report
    assert f"({REPO}#1)" in report
    assert "taken" not in report and "already yours" not in report and "existing access" not in report.lower()
    assert request_row(runtime, 2).state == RequestState.VALIDATED

    before = version(runtime)
    post_comment(client, worker, fake_github, second, MAINTAINER, "/approve")

    after = the_grant(runtime)  # still one grant: the same one
    assert (after.id, after.tier, after.app_id) == (grant.id, "nectar", "demo-app")
    assert domains_of(runtime, grant.id) == ["api.demo-app.org", "demo-app.org"]
    assert key_rows(runtime, grant.id) == keys_before
    assert version(runtime) == before + 1
    actions = audit_actions(runtime, grant.id)
    assert actions.count("grant.tier_changed") == 1 and actions.count("grant.domain_added") == 1
    assert actions.count("grant.created") == 1
    row = request_row(runtime, 2)
    assert (row.state, row.upgrade_grant_id) == (RequestState.APPROVED, grant.id)

    # Both issues closed, each linking the other, labels on the new tier.
    for number in (1, 2):
        assert fake_github.issues[(REPO, number)]["state"] == "closed"
        assert sorted(fake_github.issue_labels(REPO, number)) == ["approved", "special-access", "tier:nectar"]
    [approval] = [c for c in fake_github.bot_comments(REPO, 2) if "beekeeper:decision:approve" in c["body"]]
    assert "(from #1)" in approval["body"] and "keys stay the same" in approval["body"]
    [linked] = [c for c in fake_github.bot_comments(REPO, 1) if "upgraded-by" in c["body"]]
    assert "#2" in linked["body"] and "nectar" in linked["body"]
    assert "Approved" in status_body(fake_github, 2)

    # The keys claimed at flower are still accepted by a gateway, now at nectar, from both domains.
    with Session(runtime.engine) as s:
        credential = add_gateway(s, "edge-1")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        AppBridge(app, rsps)
        gateway = AllowlistClient(ALLOWLIST_URL, credential)
        gateway.poll()
        decision = gateway.check(key=plaintext["secret"])
        assert decision.allowed and decision.tier == "nectar" and decision.app_id == "demo-app"
        assert gateway.check(key=plaintext["publishable"], origin="https://api.demo-app.org").allowed
        assert gateway.check(key=plaintext["publishable"], origin="https://demo-app.org").allowed


def test_reject_of_an_upgrade_changes_nothing(client, worker, runtime, fake_github, flower):
    grant, _, _ = flower
    second = open_issue(client, worker, fake_github, number=2,
                        body=body(tier="nectar", domains="demo-app.org\napi.demo-app.org"))
    before, keys_before = version(runtime), key_rows(runtime, grant.id)
    labels_before = fake_github.issue_labels(REPO, 1)
    post_comment(client, worker, fake_github, second, MAINTAINER, "/reject Not yet: show us your traffic first.")
    after = the_grant(runtime)
    assert (after.id, after.tier) == (grant.id, "flower")
    assert domains_of(runtime, grant.id) == ["demo-app.org"]
    assert (version(runtime), key_rows(runtime, grant.id)) == (before, keys_before)
    assert fake_github.issue_labels(REPO, 1) == labels_before
    assert not [c for c in fake_github.bot_comments(REPO, 1) if "upgraded-by" in c["body"]]
    assert request_row(runtime, 2).state == RequestState.REJECTED
    assert "grant.tier_changed" not in audit_actions(runtime, grant.id)


def test_an_upgrade_request_by_someone_else_is_a_conflict(client, worker, runtime, fake_github, flower):
    grant, _, _ = flower
    other = open_issue(client, worker, fake_github, number=2, user=STRANGER,
                       body=body(tier="nectar", domains="demo-app.org\napi.demo-app.org"))
    report = status_body(fake_github, 2)
    assert "Upgrade of" not in report
    assert "demo-app belongs to another GitHub account" in report.replace("\\", "")
    assert "alice" not in report  # the holder is not named in public
    row = request_row(runtime, 2)
    assert row.state == RequestState.NEEDS_INFO and row.needs_maintainer
    before = version(runtime)
    post_comment(client, worker, fake_github, other, MAINTAINER, "/approve --force")
    assert the_grant(runtime).tier == "flower" and version(runtime) == before
    [reply] = [c for c in fake_github.bot_comments(REPO, 2) if "beekeeper:reply" in c["body"]]
    assert "another GitHub account" in reply["body"] and "alice" not in reply["body"]


def test_a_downgrade_with_tier_after_an_upgrade_follows_on_both_issues(client, worker, runtime, fake_github, flower):
    grant, _, _ = flower
    second = open_issue(client, worker, fake_github, number=2, body=body(tier="nectar"))
    assert "Upgrade of `demo-app`: `flower` → `nectar`" in status_body(fake_github, 2)
    post_comment(client, worker, fake_github, second, MAINTAINER, "/approve")
    assert the_grant(runtime).tier == "nectar"
    keys_before, before = key_rows(runtime, grant.id), version(runtime)

    post_comment(client, worker, fake_github, second, MAINTAINER, "/tier seed")
    after = the_grant(runtime)
    assert (after.id, after.tier) == (grant.id, "seed")
    assert version(runtime) == before + 1 and key_rows(runtime, grant.id) == keys_before
    for number in (1, 2):
        assert "tier:seed" in fake_github.issue_labels(REPO, number)
        assert "tier:nectar" not in fake_github.issue_labels(REPO, number)


def test_a_request_for_a_lower_tier_is_a_downgrade_on_the_same_path(client, worker, runtime, fake_github, flower):
    grant, _, _ = flower
    keys_before = key_rows(runtime, grant.id)
    open_issue(client, worker, fake_github, number=2, body=body(tier="seed"))
    assert "Downgrade of `demo-app`: `flower` → `seed`" in status_body(fake_github, 2)
    # seed is approved by the policy when nothing is flagged: the owner asked for less
    row = request_row(runtime, 2)
    assert (row.state, row.decided_by, row.upgrade_grant_id) == (RequestState.APPROVED, "system", grant.id)
    after = the_grant(runtime)
    assert (after.id, after.tier) == (grant.id, "seed") and key_rows(runtime, grant.id) == keys_before
    for number in (1, 2):
        assert "tier:seed" in fake_github.issue_labels(REPO, number)
        assert fake_github.issues[(REPO, number)]["state"] == "closed"


def test_a_request_that_changes_nothing_says_so(client, worker, runtime, fake_github, flower):
    open_issue(client, worker, fake_github, number=2, body=body(tier="flower"))
    report = status_body(fake_github, 2)
    assert "changes nothing" in report
    assert request_row(runtime, 2).state == RequestState.NEEDS_INFO


def test_an_upgrade_is_found_by_domain_when_no_app_id_is_given(client, worker, runtime, fake_github, flower):
    grant, _, _ = flower
    second = open_issue(client, worker, fake_github, number=2,
                        body=body(tier="nectar", referrer="", domains="demo-app.org\nwww.demo-app.org"))
    assert "Upgrade of `demo-app`" in status_body(fake_github, 2)
    post_comment(client, worker, fake_github, second, MAINTAINER, "/approve")
    assert the_grant(runtime).id == grant.id
    assert domains_of(runtime, grant.id) == ["demo-app.org", "www.demo-app.org"]



def test_a_revoked_grant_is_not_upgraded_and_its_app_id_is_not_reused(client, worker, runtime, fake_github, flower):
    grant, _, first = flower
    post_comment(client, worker, fake_github, first, MAINTAINER, "/revoke Key published.")
    second = open_issue(client, worker, fake_github, number=2, body=body(tier="nectar"))
    assert "Upgrade of" not in status_body(fake_github, 2)
    before = version(runtime)
    post_comment(client, worker, fake_github, second, MAINTAINER, "/approve --force")
    assert the_grant(runtime).status == "revoked" and version(runtime) == before
    [reply] = [c for c in fake_github.bot_comments(REPO, 2) if "beekeeper:reply" in c["body"]]
    assert "never reused" in reply["body"]
