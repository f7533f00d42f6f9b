"""Two quick edits, processed out of order by two workers, end on the issue's latest body; an
approval acts on what the issue says now (issue 15, item 2)."""

from __future__ import annotations

from sqlmodel import Session, select

from bot.core import comments
from bot.core.models import AccessRequest, RequestState
from bot.intake import inbox
from bot.requests.review import body_sha256
from tests.conftest import REPO, deliver, issue_event
from tests.request_helpers import APPLICANT, MAINTAINER, add_people, form_body, open_issue, post_comment

ORIGINAL = form_body(domains="freeaichat.io")
FIRST_EDIT = form_body(domains="freeaichat.io\nchat.freeaichat.io")
LATEST = form_body(domains="github.io")  # a public suffix: the latest body fails the checks


def request_row(runtime) -> AccessRequest:
    with Session(runtime.engine) as session:
        return session.exec(select(AccessRequest).where(AccessRequest.issue_number == 1)).one()


def status_text(fake) -> str:
    (comment,) = [c for c in fake.comments_on(REPO, 1) if comments.STATUS_MARKER in c["body"]]
    return comment["body"]


def edit_payload(body: str, before: str) -> dict:
    return issue_event("edited", body=body, user=APPLICANT, labels=["special-access", "validated"],
                       changes={"body": {"from": before}})


def process_one(runtime, router, worker: str) -> None:
    """`worker` claims the next delivery (oldest first) and processes it."""
    (pk,) = inbox.claim(runtime.engine, worker, 60, limit=1)
    assert inbox.process(runtime.engine, pk, worker, router, runtime.make_context, 3) == "processed"


def test_two_quick_edits_processed_in_reverse_order_keep_the_latest_body(client, worker, runtime, fake_github):
    open_issue(client, worker, fake_github, body=ORIGINAL)
    assert request_row(runtime).state == RequestState.VALIDATED
    # the applicant edits twice within a second; GitHub has the latest body
    fake_github.issues[(REPO, 1)]["body"] = LATEST
    # the second edit's delivery is stored (and so processed) first, the first edit's last
    assert deliver(client, "issues", edit_payload(LATEST, FIRST_EDIT)).status_code == 202
    assert deliver(client, "issues", edit_payload(FIRST_EDIT, ORIGINAL)).status_code == 202
    process_one(runtime, worker.router, "worker-a")
    process_one(runtime, worker.router, "worker-b")  # the stale payload finishes last

    request = request_row(runtime)
    assert request.body_sha256 == body_sha256(LATEST)
    assert request.state == RequestState.NEEDS_INFO
    assert "github\\.io: a public suffix" in status_text(fake_github)
    assert "needs-info" in fake_github.issue_labels(REPO, 1)
    gets = [p for m, p, _ in fake_github.calls if m == "GET" and p == f"/repos/{REPO}/issues/1"]
    assert len(gets) == 2  # one GET per edit delivery


def test_an_opened_delivery_processed_after_an_edit_does_not_bring_the_old_body_back(client, worker, runtime,
                                                                                     fake_github):
    fake_github.add_issue(REPO, 1, body=LATEST, user=dict(APPLICANT), labels=["special-access"])
    opened = issue_event("opened", body=ORIGINAL, user=APPLICANT)
    assert deliver(client, "issues", edit_payload(LATEST, ORIGINAL)).status_code == 202
    assert deliver(client, "issues", opened).status_code == 202
    process_one(runtime, worker.router, "worker-a")
    process_one(runtime, worker.router, "worker-b")
    request = request_row(runtime)
    assert (request.body_sha256, request.state) == (body_sha256(LATEST), RequestState.NEEDS_INFO)


def test_an_approval_acts_on_what_the_issue_says_now(client, worker, runtime, fake_github):
    add_people(fake_github)
    payload = open_issue(client, worker, fake_github, body=ORIGINAL)
    assert request_row(runtime).state == RequestState.VALIDATED
    # edited on GitHub; the edit's delivery has not been processed when the maintainer approves
    fake_github.issues[(REPO, 1)]["body"] = LATEST
    post_comment(client, worker, fake_github, payload, MAINTAINER, "/approve")

    request = request_row(runtime)
    assert request.state == RequestState.NEEDS_INFO  # reviewed again on the latest body, not approved
    assert request.body_sha256 == body_sha256(LATEST)
    replies = [c["body"] for c in fake_github.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]
    assert replies and "edited since it was last checked" in replies[-1]
    assert not [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:decision:approve" in c["body"]]

    # edited once more: refused and re-checked again; approved once the body is the one reviewed
    fake_github.issues[(REPO, 1)]["body"] = FIRST_EDIT
    post_comment(client, worker, fake_github, payload, MAINTAINER, "/approve")
    assert request_row(runtime).state == RequestState.VALIDATED  # re-checked again: FIRST_EDIT passes
    post_comment(client, worker, fake_github, payload, MAINTAINER, "/approve")
    assert request_row(runtime).state == RequestState.APPROVED
