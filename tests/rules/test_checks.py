"""Every check on its own: domains (with the Public Suffix List), app ids, contact, tier,
text fields, the applicant, and run_checks over a parsed form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.config import load_policy
from bot.core.models import AccessRequest, Grant, GrantDomain, GrantStatus, RequestState
from bot.rules import checks
from bot.rules.checks import (
    ERROR,
    OK,
    WARNING,
    check_app_name,
    check_applicant,
    check_contact,
    check_description,
    check_domains,
    check_referrer,
    check_terms,
    check_text_fields,
    check_tier,
    check_url,
    homograph_problem,
    is_placeholder,
    normalize_domain,
    normalize_referrer,
    propose_referrer,
    run_checks,
)
from bot.rules.forms import bundled_schema, parse_issue_body
from tests.conftest import INSTALLATION_ID, REPO
from tests.rules.test_forms import GOOD_ANSWERS, body

POLICY = load_policy()
ALICE, BOB = 1001, 2002


def _policy(**validation):
    return POLICY.model_copy(update={"validation": POLICY.validation.model_copy(update=validation)})


def grant(session, app_id: str, user_id: int = BOB, domains: list[str] = (), *, status: str = GrantStatus.ACTIVE,
          tier: str = "seed", **extra) -> Grant:
    """A grant row made directly (the grants service is another area)."""
    row = Grant(app_id=app_id, tier=tier, status=status, github_user_id=user_id, github_login=f"user{user_id}",
                approved_by="maintainer", **extra)
    session.add(row)
    session.flush()
    for domain in domains:
        session.add(GrantDomain(grant_id=row.id, domain=domain, active=status == GrantStatus.ACTIVE))
    session.flush()
    return row


def open_request(session, number: int, applicant_id: int = ALICE, *, referrer: str | None = None,
                 state: str = RequestState.VALIDATED) -> AccessRequest:
    row = AccessRequest(repo=REPO, issue_number=number, applicant_id=applicant_id, applicant_login="alice",
                        state=state, referrer=referrer)
    session.add(row)
    session.flush()
    return row


# ---------------------------------------------------------------------------------------------
# normalize_domain
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("  app.example.com  ", "app.example.com"),
    ("https://App.Example.com:8443/path?q=1#frag", "app.example.com"),  # scheme, port, path stripped
    ("http://example.com", "example.com"),
    ("//cdn.example.com/x.js", "cdn.example.com"),
    ("example.com:443", "example.com"),
    ("example.com.", "example.com"),  # trailing dot
    ("`example.com`", "example.com"),
    ("*.example.com", "*.example.com"),  # leading wildcard
    ("https://*.example.com/", "*.example.com"),
    ("bücher.de", "xn--bcher-kva.de"),  # IDNA → punycode
    ("BÜCHER.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("ｅｘａｍｐｌｅ.com", "example.com"),  # full-width letters map to ASCII
    ("alice.github.io", "alice.github.io"),  # under a public suffix: registrable
    ("my-app.vercel.app", "my-app.vercel.app"),
    ("bbc.co.uk", "bbc.co.uk"),
    ("例え.jp", "xn--r8jz45g.jp"),
])
def test_normalize_domain_accepts(text, expected):
    assert normalize_domain(text) == (expected, None)


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("127.0.0.1", "IP addresses"),
    ("http://10.0.0.1:8080/", "IP addresses"),
    ("[::1]", "IP addresses"),
    ("::1", "IP addresses"),
    ("http://[2001:db8::1]/", "IP addresses"),
    ("0x7f.1", "IP addresses"),
    ("localhost", "localhost"),
    ("http://localhost:3000", "localhost"),
    ("app.localhost", "localhost"),
    ("printer.local", ".local"),
    ("db.internal", ".internal"),
    ("site.test", ".test"),
    ("hidden.onion", ".onion"),
    ("router.home.arpa", ".arpa"),
    ("github.io", "public suffix"),  # bare public suffixes
    ("vercel.app", "public suffix"),
    ("*.github.io", "public suffix"),
    ("co.uk", "public suffix"),
    ("com", "public suffix"),
    ("foo.notarealtld", "top-level domain"),
    ("intranet", "private or reserved"),
    ("a.*.example.com", "wildcard"),  # wildcard only leading
    ("*example.com", "wildcard"),
    ("*.*.example.com", "wildcard"),
    ("*", "wildcard"),
    ("ftp://example.com", "web origins"),
    ("me@example.com", "e-mail"),
    ("foo_bar.com", "not a valid domain"),
    ("-foo.com", "not a valid domain"),
    ("example..com", "not a valid domain"),
    ("ex ample.com", "not a valid domain"),
    ("a" * 64 + ".com", "not a valid domain"),
    ("example.com:http", "bad port"),
])
def test_normalize_domain_refuses(text, problem):
    domain, reason = normalize_domain(text)
    assert domain is None and problem in reason


def test_private_suffixes_come_from_the_policy():
    policy = _policy(private_suffixes=["corp.example.com"])
    assert normalize_domain("wiki.corp.example.com", policy)[0] is None
    # .local is no longer listed, but it is no public TLD either: the Public Suffix List still refuses it
    assert normalize_domain("printer.local", policy) == (None, "no known top-level domain")
    assert normalize_domain("db.internal", policy) == (None, "no known top-level domain")


@pytest.mark.parametrize("domain, looks_odd", [
    ("xn--pypal-4ve.com", True),  # pаypal with a Cyrillic а: mixed script
    ("xn--80ak6aa92e.com", True),  # аррӏе: all Cyrillic letters that look Latin
    ("xn--bcher-kva.de", False),  # bücher: Latin only
    ("xn--r8jz45g.jp", False),  # 例え: Han + Hiragana is a normal Japanese mix
    ("xn--hxajbheg2az3al.gr", False),  # παράδειγμα: real Greek
    ("example.com", False),
])
def test_mixed_script_homographs(domain, looks_odd):
    assert (homograph_problem(domain) is not None) is looks_odd


# ---------------------------------------------------------------------------------------------
# check_domains
# ---------------------------------------------------------------------------------------------


def test_domains_ok_are_listed_normalised_and_deduplicated(session):
    results = check_domains(session, {"domains": ["Example.com", "https://example.com/", "*.example.com"]}, ALICE,
                            POLICY)
    assert [(r.status, r.message) for r in results] == [(OK, "example.com, *.example.com")]
    assert results[0].data["domains"] == ["example.com", "*.example.com"]


def test_no_domains_is_fine(session):
    assert [r.status for r in check_domains(session, {"domains": []}, ALICE, POLICY)] == [OK]


def test_each_bad_domain_is_an_error_quoting_it(session):
    results = check_domains(session, ["good.com", "localhost", "github.io"], ALICE, POLICY)
    assert results[0].status == OK and results[0].message == "good.com"
    errors = [r for r in results if r.status == ERROR]
    assert [e.message.split(":")[0] for e in errors] == ["localhost", "github.io"]


def test_domains_accepts_text_as_the_portal_sends_it(session):
    results = check_domains(session, "a.com\nb.com, c.com", ALICE, POLICY)
    assert results[0].data["domains"] == ["a.com", "b.com", "c.com"]


def test_too_many_domains(session):
    results = check_domains(session, [f"d{i}.com" for i in range(12)], ALICE, _policy(max_domains=10))
    assert any(r.status == ERROR and "at most 10" in r.message for r in results)


def test_homograph_domain_is_flagged_for_a_maintainer(session):
    results = check_domains(session, ["pаypal.com"], ALICE, POLICY)
    warning = next(r for r in results if r.status == WARNING)
    assert warning.flag and "mixes scripts" in warning.message


def test_domain_granted_to_another_user_is_a_conflict(session):
    grant(session, "bobsapp", BOB, ["shared.com"])
    results = check_domains(session, ["shared.com"], ALICE, POLICY)
    conflict = next(r for r in results if r.conflict)
    assert conflict.status == ERROR and "already granted to another GitHub account's app" in conflict.message
    assert "bobsapp" not in conflict.message  # the holder is not named in public (the dashboard shows it)
    assert conflict.data["grant_id"] is not None


def test_domain_granted_to_the_same_user_is_not_a_conflict(session):
    grant(session, "alicesapp", ALICE, ["mine.com"])
    assert not any(r.conflict for r in check_domains(session, ["mine.com"], ALICE, POLICY))


def test_revoked_grants_and_removed_domains_do_not_conflict(session):
    grant(session, "oldapp", BOB, ["old.com"], status=GrantStatus.REVOKED)
    bobs = grant(session, "bobsapp", BOB, [])
    session.add(GrantDomain(grant_id=bobs.id, domain="gone.com", active=False))
    session.flush()
    assert not any(r.conflict for r in check_domains(session, ["old.com", "gone.com"], ALICE, POLICY))


@pytest.mark.parametrize("granted, asked", [
    ("*.shared.com", "app.shared.com"),  # covered by another user's wildcard
    ("*.shared.com", "a.b.shared.com"),
    ("app.shared.com", "*.shared.com"),  # a wildcard that would cover another user's name
    ("shared.com", "*.shared.com"),
    ("*.shared.com", "*.shared.com"),
])
def test_wildcard_conflicts(session, granted, asked):
    grant(session, "bobsapp", BOB, [granted])
    assert any(r.conflict for r in check_domains(session, [asked], ALICE, POLICY))


def test_sibling_names_do_not_conflict(session):
    grant(session, "bobsapp", BOB, ["bob.shared.com", "notshared.com"])
    assert not any(r.conflict for r in check_domains(session, ["alice.shared.com", "shared.com"], ALICE, POLICY))


def test_dns_check_is_off_by_default_and_pluggable(session):
    looked_up: list[str] = []

    def resolver(host: str) -> bool:
        looked_up.append(host)
        return host != "nowhere.com"

    check_domains(session, ["nowhere.com"], ALICE, POLICY, resolver=resolver)
    assert looked_up == []
    results = check_domains(session, ["nowhere.com", "*.there.com"], ALICE, _policy(dns_check=True),
                            resolver=resolver)
    assert looked_up == ["nowhere.com", "there.com"]
    assert [r.message for r in results if r.status == WARNING] == ["nowhere.com does not resolve in DNS (yet)"]


# ---------------------------------------------------------------------------------------------
# referrer / app id
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("freeaichat", "freeaichat"),
    ("FreeAIChat", "freeaichat"),  # lower-cased
    ("  free-ai-chat ", "free-ai-chat"),
    ("abc", "abc"),  # 3 is the minimum
    ("a" * 39, "a" * 39),  # 39 the maximum
    ("app2", "app2"),
])
def test_referrer_accepts(text, expected):
    assert normalize_referrer(text) == (expected, None)


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    ("ab", "3 to 39"),
    ("a" * 40, "3 to 39"),
    ("free_ai", "a-z, 0-9"),
    ("free ai", "a-z, 0-9"),
    ("frée", "a-z, 0-9"),
    ("-free", "start or end"),
    ("free-", "start or end"),
])
def test_referrer_refuses(text, problem):
    name, reason = normalize_referrer(text)
    assert name is None and problem in reason


def test_reserved_referrer(session):
    result = check_referrer(session, "Admin", "My app", ALICE, POLICY)
    assert result.status == ERROR and "reserved" in result.message


def test_referrer_taken_by_another_users_grant_is_a_conflict(session):
    grant(session, "freeaichat", BOB)
    result = check_referrer(session, "freeaichat", "Free AI Chat", ALICE, POLICY)
    assert result.status == ERROR and result.conflict


def test_referrer_of_a_revoked_grant_stays_taken(session):
    grant(session, "freeaichat", BOB, status=GrantStatus.REVOKED)
    assert check_referrer(session, "freeaichat", "x", ALICE, POLICY).conflict


def test_referrer_already_the_applicants_own_is_flagged(session):
    grant(session, "freeaichat", ALICE)
    result = check_referrer(session, "freeaichat", "x", ALICE, POLICY)
    assert result.status == WARNING and result.flag and not result.conflict


def test_referrer_asked_for_by_another_open_request(session):
    open_request(session, 7, BOB, referrer="freeaichat")
    result = check_referrer(session, "freeaichat", "x", ALICE, POLICY)
    assert result.status == WARNING and not result.conflict
    assert check_referrer(session, "freeaichat", "x", BOB, POLICY).status == OK  # not against oneself


def test_good_referrer(session):
    result = check_referrer(session, "FreeAIChat", "Free AI Chat", ALICE, POLICY)
    assert (result.status, result.message, result.data) == (OK, "freeaichat",
                                                            {"referrer": "freeaichat", "proposed": False})


def test_empty_referrer_is_proposed_from_the_app_name(session):
    result = check_referrer(session, "", "Free AI Chat!", ALICE, POLICY)
    assert result.status == OK and result.data == {"referrer": "free-ai-chat", "proposed": True}
    assert "proposed: free-ai-chat" in result.message


def test_proposal_avoids_taken_and_reserved_names(session):
    grant(session, "free-ai-chat", BOB)
    open_request(session, 8, BOB, referrer="free-ai-chat-2")
    assert propose_referrer(session, "Free AI Chat", ALICE, POLICY) == "free-ai-chat-3"
    assert propose_referrer(session, "Test", ALICE, POLICY) == "test-2"  # "test" is reserved
    assert propose_referrer(session, "Über Café", ALICE, POLICY) == "uber-cafe"
    assert propose_referrer(session, "日本語", ALICE, POLICY) == f"app-{ALICE}"
    assert propose_referrer(session, "X", ALICE, POLICY) == "x-app"
    assert len(propose_referrer(session, "word " * 30, ALICE, POLICY)) <= 39


# ---------------------------------------------------------------------------------------------
# contact, tier, terms, text, URLs
# ---------------------------------------------------------------------------------------------


def test_valid_contact_is_not_echoed():
    result = check_contact("Dev@FreeAIChat.com", POLICY)
    assert result.status == OK and "freeaichat" not in (result.message + str(result.hint) + str(result.data)).lower()
    assert checks.normalize_contact("Dev@FreeAIChat.com", POLICY) == "Dev@freeaichat.com"


@pytest.mark.parametrize("contact, problem", [
    ("", "no contact"),
    ("not-an-address", "not valid"),
    ("me@localhost", "not valid"),
    ("me@@example.com", "not valid"),
    ("someone@mailinator.com", "disposable"),
    ("someone@eu.mailinator.com", "disposable"),
])
def test_bad_contacts(contact, problem):
    result = check_contact(contact, POLICY)
    assert result.status == ERROR and problem in result.message
    if contact:
        assert contact not in result.message + str(result.hint)


def _with_validation(**changes):
    return POLICY.model_copy(update={"validation": POLICY.validation.model_copy(update=changes)})


def test_disposable_domains_come_from_the_maintained_list_and_the_policy():
    # On the package's list (about 10,000 domains), not in the policy file.
    assert "throwawaymail.com" not in POLICY.validation.disposable_email_domains
    assert check_contact("a@throwawaymail.com", POLICY).status == ERROR
    assert check_contact("a@gmail.com", POLICY).status == OK
    # The policy adds a domain (and its subdomains) ...
    added = _with_validation(disposable_email_domains=["burner.example.org"])
    assert check_contact("a@mx.burner.example.org", added).status == ERROR
    # ... or allows one the list has.
    allowed = _with_validation(allowed_email_domains=["mailinator.com"])
    assert check_contact("a@mailinator.com", allowed).status == OK
    # Without the list only the policy's own domains count.
    assert check_contact("a@throwawaymail.com", _with_validation(disposable_email_list=False)).status == OK


def test_tier_choices():
    assert check_tier("flower", POLICY).status == OK
    assert check_tier("Flower", POLICY).data == {"tier": "flower"}
    assert check_tier(["seed"], POLICY).status == OK
    assert check_tier("", POLICY).status == ERROR
    assert check_tier(["seed", "flower"], POLICY).status == ERROR
    unknown = check_tier("gold", POLICY)
    assert unknown.status == ERROR and "seed, flower, nectar" in unknown.hint


def test_tier_above_the_requestable_maximum_is_flagged():
    result = check_tier("nectar", POLICY)
    assert result.status == WARNING and result.flag and "(flower)" in result.message
    assert check_tier("nectar", POLICY.model_copy(update={"max_requestable_tier": None})).status == OK


def test_terms():
    assert check_terms(True).status == OK
    result = check_terms(False, ["I agree to the terms."])
    assert result.status == ERROR and "I agree to the terms." in result.message


@pytest.mark.parametrize("text", ["gg", "test", "asdf", "Test Test", "aaaa", "...", "n/a", "Lorem ipsum", "TBD!"])
def test_placeholder_junk(text):
    assert is_placeholder(text, POLICY)


@pytest.mark.parametrize("text", ["Free AI Chat", "Testing Platform for Students", "gg.deals", "Ab"])
def test_real_names_are_not_placeholders(text):
    assert not is_placeholder(text, POLICY)


def test_app_name_rules():
    assert check_app_name("Free AI Chat", POLICY).status == OK
    assert check_app_name("", POLICY).status == ERROR
    assert "placeholder" in check_app_name("asdf", POLICY).message
    assert "placeholder" in check_app_name("X", POLICY).message  # under two letters
    assert "too long" in check_app_name("A" * 81, POLICY).message


def test_description_rules():
    assert check_description("A chat app for students that calls the API.", POLICY).status == OK
    assert "no description" in check_description("   ", POLICY).message
    assert "too short" in check_description("A chat app.", POLICY).message
    assert "placeholder" in check_description("test test test test test test", POLICY).message
    assert "too long" in check_description("x y " * 2001, POLICY).message


def test_text_fields_together():
    results = check_text_fields({"app_name": "gg", "description": "lorem ipsum"}, POLICY)
    assert [r.name for r in results] == ["app name", "description"] and all(r.status == ERROR for r in results)


def test_urls():
    assert check_url("", "homepage", POLICY) is None
    assert check_url("https://freeaichat.com/about", "homepage", POLICY).status == OK
    assert check_url("freeaichat.com", "homepage", POLICY).status == OK
    for bad in ("javascript:alert(1)", "http://localhost:3000", "https://10.0.0.1/", "ftp://x.com", "https://*.x.com"):
        assert check_url(bad, "homepage", POLICY).status == ERROR, bad


# ---------------------------------------------------------------------------------------------
# applicant
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gh(github, fake_github):
    return github.for_installation(INSTALLATION_ID)


def _created(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_old_account_is_fine(session, gh, fake_github):
    fake_github.add_user("alice", ALICE, created_at=_created(400))
    results = check_applicant(gh, session, "alice", ALICE, None, POLICY)
    assert [(r.name, r.status) for r in results] == [("account", OK)]


def test_young_account_is_flagged(session, gh, fake_github):
    fake_github.add_user("newbie", ALICE, created_at=_created(3))
    result = check_applicant(gh, session, "newbie", ALICE, None, POLICY)[0]
    assert result.status == WARNING and result.flag and "3 days old" in result.message


def test_renamed_login_is_found_by_numeric_id(session, gh, fake_github):
    fake_github.add_user("new-name", ALICE, created_at=_created(400))
    results = check_applicant(gh, session, "old-name", ALICE, None, POLICY)
    assert results[0].status == OK


def test_unknown_account_is_flagged(session, gh, fake_github):
    result = check_applicant(gh, session, "ghost", 999, None, POLICY)[0]
    assert result.status == WARNING and result.flag


def test_no_github_client_skips_the_age_check(session):
    assert check_applicant(None, session, "alice", ALICE, None, POLICY) == []


def test_another_open_request_is_linked(session):
    older = open_request(session, 3, ALICE)
    mine = open_request(session, 9, ALICE, state=RequestState.RECEIVED)
    open_request(session, 4, ALICE, state=RequestState.REJECTED)  # closed ones do not count
    open_request(session, 5, BOB)
    results = check_applicant(None, session, "alice", ALICE, mine.id, POLICY)
    assert len(results) == 1
    assert results[0].ref == f"{REPO}#3" and results[0].flag and results[0].data["duplicate_of"] == older.id
    # from the older request's side, the newer one is linked but it is not the duplicate
    back = check_applicant(None, session, "alice", ALICE, older.id, POLICY)
    assert back[0].ref == f"{REPO}#9" and back[0].data["duplicate_of"] is None


def test_existing_active_grant_suggests_a_tier_change(session):
    grant(session, "alicesapp", ALICE, repo=REPO, issue_number=2, tier="seed")
    grant(session, "oldone", ALICE, status=GrantStatus.REVOKED)
    results = check_applicant(None, session, "alice", ALICE, None, POLICY)
    assert len(results) == 1
    assert "alicesapp (tier seed)" in results[0].message and "tier change" in results[0].hint
    assert results[0].ref == f"{REPO}#2"


# ---------------------------------------------------------------------------------------------
# run_checks
# ---------------------------------------------------------------------------------------------


def _run(session, answers=None, *, gh=None, **kwargs):
    schema = bundled_schema()
    parsed = parse_issue_body(body(answers), schema, POLICY)
    return run_checks(session, parsed, POLICY, schema=schema, applicant_id=ALICE, applicant_login="alice", gh=gh,
                      **kwargs)


def test_a_good_request_passes(session, gh, fake_github):
    fake_github.add_user("alice", ALICE, created_at=_created(400))
    report = _run(session, gh=gh)
    assert report.ok and not report.needs_maintainer, [r for r in report.results if r.status != OK]
    assert [r.name for r in report.results] == ["app name", "description", "homepage", "domains", "app id",
                                                "contact", "tier", "terms", "account"]
    assert report.normalized == {"domains": ["freeaichat.com", "*.freeaichat.com"], "referrer": "freeaichat",
                                 "referrer_proposed": False, "tier": "seed", "contact": "dev@freeaichat.com"}
    assert "dev@freeaichat.com" not in str([r.to_dict() for r in report.results])


def test_conflicts_and_flags_are_reported(session):
    grant(session, "freeaichat", BOB, ["freeaichat.com"])
    report = _run(session, {**GOOD_ANSWERS, "tier": "nectar"})
    assert not report.ok
    assert {r.name for r in report.conflicts} == {"domains", "app id"}
    assert [r.name for r in report.flags] == ["tier"] and report.needs_maintainer


def test_free_text_only_reports_the_form(session):
    schema = bundled_schema()
    parsed = parse_issue_body("please give me access", schema, POLICY)
    report = run_checks(session, parsed, POLICY, schema=schema, applicant_id=ALICE)
    assert [r.name for r in report.results] == ["form"] and not report.ok
    assert "App name (required)" in report.results[0].hint and "Contact e-mail (required)" in report.results[0].hint


def test_results_survive_a_round_trip_through_json(session):
    report = _run(session, {**GOOD_ANSWERS, "domains": "localhost"})
    assert [checks.CheckResult.from_dict(r.to_dict()) for r in report.results] == report.results
