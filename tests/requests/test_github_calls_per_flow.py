"""How many GitHub calls the scenario that matters to users makes, counted by the fake GitHub.

The figures were measured on the hand-written client before PyGithub replaced it (docs/foundation.md
records them); a change that adds a call to a request flow fails here and has to say why.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.request_helpers import APPLICANT, MAINTAINER, add_people, open_issue, post_comment

# (phase, calls) measured with the hand-written client (before issue 16) — PyGithub must not add any.
CALLS_OPENED_TO_REPORT = 11  # hand-written client: 11; PyGithub: 11
CALLS_APPROVE_TO_CLOSED = 14  # hand-written client: 14; PyGithub: 14


@pytest.fixture(autouse=True)
def people(fake_github):
    add_people(fake_github)


def _calls(fake, since: int) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in fake.calls[since:]]


def test_issue_opened_to_report_and_approve_to_closed_make_no_more_calls(client, worker, fake_github):
    issue = open_issue(client, worker, fake_github)
    opened = _calls(fake_github, 0)
    mark = len(fake_github.calls)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve flower")
    approved = _calls(fake_github, mark)
    print("opened -> report:", len(opened), opened)
    print("/approve -> closed, labelled, allowlisted:", len(approved), approved)
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:flower"]
    assert fake_github.issues[(REPO, 1)]["state"] == "closed"
    assert any(f"@{APPLICANT['login']}" in c["body"] for c in fake_github.bot_comments(REPO, 1))
    # One installation token for the whole scenario (the cache), one GET /app (the slug, remembered).
    assert [c for c in opened + approved if c[1].endswith("/access_tokens")] == [
        ("POST", "/app/installations/1/access_tokens")]
    assert opened.count(("GET", "/app")) + approved.count(("GET", "/app")) == 1
    assert len(opened) <= CALLS_OPENED_TO_REPORT, opened
    assert len(approved) <= CALLS_APPROVE_TO_CLOSED, approved
