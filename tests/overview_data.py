"""A small platform history for the dashboard overview's tests (unit, JSON, browser), with the
figures each chart must show worked out by hand below.

"Now" is Wednesday 2026-12-02 12:30 UTC. Weeks start on Monday: the overview's 12 weeks run from
2026-09-14 (index 0) to the current week of 2026-11-30 (index 11); its 14 days from 2026-11-19
(index 0) to 2026-12-02 (index 13); its 24 hours from 2026-12-01 13:00 (index 0) to 12:00 (23).

Grants, tier changes and revocations go through bot.access.grants (so their audit rows and allowlist
versions are the real ones), each at its own moment of a frozen clock; requests, decisions,
deliveries and pulls are written as the services would.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from bot.access import grants
from bot.allowlist import gateways
from bot.core import audit, clock
from bot.core.models import AccessRequest, Delivery, DeliveryStatus, Grant, RequestState

NOW = datetime(2026, 12, 2, 12, 30, tzinfo=UTC)
REPO = "acme/access"
OTHER = "other/repo"

# What the charts must show (index = week, day or hour as above).
OPENED = {  # requests opened per week, by what became of them
    "approved": {0: 1, 10: 1, 11: 1}, "rejected": {11: 1}, "withdrawn": {10: 1}, "open": {11: 2}}
OPENED_IN_ACME = {**OPENED, "open": {11: 1}}  # the other repository's open request left out
DECIDED = {"approved": {0: 1, 10: 1, 11: 1}, "rejected": {11: 1}, "withdrawn": {10: 1}}
DECISION_HOURS = {0: (1, 24.0, 24.0), 10: (2, 2.0, 24.0), 11: (2, 10.0, 36.0)}  # count, median, p90
OPEN_AGES = [1, 1, 0, 0, 0, 1]  # under a day, 1-3 days, 3-7 days, 1-2 weeks, 2-4 weeks, over 4 weeks
OPEN_AGES_IN_ACME = [1, 0, 0, 0, 0, 1]
ACTIVE = {  # active grants per tier at the end of each week (the last: now)
    "seed": [2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 2, 2],
    "flower": [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3],
    "nectar": [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0],
}
ACTIVE_IN_ACME = {**ACTIVE, "seed": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]}  # the self-service grant left out
UPGRADES = {4: 1}
DOWNGRADES = {11: 1}
REVOCATIONS = {10: 1}
VERSIONS = [5, 5, 5, 5, 5, 6, 7, 7, 7, 7, 7, 7, 8, 9]  # allowlist version at the end of each day
DELIVERIES = {"received": {0: 1, 12: 2, 13: 5}, "processed": {0: 1, 12: 2, 13: 3}, "retried": {13: 2},
              "dead": {13: 1}}
PULLS = {"edge-eu": {21: 2, 23: 3}, "edge-us": {23: 1}, "edge-ap": {}}
SILENT = {"edge-eu": False, "edge-us": True, "edge-ap": True}


def series(counts: dict[int, int], length: int) -> list[int]:
    return [counts.get(i, 0) for i in range(length)]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _request(session: Session, number: int, opened: str, state: str, repo: str = REPO) -> AccessRequest:
    request = AccessRequest(repo=repo, issue_number=number, installation_id=1, applicant_id=5000 + number,
                            applicant_login=f"applicant-{number}", title="Special access", state=state,
                            requested_tier="flower", app_name=f"App {number}", referrer=f"app-{number}",
                            created_at=at(opened), updated_at=at(opened))
    session.add(request)
    session.flush()
    return request


def _decide(session: Session, frozen: clock.FrozenClock, request: AccessRequest, when: str, action: str) -> None:
    frozen.current = at(when)
    audit.record(session, "maria-maint", action, request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}", source="test")
    request.decided_at = at(when)
    session.add(request)


def _grant(session: Session, frozen: clock.FrozenClock, when: str, tier: str, app_id: str,
           repo: str | None = REPO) -> Grant:
    frozen.current = at(when)
    grant = grants.create_grant(session, None, tier, "maria-maint", app_id=app_id, domains=[f"{app_id}.example.com"],
                                source="test", origin="issue" if repo else "self_service", github_user_id=7000,
                                github_login="owner")
    grant.repo = repo
    session.add(grant)
    session.flush()
    return grant


def seed(session: Session, engine) -> None:
    """Write the history above; leaves the clock frozen at NOW."""
    frozen = clock.FrozenClock(NOW)
    clock.use(frozen)
    # --- requests and decisions ------------------------------------------------------------------
    first = _request(session, 1, "2026-09-15 00:00", RequestState.APPROVED)  # week 0
    _decide(session, frozen, first, "2026-09-16 00:00", "request.approved")  # 24 h
    _request(session, 2, "2026-09-01 00:00", RequestState.NEEDS_INFO)  # before the window, open 92 days
    withdrawn = _request(session, 3, "2026-11-23 08:00", RequestState.WITHDRAWN)  # week 10
    _decide(session, frozen, withdrawn, "2026-11-24 08:00", "request.withdrawn")  # 24 h
    revoked = _request(session, 4, "2026-11-24 00:00", RequestState.REVOKED)  # week 10, approved then revoked
    _decide(session, frozen, revoked, "2026-11-24 02:00", "request.approved")  # 2 h
    rejected = _request(session, 5, "2026-11-30 12:00", RequestState.REJECTED)  # week 11
    _decide(session, frozen, rejected, "2026-12-02 00:00", "request.rejected")  # 36 h
    approved = _request(session, 6, "2026-12-01 00:00", RequestState.APPROVED)  # week 11
    _decide(session, frozen, approved, "2026-12-01 10:00", "request.approved")  # 10 h
    _request(session, 7, "2026-12-02 06:00", RequestState.VALIDATED)  # week 11, open, under a day
    _request(session, 8, "2026-12-01 11:00", RequestState.RECEIVED, repo=OTHER)  # week 11, open 25 h
    # --- grants (versions 1-9) ---------------------------------------------------------------------
    _grant(session, frozen, "2026-08-01 00:00", "flower", "gone-before")  # v1, flower throughout
    upgraded = _grant(session, frozen, "2026-08-01 00:01", "seed", "upgraded")  # v2
    _grant(session, frozen, "2026-08-01 00:02", "seed", "selfserved", repo=None)  # v3
    frozen.current = at("2026-10-14 09:00")  # week 4
    grants.set_tier(session, upgraded, "flower", "maria-maint", source="test")  # v4
    big = _grant(session, frozen, "2026-10-20 09:00", "nectar", "bigpartner")  # week 5, v5
    _grant(session, frozen, "2026-11-24 03:00", "seed", "newseed")  # week 10, v6
    frozen.current = at("2026-11-25 09:00")
    grants.revoke_grant(session, big, "maria-maint", "abuse", source="test")  # week 10, v7
    downgraded = _grant(session, frozen, "2026-12-01 10:00", "nectar", "downgraded")  # week 11, v8
    frozen.current = at("2026-12-02 08:00")
    grants.set_tier(session, downgraded, "flower", "maria-maint", source="test")  # v9
    # --- deliveries --------------------------------------------------------------------------------
    for n, (received, status, attempts) in enumerate([
            ("2026-11-18 23:59", DeliveryStatus.PROCESSED, 1),  # before the 14 days
            ("2026-11-19 00:00", DeliveryStatus.PROCESSED, 1),
            ("2026-12-01 08:00", DeliveryStatus.SKIPPED, 1), ("2026-12-01 09:00", DeliveryStatus.PROCESSED, 1),
            ("2026-12-02 01:00", DeliveryStatus.PROCESSED, 1), ("2026-12-02 02:00", DeliveryStatus.PROCESSED, 2),
            ("2026-12-02 03:00", DeliveryStatus.PROCESSED, 1), ("2026-12-02 04:00", DeliveryStatus.DEAD, 3),
            ("2026-12-02 12:00", DeliveryStatus.PENDING, 0)]):
        session.add(Delivery(delivery_id=f"d-{n}", event="issues", action="opened", payload="{}",
                             received_at=at(received), next_attempt_at=at(received), status=status,
                             attempts=attempts))
    # --- gateways ---------------------------------------------------------------------------------
    frozen.current = at("2026-11-01 00:00")
    eu, _ = gateways.add(session, "edge-eu", "bk", "cli:ops")
    us, _ = gateways.add(session, "edge-us", "bk", "cli:ops")
    gateways.add(session, "edge-ap", "bk", "cli:ops")  # never pulls
    gone, _ = gateways.add(session, "edge-old", "bk", "cli:ops")
    gateways.revoke(session, "edge-old", "cli:ops")
    session.commit()
    recorder = gateways.PullRecorder(engine, flush_seconds=0)
    frozen.current = at("2026-12-02 10:30")  # hour index 21
    recorder.record(eu.id, 8)
    recorder.record(eu.id, 8)
    frozen.current = at("2026-12-02 12:27")  # 3 minutes ago: silent (3 polls of 30 s + 5 s)
    recorder.record(us.id, 9)
    frozen.current = at("2026-12-02 12:29:30")  # 30 s ago
    for _ in range(3):
        recorder.record(eu.id, 9)
    frozen.current = NOW
