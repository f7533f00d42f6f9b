"""Adoption (issue 12): a platform's own, unchanged issue form and its real requests.

The form (tests/fixtures/forms/flower-access.yml) has no tier field, a free-text contact, one
"domain or referrer" field whose label was renamed, and an optional field; its policy is
tests/fixtures/forms/flower-policy.yml. Bodies are as GitHub renders them: CRLF, `_No response_`,
missing optional sections, old labels, headings out of order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.core import comments
from bot.core.config import load_policy
from bot.core.models import AccessRequest, Grant, GrantDomain, RequestState
from bot.intake.router import Event
from bot.requests.review import review_issue
from bot.rules.checks import ERROR, OK, WARNING, check_contact, github_login_exists
from bot.rules.forms import parse_form_template, parse_issue_body
from tests.conftest import INSTALLATION_ID, REPO, deliver, issue_event
from tests.request_helpers import MAINTAINER, add_people, post_comment

FORMS = Path(__file__).parent.parent / "fixtures" / "forms"
TEMPLATE_PATH = ".github/ISSUE_TEMPLATE/flower.yml"
TEMPLATE = (FORMS / "flower-access.yml").read_text()
SCHEMA = parse_form_template(TEMPLATE, source="test")
APPLICANT = {"login": "buzzy", "id": 4242, "type": "User"}
OLD = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")


def crlf(name: str) -> str:
    """A fixture body as the web form sends it (CRLF line endings)."""
    return (FORMS / "bodies" / f"{name}.md").read_text().replace("\r\n", "\n").replace("\n", "\r\n")


@pytest.fixture
def policy():
    return load_policy(FORMS / "flower-policy.yml")


@pytest.fixture(autouse=True)
def repository(fake_github):
    fake_github.files[(REPO, TEMPLATE_PATH)] = TEMPLATE
    fake_github.add_user(APPLICANT["login"], APPLICANT["id"], created_at=OLD)
    add_people(fake_github)


@pytest.fixture
def ctx(runtime, session):
    event = Event(name="issues", action="opened", payload={}, delivery_id="d", installation_id=INSTALLATION_ID)
    return runtime.make_context(session, event)


def file_issue(fake_github, text: str, *, number: int = 1, labels=("flower-request",),
               title: str = "[Flower] ImgGen") -> dict:
    return fake_github.add_issue(REPO, number, body=text, user=dict(APPLICANT), labels=list(labels), title=title)


def status_text(fake_github, number: int = 1) -> str:
    [comment] = [c for c in fake_github.bot_comments(REPO, number) if comments.STATUS_MARKER in c["body"]]
    return comment["body"]


def marked(request: AccessRequest, status: str) -> list[tuple[str, str]]:
    return [(r["name"], r["message"]) for r in request.check_results if r["status"] == status]


# ---- the policy ---------------------------------------------------------------------------------


def test_the_policy_describes_the_form(policy):
    [form] = policy.request_forms
    assert policy.trigger_labels == ["flower-request"] and form.fixed_tier == "flower"
    assert "tier" not in form.role_map and form.role_map["domain_or_referrer"] == "domain-referrer"
    assert SCHEMA.roles_present(policy, form) == {"app_name", "description", "domain_or_referrer", "contact",
                                                  "homepage", "terms"}


# ---- parsing, field by field ---------------------------------------------------------------------


def parse(name: str, policy, labelled: bool = True):
    return parse_issue_body(crlf(name), SCHEMA, policy, spec=policy.default_form, labelled=labelled)


DESCRIPTION = "ImgGen turns prompts into images for a Discord community of about 4,000 artists."


def test_old_labels_parse_field_by_field(policy):
    parsed = parse("old-labels", policy)
    assert parsed.problems == [] and parsed.missing == []
    assert parsed.values == {"app_name": "ImgGen", "description": DESCRIPTION, "domain_or_referrer": ["imggen.app"],
                             "contact": "artist@imggen.app", "homepage": "", "terms": True}


def test_old_labels_without_the_aliases_lose_those_fields(policy):
    form = policy.default_form.model_copy(update={"aliases": {}})
    parsed = parse_issue_body(crlf("old-labels"), SCHEMA, policy, spec=form, labelled=True)
    # "Domain/Referrer to Approve" still holds every word of the id domain-referrer: matched.
    assert parsed.values["domain_or_referrer"] == ["imggen.app"]
    # "Description" does not: the field is reported missing, once.
    assert parsed.missing == ["about"] and len(parsed.problems) == 1


def test_headings_out_of_order_parse_field_by_field(policy):
    parsed = parse("out-of-order", policy)
    assert parsed.problems == [] and parsed.missing == ["website"]
    assert parsed.values == {"app_name": "ImgGen", "description": DESCRIPTION, "domain_or_referrer": ["imggen.app"],
                             "contact": "buzzy.artist", "terms": True}


def test_a_missing_optional_section_is_not_a_problem(policy):
    parsed = parse("missing-optional", policy)
    assert parsed.problems == [] and parsed.missing == ["website"] and "homepage" not in parsed.values


def test_domain_or_referrer_values_are_split_by_line_not_by_space(policy):
    assert parse("complete", policy).values["domain_or_referrer"] == ["imggen.app", "https://www.imggen.app/",
                                                                      "imggen-bot"]
    assert parse("app-name-as-referrer", policy).values["domain_or_referrer"] == ["ImgGen Bot"]


def test_an_unlabelled_body_needs_most_headings_a_labelled_one_needs_one(policy):
    one_heading = "### How can we reach you?\r\n\r\nbuzzy.artist\r\n\r\nPlease give me the flower tier."
    assert parse_issue_body(one_heading, SCHEMA, policy, spec=policy.default_form, labelled=True).from_form
    assert not parse_issue_body(one_heading, SCHEMA, policy, spec=policy.default_form).from_form
    assert parse("complete", policy, labelled=False).from_form


# ---- reviews: exactly the ❌ lines each request deserves -----------------------------------------


def test_a_complete_request_is_validated_for_the_forms_tier(ctx, fake_github):
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("complete")), reason="opened")
    assert request.state == RequestState.VALIDATED and request.checks_ok and not request.needs_maintainer
    assert marked(request, ERROR) == [] and marked(request, WARNING) == []
    assert (request.requested_tier, request.referrer, request.form_name) == ("flower", "imggen-bot", "flower")
    assert request.contact == "discord:buzzy.artist"
    domains = next(r["data"]["domains"] for r in request.check_results if r["name"] == "domains")
    assert domains == ["imggen.app", "www.imggen.app"] and request.values["domains"] == domains
    text = status_text(fake_github)
    assert "All checks passed" in text and "tier **flower**" in text
    # Informational lines are folded into "Details"; nothing about fields the form lacks.
    main, details = text.split("<details><summary>Details</summary>")
    assert "**Account**" in details and "**Tier**" in details and "**Account**" not in main
    assert "Repository" not in text and "Traffic" not in text
    # No privacy claim the form makes untrue: the contact is in the public issue body.
    assert "stored privately" not in text and "part of the issue body" in text
    assert "flower-request" in fake_github.issue_labels(REPO, 1) and "validated" in fake_github.issue_labels(REPO, 1)


def test_old_labels_and_out_of_order_requests_are_validated(ctx, fake_github):
    for number, name in enumerate(("old-labels", "out-of-order", "missing-optional"), start=1):
        fake_github.add_user("octo-artist", 777, created_at=OLD)
        request = review_issue(ctx, REPO, file_issue(fake_github, crlf(name), number=number), reason="opened")
        assert request.state == RequestState.VALIDATED, (name, marked(request, ERROR))


def test_a_missing_required_section_is_one_error(ctx, fake_github):
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("no-contact-section")), reason="opened")
    assert request.state == RequestState.NEEDS_INFO
    assert marked(request, ERROR) == [("form", 'The "How can we reach you?" field is missing (the form may have '
                                       'changed since this issue was opened): add a line "### How can we reach '
                                       'you?" followed by your answer.')]
    assert "fix the 1 point marked ❌" in status_text(fake_github)


def test_empty_answers_get_one_error_each(ctx, fake_github):
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("empty-answers")), reason="opened")
    assert marked(request, ERROR) == [
        ("description", "no description given"),
        ("domain or referrer", "nothing listed"),
        ("contact", "no contact given"),
        ("terms", "not ticked: I have read the usage rules and will keep my key out of public code"),
    ]
    text = status_text(fake_github)
    assert "fix the 4 points marked ❌" in text and text.count("\n- ❌") == 4
    # The contact hint follows the form's own description of the field.
    assert r"The form asks: Discord username, GitHub username or e\-mail" in text  # escaped for markdown


def test_a_github_contact_that_does_not_exist_is_one_error(ctx, fake_github):
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("missing-optional")), reason="opened")
    assert marked(request, ERROR) == [("contact", "the contact is not a GitHub username nor a Discord username")]


def test_an_app_name_typed_as_referrer_gets_the_suggested_id(ctx, fake_github):
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("app-name-as-referrer")), reason="opened")
    assert request.state == RequestState.VALIDATED and request.referrer == "imggen-bot"
    assert marked(request, WARNING) == [("app id", "ImgGen Bot is not an app id; using imggen-bot")]


def test_without_use_suggestion_the_suggestion_is_the_hint(ctx, fake_github, runtime):
    strict = runtime.policy.model_copy(update={"app_ids": runtime.policy.app_ids.model_copy(
        update={"use_suggestion": False})})
    ctx.policy = strict
    request = review_issue(ctx, REPO, file_issue(fake_github, crlf("app-name-as-referrer")), reason="opened")
    [bad] = [r for r in request.check_results if r["status"] == ERROR]
    assert bad["name"] == "app id" and bad["hint"] == "Use 3-39 characters of a-z, 0-9 and -, like imggen-bot."


def test_two_app_ids_in_the_field_are_one_error(ctx, fake_github):
    text = crlf("complete").replace("imggen-bot", "imggen-bot\r\nother-bot")
    request = review_issue(ctx, REPO, file_issue(fake_github, text), reason="opened")
    assert marked(request, ERROR) == [("app id", "more than one app id given (imggen-bot, other-bot)")]


# ---- end to end: webhook, label, plain /approve --------------------------------------------------


def request_row(runtime, number: int = 1) -> AccessRequest:
    with Session(runtime.engine) as s:
        return s.exec(select(AccessRequest).where(AccessRequest.issue_number == number)).one()


def test_a_complete_request_is_approved_with_plain_approve(client, worker, runtime, fake_github):
    body = crlf("complete")
    file_issue(fake_github, body)
    payload = issue_event("opened", body=body, user=dict(APPLICANT), labels=["flower-request"],
                          title="[Flower] ImgGen")
    assert deliver(client, "issues", payload).status_code == 202
    worker.run_once()
    assert request_row(runtime).state == RequestState.VALIDATED
    post_comment(client, worker, fake_github, payload, MAINTAINER, "/approve")
    with Session(runtime.engine) as s:
        [grant] = s.exec(select(Grant)).all()
        assert (grant.tier, grant.app_id, grant.github_user_id) == ("flower", "imggen-bot", APPLICANT["id"])
        assert sorted(d.domain for d in s.exec(select(GrantDomain)).all()) == ["imggen.app", "www.imggen.app"]
    assert request_row(runtime).state == RequestState.APPROVED


@pytest.mark.parametrize("title", ["[Flower] ImgGen", "Please approve ImgGen"])
def test_a_form_body_without_the_label_gets_it(client, worker, runtime, fake_github, title):
    body = crlf("complete")
    file_issue(fake_github, body, labels=(), title=title)
    payload = issue_event("opened", body=body, user=dict(APPLICANT), labels=[], title=title)
    assert deliver(client, "issues", payload).status_code == 202
    worker.run_once()
    assert "flower-request" in fake_github.issue_labels(REPO, 1)
    assert request_row(runtime).state == RequestState.VALIDATED


def test_a_title_prefix_and_one_heading_make_a_form_issue(client, worker, runtime, fake_github):
    body = "### How can we reach you?\r\n\r\nbuzzy.artist\r\n\r\nPlease give ImgGen the flower tier."
    file_issue(fake_github, body, labels=(), title="[Flower] ImgGen")
    deliver(client, "issues", issue_event("opened", body=body, user=dict(APPLICANT), labels=[],
                                          title="[Flower] ImgGen"))
    worker.run_once()
    assert "flower-request" in fake_github.issue_labels(REPO, 1)
    assert request_row(runtime).state == RequestState.NEEDS_INFO


# ---- free-text requests --------------------------------------------------------------------------


def _free_text(client, worker, fake_github, number: int, title: str, body: str, action: str = "opened"):
    if (REPO, number) not in fake_github.issues:
        file_issue(fake_github, body, number=number, labels=(), title=title)
    deliver(client, "issues", issue_event(action, body=body, number=number, user=dict(APPLICANT), labels=[],
                                          title=title, changes={"body": {"from": ""}} if action == "edited" else None))
    worker.run_once()


def test_free_text_requests_are_ignored_by_default(client, worker, runtime, fake_github):
    _free_text(client, worker, fake_github, 1, "Need an API key", "Hi, can I get access for my bot?")
    assert fake_github.comments_on(REPO, 1) == []


def test_free_text_request_gets_one_polite_pointer(client, worker, runtime, fake_github):
    runtime.policy = runtime.policy.model_copy(update={"free_text_requests": runtime.policy.free_text_requests
                                                       .model_copy(update={"reply": True})})
    _free_text(client, worker, fake_github, 1, "Need an API key", "Hi, can I get access for my bot?")
    _free_text(client, worker, fake_github, 1, "Need an API key", "Hi, can I get access for my bot? Please!",
               action="edited")
    [pointer] = fake_github.bot_comments(REPO, 1)
    assert "Flower tier request" in pointer["body"]
    assert f"https://github.com/{REPO}/issues/new?template=flower.yml" in pointer["body"]
    assert request_row_count(runtime) == 0 and fake_github.issue_labels(REPO, 1) == []
    # Not a request at all: nothing.
    _free_text(client, worker, fake_github, 2, "Typo in the README", "The second paragraph has a typo.")
    assert fake_github.bot_comments(REPO, 2) == []


def request_row_count(runtime) -> int:
    with Session(runtime.engine) as s:
        return len(s.exec(select(AccessRequest)).all())


# ---- contact kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize(("contact", "kinds", "status", "message"), [
    ("dev@imggen.app", ["email"], OK, "valid e-mail address"),
    ("buzzy", ["email"], ERROR, "the contact e-mail address is not valid"),
    ("buzzy#1234", ["discord"], OK, "Discord username"),
    ("Discord: buzzy.artist", ["discord", "email"], OK, "Discord username"),
    ("https://github.com/buzzy", ["github"], OK, "GitHub user found"),
    ("@buzzy", ["github", "discord"], OK, "GitHub user found"),
    ("nobody-here", ["github"], ERROR, "no GitHub user has that username"),
    ("dev@imggen.app", ["discord", "github"], ERROR,
     "the contact looks like an e-mail address, which this form does not accept"),
    ("https://imggen.app/contact", ["url"], OK, "web address"),
    ("ping me on matrix: @me:imggen.app", ["any"], OK, "given"),
    ("dev@mailinator.com", ["email", "github"], ERROR, "disposable e-mail addresses are not accepted"),
])
def test_contact_kinds(policy, gh, contact, kinds, status, message):
    result = check_contact(contact, policy, kinds=kinds, gh=gh)
    assert (result.status, result.message) == (status, message)
    assert contact.lower() not in (result.message + str(result.hint)).lower()  # never echoed


@pytest.fixture
def gh(runtime):
    return runtime.github.for_installation(INSTALLATION_ID)


def test_github_logins_are_looked_up_once(gh, fake_github):
    for _ in range(3):
        assert github_login_exists(gh, "buzzy") and not github_login_exists(gh, "nobody-here")
    lookups = [path for method, path, _ in fake_github.calls if method == "GET" and path.startswith("/users/")]
    assert sorted(lookups) == ["/users/buzzy", "/users/nobody-here"]


def test_a_github_lookup_that_is_refused_falls_back_to_the_syntax(policy, gh, fake_github):
    fake_github.fail("GET", r"^/users/octo-cat$", 403, body={"message": "Forbidden"})
    result = check_contact("octo-cat", policy, kinds=["github"], gh=gh)
    assert (result.status, result.message) == (OK, "GitHub username (not looked up)")


# ---- several forms -------------------------------------------------------------------------------


def two_forms(tmp_path):
    import shutil

    import yaml

    flower = yaml.safe_load((FORMS / "flower-policy.yml").read_text())["forms"][0]
    shutil.copy(FORMS / "flower-access.yml", tmp_path / "flower-access.yml")
    (tmp_path / "policy.yml").write_text(yaml.safe_dump({"forms": [
        {"name": "special", "labels": ["special-access"]},  # the bundled form, default roles
        flower,
    ]}))
    return load_policy(tmp_path / "policy.yml")


def test_each_issue_is_read_with_the_form_its_label_names(tmp_path, runtime, fake_github):
    from bot.core.resources import issue_form_path
    from bot.ops import reconcile
    from tests.request_helpers import form_body

    runtime.policy = two_forms(tmp_path)
    fake_github.files[(REPO, ".github/ISSUE_TEMPLATE/special-access.yml")] = issue_form_path().read_text()
    fake_github.add_issue(REPO, 1, body=form_body(), user={"login": "alice-dev", "id": 5001, "type": "User"},
                          labels=["special-access"])
    file_issue(fake_github, crlf("complete"), number=2)
    report = reconcile.reconcile(runtime)
    assert sorted(report.as_dict()["actions"]["review"]) == [f"{REPO}#1", f"{REPO}#2"]
    with Session(runtime.engine) as s:
        rows = {r.issue_number: r for r in s.exec(select(AccessRequest)).all()}
    assert (rows[1].form_name, rows[1].requested_tier, rows[1].state) == ("special", "flower", RequestState.VALIDATED)
    assert (rows[2].form_name, rows[2].requested_tier, rows[2].state) == ("flower", "flower", RequestState.VALIDATED)
    assert "flower-request" in fake_github.issue_labels(REPO, 2)
