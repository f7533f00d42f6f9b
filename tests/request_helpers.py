"""Helpers shared by the command, state-machine, grant and approval-flow tests: the people in
the fake GitHub, request rows made directly in the database, and valid issue-form bodies."""

from __future__ import annotations

from sqlmodel import Session

from bot.core.models import AccessRequest, RequestState
from bot.rules.forms import bundled_schema, render_issue_body
from tests.conftest import INSTALLATION_ID, REPO, comment_event, deliver, issue_event

APPLICANT = {"login": "alice-dev", "id": 5001, "type": "User"}
MAINTAINER = {"login": "maria-maint", "id": 6001, "type": "User"}
MAINTAINER_2 = {"login": "mo-maint", "id": 6002, "type": "User"}
STRANGER = {"login": "sam-stranger", "id": 7001, "type": "User"}
BOT = {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"}


def add_people(fake) -> None:
    """The applicant (an old account, so the checks pass), two maintainers with write access
    and a stranger with read access."""
    for person in (APPLICANT, MAINTAINER, MAINTAINER_2, STRANGER):
        fake.add_user(person["login"], person["id"], created_at="2015-01-01T00:00:00Z")
    fake.set_permission(REPO, MAINTAINER["login"], "write")
    fake.set_permission(REPO, MAINTAINER_2["login"], "admin")
    fake.set_permission(REPO, STRANGER["login"], "read")
    fake.set_permission(REPO, APPLICANT["login"], "read")


def form_body(*, app_name: str = "Free AI Chat", referrer: str = "freeaichat", tier: str = "flower",
              domains: str = "freeaichat.io\napp.freeaichat.io", contact: str = "alice@example.org",
              description: str = "A chat front-end for students that calls the API from our server.") -> str:
    """An issue body exactly as GitHub renders the bundled form for these answers."""
    schema = bundled_schema()
    terms = next(f for f in schema.fields if f.id == "terms")
    return render_issue_body(schema, {
        "app-name": app_name, "description": description, "homepage": "https://freeaichat.io",
        "domains": domains, "referrer": referrer, "contact": contact, "tier": tier,
        "terms": list(terms.options),
    })


def make_request(session: Session, *, number: int = 1, state: str = RequestState.VALIDATED,
                 tier: str | None = "flower", referrer: str | None = "freeaichat",
                 domains: list[str] | None = None, checks_ok: bool | None = None,
                 check_results: list[dict] | None = None, applicant: dict = APPLICANT,
                 needs_maintainer: bool = False, repo: str = REPO) -> AccessRequest:
    """A request row as the review would have stored it (no GitHub involved)."""
    domains = ["freeaichat.io"] if domains is None else domains
    if check_results is None:
        ok = state == RequestState.VALIDATED if checks_ok is None else checks_ok
        check_results = [{"status": "ok", "name": "domains", "message": ", ".join(domains),
                          "data": {"domains": domains}}] if domains else []
        check_results.append({"status": "ok" if ok else "error", "name": "app id",
                              "message": referrer if ok else "freeaichat is already taken by another app"})
    request = AccessRequest(
        repo=repo, issue_number=number, installation_id=INSTALLATION_ID, applicant_id=applicant["id"],
        applicant_login=applicant["login"], title="Special access: Free AI Chat", state=state,
        requested_tier=tier, app_name="Free AI Chat", referrer=referrer, contact="alice@example.org",
        values={"app_name": "Free AI Chat", "domains": domains, "referrer": referrer, "tier": tier},
        check_results=check_results,
        checks_ok=(state == RequestState.VALIDATED) if checks_ok is None else checks_ok,
        needs_maintainer=needs_maintainer,
    )
    session.add(request)
    session.commit()
    return request


def add_issue_for(fake, request: AccessRequest, *, state: str = "open", labels: list[str] | None = None) -> dict:
    """The request's issue in the fake GitHub."""
    return fake.add_issue(request.repo, request.issue_number, body=form_body(), user=dict(APPLICANT),
                          labels=labels if labels is not None else ["special-access", "validated"], state=state)


# ---- through the webhook ------------------------------------------------------------------------


def open_issue(client, worker, fake, *, number: int = 1, body: str | None = None, user: dict = APPLICANT,
               labels: tuple[str, ...] = ("special-access",)) -> dict:
    """The applicant opens a request from the form: the issue exists in the fake GitHub, its
    `issues.opened` webhook is delivered and the worker drains the inbox. Returns the payload."""
    body = form_body() if body is None else body
    fake.add_issue(REPO, number, body=body, user=dict(user), labels=list(labels))
    payload = issue_event("opened", body=body, number=number, user=dict(user), labels=list(labels))
    assert deliver(client, "issues", payload).status_code == 202
    worker.run_once()
    return payload


def post_comment(client, worker, fake, issue_payload: dict, user: dict, body: str, *,
                 delivery_id: str | None = None, run: bool = True) -> tuple[int, dict]:
    """Someone comments on the issue: the comment exists in the fake (so reactions land on it)
    and its `issue_comment.created` webhook is delivered. Returns (comment id, payload)."""
    number = issue_payload["issue"]["number"]
    stored = fake.add_comment(REPO, number, body, dict(user))
    payload = comment_event("created", body=body, issue_payload=issue_payload, user=dict(user),
                            comment_id=stored["id"])
    payload["comment"]["html_url"] = stored["html_url"]
    assert deliver(client, "issue_comment", payload, delivery_id=delivery_id).status_code == 202
    if run:
        worker.run_once()
    return stored["id"], payload
