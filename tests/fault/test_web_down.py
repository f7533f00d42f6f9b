"""The web was down for a while: GitHub's deliveries failed, some so long ago that GitHub no longer
lists them. `beekeeper redeliver` recovers what GitHub still has, `beekeeper reconcile` the rest;
then the state has converged, and a second reconcile changes nothing."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import Session, select

from bot.core.models import AccessRequest, RequestState
from bot.requests.labels import desired_labels, managed_labels
from tests.conftest import issue_event
from tests.fault.harness import file_request, record_figures, request_body, wait_until

REPO = "acme/fault-web"
BEFORE, WHILE_DOWN, FORGOTTEN, EDITED = 20, 20, 10, 5
WRITES = ("POST", "PATCH", "PUT", "DELETE")


def _writes(fake) -> int:
    with fake._lock:
        return sum(1 for m, p, _ in fake.calls if m in WRITES and "/access_tokens" not in p
                   and "/hook/deliveries" not in p)


def test_redeliver_and_reconcile_converge_after_the_web_was_down(live):
    fake, bot, hooks = live.fake, live.bot, live.hooks
    fake.installation_repos.append(REPO)
    for _ in range(2):
        bot.start_worker()
    numbers = range(1, BEFORE + WHILE_DOWN + FORGOTTEN + 1)
    payloads = {n: file_request(fake, REPO, n) for n in numbers}
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda n: hooks.send("issues", payloads[n]), range(1, BEFORE + 1))) == {202}
    wait_until(lambda: live.pending() == 0 and len(live.deliveries()) == BEFORE, 60, what="the first requests")

    bot.stop_web()
    down_at = time.monotonic()
    failed = [hooks.send("issues", payloads[n]) for n in range(BEFORE + 1, BEFORE + WHILE_DOWN + 1)]
    for n in range(1, EDITED + 1):  # applicants fix (here: break) their requests meanwhile
        body = request_body(n, description="too short")
        fake.issues[(REPO, n)]["body"] = body
        failed.append(hooks.send("issues", issue_event(
            "edited", body=body, number=n, repo=REPO, user=payloads[n]["issue"]["user"],
            labels=fake.issue_labels(REPO, n), changes={"body": {"from": payloads[n]["issue"]["body"]}})))
    forgotten = [hooks.send("issues", payloads[n]) for n in range(BEFORE + WHILE_DOWN + 1, max(numbers) + 1)]
    assert set(failed) == set(forgotten) == {0}  # nobody answered
    guids_forgotten = {d["guid"] for d in fake.hook_deliveries[-FORGOTTEN:]}
    del fake.hook_deliveries[-FORGOTTEN:]  # older than GitHub's delivery history by now
    time.sleep(1.0)

    bot.start_web()
    up_at = time.monotonic()
    result = bot.cli("redeliver", "--since", "1h")
    assert result.returncode == 0, result.stderr
    redelivered = json.loads(result.stdout)
    assert redelivered["redelivered"] == WHILE_DOWN + EDITED
    wait_until(lambda: live.pending() == 0 and len(live.deliveries()) == BEFORE + WHILE_DOWN + EDITED, 60,
               what="the redelivered events to be processed")
    assert not guids_forgotten & {d.delivery_id for d in live.deliveries()}

    result = bot.cli("reconcile")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout.strip().splitlines()[-1])
    converged_after = time.monotonic() - up_at
    assert first["actions"] == {"review": [f"{REPO}#{n}" for n in sorted(
        range(BEFORE + WHILE_DOWN + 1, max(numbers) + 1), key=str)]}

    # converged: one status comment per request, the state the bodies call for, labels to match
    with Session(live.engine) as s:
        requests_by_number = {r.issue_number: r for r in s.exec(select(AccessRequest)
                                                                  .where(AccessRequest.repo == REPO)).all()}
    assert sorted(requests_by_number) == list(numbers)
    policy_labels = managed_labels(_policy())
    for n in numbers:
        request = requests_by_number[n]
        assert len(live.status_comments(REPO, n)) == 1, f"{REPO}#{n}"
        assert request.state == (RequestState.NEEDS_INFO if n <= EDITED else RequestState.VALIDATED), n
        labels = set(fake.issue_labels(REPO, n)) & policy_labels
        assert labels == desired_labels(_policy(), request.state), n

    writes_before = _writes(fake)
    result = bot.cli("reconcile")
    second = json.loads(result.stdout.strip().splitlines()[-1])
    assert second["changed"] == 0 and second["errors"] == [] and _writes(fake) == writes_before
    record_figures("web down", deliveries=BEFORE + WHILE_DOWN + EDITED + FORGOTTEN,
                   failed_while_down=WHILE_DOWN + EDITED + FORGOTTEN, redelivered=redelivered["redelivered"],
                   beyond_history_reconciled=len(first["actions"]["review"]),
                   web_down_seconds=round(up_at - down_at, 1), seconds_to_converge_after_restart=round(
                       converged_after, 1), second_reconcile_changes=second["changed"])


def _policy():
    from bot.core.config import load_policy

    return load_policy()
