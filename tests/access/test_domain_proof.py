"""Proof of domain control (issue 14, item 7): self-service domains wait until a DNS TXT record or
the well-known file shows the token. A local DNS server and a local web server stand in for the
applicant's zone and site; nothing here reaches the internet."""

from __future__ import annotations

import dataclasses
import html

import pytest
from sqlmodel import Session, select

from bot.access import domain_proof
from bot.allowlist.versioning import current_version
from bot.core.config import ConfigError, load_settings
from bot.core.models import AuditEvent, DomainChange, DomainProof, Grant, GrantDomain
from tests.portal_data import APPLICANT, STRANGER, add_people, csrf, fetch, install, make_grant, read, sign_in
from tests.proof_servers import LocalDNS, Page, Site, proof_settings


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


@pytest.fixture
def dns_server():
    with LocalDNS() as server:
        yield server


@pytest.fixture
def site():
    with Site() as server:
        yield server


@pytest.fixture
def local_net(runtime, settings, dns_server, site):
    """The app's resolver is the local DNS server; the file is fetched from the local site."""
    runtime.settings = proof_settings(settings, dns_server, site)
    return runtime


def with_proof(policy, mode: str):
    return policy.model_copy(update={"tiers": [t.model_copy(update={"domain_proof": mode}) for t in policy.tiers]})


def post(client, url, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def self_serve(client, domains: str, app_id: str = "mychat"):
    return post(client, "/me/self-service", app_id=app_id, domains=domains)


def the_grant(db) -> Grant:
    [grant] = read(db, select(Grant).where(Grant.github_user_id == APPLICANT["id"]))
    return grant


def proofs_of(db, grant) -> dict[str, DomainProof]:
    return {p.domain: p for p in read(db, select(DomainProof).where(DomainProof.grant_id == grant.id))}


def active_domains(db, grant) -> list[str]:
    return sorted(read(db, select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id,
                                                            GrantDomain.active == True)))  # noqa: E712


def verify(client, grant, proof):
    response = post(client, f"/me/grants/{grant.id}/domain-proofs/{proof.id}/verify")
    assert response.status_code == 302
    return client.get("/me").get_data(as_text=True)


# --- self-service ---------------------------------------------------------------------------------


def test_self_service_domains_are_pending_until_proven_and_the_page_says_what_to_create(client, db, world,
                                                                                       local_net):
    sign_in(client, APPLICANT, world)
    assert "prove it is yours" in client.get("/me/self-service").get_data(as_text=True)
    response = self_serve(client, "app.mychat.dev\n*.mychat.dev")
    assert response.status_code == 302
    grant = the_grant(db)
    assert active_domains(db, grant) == []
    proofs = proofs_of(db, grant)
    assert set(proofs) == {"app.mychat.dev", "*.mychat.dev"}
    assert all(p.state == "pending" and len(p.token) >= 32 for p in proofs.values())
    assert proofs["app.mychat.dev"].token != proofs["*.mychat.dev"].token
    page = client.get("/me").get_data(as_text=True)
    assert f"beekeeper-verification={proofs['app.mychat.dev'].token}" in page
    assert "https://app.mychat.dev/.well-known/beekeeper-verification.txt" in page
    assert f"beekeeper-verification={proofs['*.mychat.dev'].token}" in page
    assert "https://mychat.dev/.well-known" not in page  # a wildcard: DNS of the base domain only
    assert "Verify" in page


def test_a_txt_record_proves_a_wildcard_on_its_base_domain(client, db, world, local_net, dns_server):
    sign_in(client, APPLICANT, world)
    self_serve(client, "*.mychat.dev")
    grant = the_grant(db)
    proof = proofs_of(db, grant)["*.mychat.dev"]
    version = version_of(db)

    page = verify(client, grant, proof)  # nothing published yet
    assert "not verified yet" in page and "mychat.dev does not exist" in page
    assert active_domains(db, grant) == [] and fetch(db, DomainProof, proof.id).state == "pending"

    dns_server.zone.txt["mychat.dev"] = ["v=spf1 -all", "beekeeper-verification=someone-elses-token"]
    page = verify(client, grant, proof)
    assert "not verified yet" in page and active_domains(db, grant) == []

    dns_server.zone.txt["mychat.dev"].append(f"beekeeper-verification={proof.token}")
    page = verify(client, grant, proof)
    assert "is verified and added" in page
    assert active_domains(db, grant) == ["*.mychat.dev"]
    stored = fetch(db, DomainProof, proof.id)
    assert (stored.state, stored.method) == ("verified", "dns") and stored.verified_at is not None
    assert ("mychat.dev", "TXT") in dns_server.zone.queries
    assert version_of(db) > version  # it entered the allowlist
    [event] = read(db, select(AuditEvent).where(AuditEvent.action == "domain.proof_verified"))
    assert event.details == {"domain": "*.mychat.dev", "proof_id": proof.id, "method": "dns"}
    assert read(db, select(AuditEvent).where(AuditEvent.action == "grant.domain_added"))


def version_of(db) -> int:
    with Session(db) as s:
        return current_version(s)


def test_the_well_known_file_proves_a_host(client, db, world, local_net, dns_server, site):
    sign_in(client, APPLICANT, world)
    self_serve(client, "app.mychat.dev")
    grant = the_grant(db)
    proof = proofs_of(db, grant)["app.mychat.dev"]
    dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
    site.pages[("app.mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=b"wrong-token\n")
    assert "does not contain the token" in verify(client, grant, proof)
    site.pages[("app.mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=f"other\n{proof.token}\n".encode())
    assert "is verified and added" in verify(client, grant, proof)
    assert active_domains(db, grant) == ["app.mychat.dev"]
    assert fetch(db, DomainProof, proof.id).method == "http"
    assert ("app.mychat.dev", domain_proof.WELL_KNOWN_PATH) in site.requests


def test_a_file_cannot_prove_a_wildcard(client, db, world, local_net, dns_server, site):
    sign_in(client, APPLICANT, world)
    self_serve(client, "*.mychat.dev")
    grant = the_grant(db)
    proof = proofs_of(db, grant)["*.mychat.dev"]
    dns_server.zone.a["mychat.dev"] = "127.0.0.1"
    site.pages[("mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=proof.token.encode())
    verify(client, grant, proof)
    assert active_domains(db, grant) == [] and site.requests == []


def test_a_tier_that_accepts_only_the_file_refuses_wildcards_at_self_service(client, db, world, runtime,
                                                                            local_net):
    runtime.policy = with_proof(runtime.policy, "http")
    sign_in(client, APPLICANT, world)
    response = self_serve(client, "*.mychat.dev")
    assert response.status_code == 200
    assert "needs a DNS record on mychat.dev" in response.get_data(as_text=True)
    assert read(db, select(Grant)) == []


def test_a_dns_only_tier_does_not_look_at_the_file(client, db, world, runtime, local_net, dns_server, site):
    runtime.policy = with_proof(runtime.policy, "dns")
    sign_in(client, APPLICANT, world)
    self_serve(client, "app.mychat.dev")
    grant = the_grant(db)
    proof = proofs_of(db, grant)["app.mychat.dev"]
    dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
    site.pages[("app.mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=proof.token.encode())
    page = verify(client, grant, proof)
    assert "not verified yet" in page and active_domains(db, grant) == [] and site.requests == []
    assert f"https://app.mychat.dev{domain_proof.WELL_KNOWN_PATH}" not in page


def test_domain_proof_none_takes_domains_at_once(client, db, world, runtime):
    runtime.policy = with_proof(runtime.policy, "none")
    sign_in(client, APPLICANT, world)
    self_serve(client, "app.mychat.dev")
    grant = the_grant(db)
    assert active_domains(db, grant) == ["app.mychat.dev"] and proofs_of(db, grant) == {}


def test_a_pending_domain_goes_in_when_the_policy_stops_asking_for_proof(client, db, world, runtime, local_net,
                                                                        dns_server):
    sign_in(client, APPLICANT, world)
    self_serve(client, "app.mychat.dev")
    grant = the_grant(db)
    proof = proofs_of(db, grant)["app.mychat.dev"]
    runtime.policy = with_proof(runtime.policy, "none")
    assert "is verified and added" in verify(client, grant, proof)
    assert active_domains(db, grant) == ["app.mychat.dev"] and dns_server.zone.queries == []


# --- the portal's "Add a domain" on an automatic tier -------------------------------------------------


def test_adding_a_domain_on_an_automatic_tier_needs_proof_too(client, session, db, world, local_net, dns_server):
    grant = make_grant(session, tier="seed", app_id="seedapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="Stripe.com")
    assert active_domains(db, grant) == []
    proof = proofs_of(db, grant)["stripe.com"]
    assert "waits for proof" in client.get("/me").get_data(as_text=True)
    post(client, f"/me/grants/{grant.id}/domains", domain="stripe.com")  # asked again: the same token
    assert len(proofs_of(db, grant)) == 1
    dns_server.zone.txt["stripe.com"] = [f"beekeeper-verification={proof.token}"]
    assert "is verified and added" in verify(client, grant, proof)
    assert active_domains(db, grant) == ["stripe.com"]


def test_a_reviewed_tier_keeps_the_maintainer_review_without_proof(client, session, db, world, local_net):
    grant = make_grant(session, tier="flower", app_id="flowerapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="beta.flowerapp.com")
    assert [c.domain for c in read(db, select(DomainChange))] == ["beta.flowerapp.com"]
    assert proofs_of(db, grant) == {}


def test_a_domain_taken_meanwhile_is_refused_at_verification_and_stays_pending(client, session, db, world,
                                                                              local_net, dns_server):
    grant = make_grant(session, tier="seed", app_id="seedapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="contested.dev")
    proof = proofs_of(db, grant)["contested.dev"]
    make_grant(session, owner=STRANGER, app_id="theirs", domains=("contested.dev",))
    dns_server.zone.txt["contested.dev"] = [f"beekeeper-verification={proof.token}"]
    page = verify(client, grant, proof)
    assert "already granted to another GitHub account's app" in html.unescape(page)
    assert active_domains(db, grant) == [] and fetch(db, DomainProof, proof.id).state == "pending"


def test_a_pending_domain_can_be_withdrawn(client, session, db, world, local_net):
    grant = make_grant(session, tier="seed", app_id="seedapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="later.dev")
    proof = proofs_of(db, grant)["later.dev"]
    post(client, f"/me/grants/{grant.id}/domain-proofs/{proof.id}/withdraw")
    assert fetch(db, DomainProof, proof.id).state == "withdrawn"
    assert "You withdrew later.dev" in client.get("/me").get_data(as_text=True)
    assert "later.dev" not in client.get("/me").get_data(as_text=True)  # the flash is gone, so is the domain


def test_nobody_else_can_see_verify_or_withdraw_a_proof(client, session, db, world, local_net, dns_server):
    grant = make_grant(session, tier="seed", app_id="seedapp", domains=())
    sign_in(client, APPLICANT, world)
    post(client, f"/me/grants/{grant.id}/domains", domain="mine.dev")
    proof = proofs_of(db, grant)["mine.dev"]
    dns_server.zone.txt["mine.dev"] = [f"beekeeper-verification={proof.token}"]
    sign_in(client, STRANGER, world)
    assert proof.token not in client.get("/me").get_data(as_text=True)
    for action in ("verify", "withdraw"):
        response = post(client, f"/me/grants/{grant.id}/domain-proofs/{proof.id}/{action}")
        assert response.status_code == 404 and proof.token not in response.get_data(as_text=True)
    assert fetch(db, DomainProof, proof.id).state == "pending" and active_domains(db, grant) == []


# --- the fetch: production rules ---------------------------------------------------------------------


def prover(settings, dns_server, site, **changes):
    return domain_proof.Prover(dataclasses.replace(proof_settings(settings, dns_server, site), **changes))


def test_the_file_is_not_fetched_from_a_private_address_in_production(settings, dns_server, site):
    dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
    site.pages[("app.mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=b"tok")
    problem = prover(settings, dns_server, site, domain_proof_allow_private_addresses=False).http(
        "app.mychat.dev", "tok")
    assert "non-public address" in problem and site.requests == []


def test_redirects_stay_on_the_same_host(settings, dns_server, site):
    dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
    path = domain_proof.WELL_KNOWN_PATH
    site.pages[("app.mychat.dev", path)] = Page(302, location="/elsewhere.txt")
    site.pages[("app.mychat.dev", "/elsewhere.txt")] = Page(body=b"tok")
    check = prover(settings, dns_server, site)
    assert check.http("app.mychat.dev", "tok") is None
    site.pages[("app.mychat.dev", path)] = Page(302, location=f"http://app.mychat.dev:{site.port}/elsewhere.txt")
    assert check.http("app.mychat.dev", "tok") is None  # an absolute URL on the same host and port
    site.pages[("app.mychat.dev", path)] = Page(302, location=f"http://evil.dev:{site.port}/tok.txt")
    site.pages[("evil.dev", "/tok.txt")] = Page(body=b"tok")
    assert "redirects to another host" in check.http("app.mychat.dev", "tok")
    assert ("evil.dev", "/tok.txt") not in site.requests


def test_a_large_file_is_refused(settings, dns_server, site):
    dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
    site.pages[("app.mychat.dev", domain_proof.WELL_KNOWN_PATH)] = Page(body=b"tok\n" + b"x" * 10_000)
    assert "larger than" in prover(settings, dns_server, site).http("app.mychat.dev", "tok")


def test_production_fetches_https_on_443_and_the_environment_cannot_change_that(tmp_path):
    settings = load_settings({"BEEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
                              "BEEKEEPER_DOMAIN_PROOF_HTTP_SCHEME": "http",
                              "BEEKEEPER_DOMAIN_PROOF_HTTP_PORT": "8080",
                              "BEEKEEPER_DOMAIN_PROOF_ALLOW_PRIVATE_ADDRESSES": "1",
                              "BEEKEEPER_DNS_NAMESERVER": "10.0.0.53", "BEEKEEPER_DNS_PORT": "5353"})
    assert (settings.domain_proof_http_scheme, settings.domain_proof_http_port,
            settings.domain_proof_allow_private_addresses) == ("https", None, False)
    assert (settings.dns_nameserver, settings.dns_port) == ("10.0.0.53", 5353)
    assert settings.domain_proof_timeout <= 10
    with pytest.raises(ConfigError, match="BEEKEEPER_DNS_NAMESERVER"):
        load_settings({"BEEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
                       "BEEKEEPER_DNS_NAMESERVER": "ns1.example.com"})


def test_the_policy_refuses_an_unknown_proof_mode(tmp_path):
    from bot.core.config import load_policy

    path = tmp_path / "policy.yml"
    path.write_text("tiers:\n  - {name: seed, rank: 1, requests_per_minute: 1, concurrency: 1, domain_proof: maybe}\n")
    with pytest.raises(ConfigError, match="domain_proof"):
        load_policy(path)


def test_a_site_that_never_answers_is_given_up_on(settings, dns_server, site):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # connections are taken by the kernel and never answered
    try:
        dns_server.zone.a["app.mychat.dev"] = "127.0.0.1"
        check = prover(settings, dns_server, site, domain_proof_http_port=silent.getsockname()[1],
                       domain_proof_timeout=0.5)
        problem = check.http("app.mychat.dev", "tok")
        assert "could not be fetched" in problem and "Timeout" in problem
    finally:
        silent.close()
