"""The figures of the dashboard overview (/admin/overview and /admin/overview.json).

Every figure is an aggregate query over a recent window, grouped into buckets (weeks starting
on Monday 00:00 UTC, UTC days, clock hours). The bucket of a row is a CASE over the window's
edges, bound as parameters, so the same SQL runs on SQLite and PostgreSQL and each query reads
only the window through an index (migration 0003o); benchmarks/dashboard.py measures them at
100 000 grants and 1 000 000 audit rows.

- requests: opened per week by what became of them (approved — revoked ones count as
  approved —, rejected, withdrawn, still open); decided per week (the audit rows
  request.approved / .rejected / .withdrawn); time from opening to decision (median and 90th
  percentile by nearest rank, per week of decision); the ages of the requests open now;
- grants: active grants per tier at the end of each week (walked back from today with the
  week's creations, revocations and tier changes), upgrades, downgrades and revocations per week;
- gateways: last pull, pulls per hour (table gateway_pull_hour), silent for more than three poll
  intervals; the allowlist version at the end of each day;
- deliveries: per day received, processed (or skipped), retried (needed more than one attempt),
  dead.

`repositories` is None for a maintainer of everything, else the repository full names
("owner/name") whose figures may be shown: requests and grants are limited to those (grants
without an issue are left out), and the platform-wide delivery figures are not given. Gateways
and the allowlist version are the platform's, shown to every maintainer (as /admin/gateways).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, extract, func, or_, select
from sqlalchemy.dialects.postgresql import array as postgresql_array
from sqlmodel import Session

from bot.allowlist.versioning import current_version
from bot.core.clock import utcnow
from bot.core.config import Policy
from bot.core.models import (
    AccessRequest,
    AllowlistChange,
    AuditEvent,
    Delivery,
    DeliveryStatus,
    Gateway,
    GatewayPullHour,
    Grant,
    GrantStatus,
    RequestState,
)

WEEKS = 12
DAYS = 14
HOURS = 24
OUTCOMES = ("approved", "rejected", "withdrawn", "open")
DECISIONS = {"request.approved": "approved", "request.rejected": "rejected", "request.withdrawn": "withdrawn"}
# the ages of open requests: (label, short label, at least this old)
AGE_BANDS = (("under a day", "< 1 d", timedelta(0)), ("1–3 days", "1–3 d", timedelta(days=1)),
             ("3–7 days", "3–7 d", timedelta(days=3)), ("1–2 weeks", "1–2 wk", timedelta(days=7)),
             ("2–4 weeks", "2–4 wk", timedelta(days=14)), ("over 4 weeks", "> 4 wk", timedelta(days=28)))
SILENT_POLLS = 3


# --------------------------------------------------------------------------------------------
# Windows and buckets
# --------------------------------------------------------------------------------------------


def week_edges(now: datetime, weeks: int = WEEKS) -> list[datetime]:
    """weeks + 1 edges: Monday 00:00 UTC of the first week … of the week after the current one."""
    monday = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=now.weekday())
    first = monday - timedelta(weeks=weeks - 1)
    return [first + timedelta(weeks=i) for i in range(weeks + 1)]


def day_edges(now: datetime, days: int = DAYS) -> list[datetime]:
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight - timedelta(days=days - 1)
    return [first + timedelta(days=i) for i in range(days + 1)]


def hour_edges(now: datetime, hours: int = HOURS) -> list[datetime]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    first = hour - timedelta(hours=hours - 1)
    return [first + timedelta(hours=i) for i in range(hours + 1)]


def bucket(column, edges: list[datetime], before: int | None = None) -> ColumnElement:
    """The index of the [edges[i], edges[i+1]) that holds `column`; rows before edges[0] get
    `before` (None: NULL), rows from edges[-1] on get NULL."""
    whens = [(column < edges[0], before)] if before is not None else []
    whens += [(column < edge, i) for i, edge in enumerate(edges[1:])]
    return case(*whens, else_=None)


def _grouped(db: Session, inner, *keys: str, extra: tuple = ()) -> list:
    """GROUP BY over a subquery's labelled columns (PostgreSQL would not match a CASE with bound
    parameters written twice, once in SELECT and once in GROUP BY)."""
    sub = inner.subquery()
    columns = [sub.c[k] for k in keys]
    return db.exec(select(*columns, func.count(), *[f(sub) for f in extra]).group_by(*columns)).all()


def _in_repositories(column, repositories: list[str] | None):
    if repositories is None:
        return None
    return func.lower(column).in_(sorted({r.lower() for r in repositories}))


def _request_in_repositories(repositories: list[str] | None):
    """For audit rows: their request belongs to one of `repositories`. A correlated lookup by
    primary key per row of the window: a join would make PostgreSQL hash every request."""
    if repositories is None:
        return None
    repo = select(AccessRequest.repo).where(AccessRequest.id == AuditEvent.request_id).scalar_subquery()
    return _in_repositories(repo, repositories)


def _where(*conditions):
    return [c for c in conditions if c is not None]


def _seconds_between(db: Session, later, earlier):
    if db.get_bind().dialect.name == "postgresql":
        return extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def requests_per_week(db: Session, repositories: list[str] | None, now: datetime) -> dict[str, Any]:
    """Opened per week by outcome now, and decisions per week by kind."""
    edges = week_edges(now)
    outcome = case((AccessRequest.state.in_([RequestState.APPROVED, RequestState.REVOKED]), "approved"),
                   (AccessRequest.state == RequestState.REJECTED, "rejected"),
                   (AccessRequest.state == RequestState.WITHDRAWN, "withdrawn"), else_="open")
    opened = {o: [0] * WEEKS for o in OUTCOMES}
    inner = select(bucket(AccessRequest.created_at, edges).label("b"), outcome.label("o")).where(
        *_where(AccessRequest.created_at >= edges[0], _in_repositories(AccessRequest.repo, repositories)))
    for b, o, count in _grouped(db, inner, "b", "o"):
        if b is not None:
            opened[o][b] = count
    decided = {o: [0] * WEEKS for o in OUTCOMES[:3]}
    inner = select(bucket(AuditEvent.at, edges).label("b"), AuditEvent.action.label("a")).where(
        *_where(AuditEvent.action.in_(list(DECISIONS)), AuditEvent.at >= edges[0],
                _request_in_repositories(repositories)))
    for b, action, count in _grouped(db, inner, "b", "a"):
        if b is not None:
            decided[DECISIONS[action]][b] = count
    return {"weeks": [e.date().isoformat() for e in edges[:-1]], "opened": opened, "decided": decided}


def decision_times(db: Session, repositories: list[str] | None, now: datetime) -> dict[str, Any]:
    """Per week of decision: decisions, and the median and 90th percentile (nearest rank: the
    ⌈p·n⌉-th shortest, PostgreSQL's percentile_disc) of the hours from opening to decision."""
    edges = week_edges(now)
    opened = select(AccessRequest.created_at).where(AccessRequest.id == AuditEvent.request_id).scalar_subquery()
    seconds = _seconds_between(db, AuditEvent.at, opened)
    inner = (select(bucket(AuditEvent.at, edges).label("b"), seconds.label("s"))
             .where(*_where(AuditEvent.action.in_(list(DECISIONS)), AuditEvent.at >= edges[0],
                            AuditEvent.request_id != None, _request_in_repositories(repositories)))  # noqa: E711
             ).subquery()
    count, median, p90_hours = [0] * WEEKS, [None] * WEEKS, [None] * WEEKS

    def hours(seconds) -> float:
        return round(max(float(seconds), 0.0) / 3600, 1)

    if db.get_bind().dialect.name == "postgresql":  # an ordered-set aggregate: one sort per week
        percentiles = func.percentile_disc(postgresql_array([0.5, 0.9])).within_group(inner.c.s)
        for b, n, (s50, s90) in db.exec(select(inner.c.b, func.count(), percentiles).group_by(inner.c.b)):
            if b is not None:
                count[b], median[b], p90_hours[b] = n, hours(s50), hours(s90)
    else:  # SQLite has none: rank the rows per week and keep the two ranks wanted
        ranked = select(inner.c.b, inner.c.s,
                        func.row_number().over(partition_by=inner.c.b, order_by=inner.c.s).label("rn"),
                        func.count().over(partition_by=inner.c.b).label("n")).subquery()
        p50 = (ranked.c.n * 50 + 99) // 100
        p90 = (ranked.c.n * 90 + 99) // 100
        rows = db.exec(select(ranked.c.b, ranked.c.n, ranked.c.rn, ranked.c.s, p50, p90)
                       .where(or_(ranked.c.rn == p50, ranked.c.rn == p90))).all()
        for b, n, rn, s, rank50, rank90 in rows:
            if b is None:
                continue
            count[b] = n
            if rn == rank50:
                median[b] = hours(s)
            if rn == rank90:
                p90_hours[b] = hours(s)
    return {"weeks": [e.date().isoformat() for e in edges[:-1]], "decisions": count,
            "median_hours": median, "p90_hours": p90_hours}


def open_ages(db: Session, repositories: list[str] | None, now: datetime) -> dict[str, Any]:
    """How long the open requests have waited, in bands, and the oldest."""
    band = case(*[(AccessRequest.created_at > now - least, i - 1)
                  for i, (_, _short, least) in enumerate(AGE_BANDS) if i > 0], else_=len(AGE_BANDS) - 1)
    inner = select(band.label("b"), AccessRequest.created_at.label("c")).where(
        *_where(AccessRequest.state.in_(RequestState.OPEN), _in_repositories(AccessRequest.repo, repositories)))
    counts = [0] * len(AGE_BANDS)
    oldest = None
    for b, count, first in _grouped(db, inner, "b", extra=(lambda sub: func.min(sub.c.c),)):
        counts[b] = count
        first = _aware(first)
        oldest = first if oldest is None or first < oldest else oldest
    return {"bands": [label for label, _, _ in AGE_BANDS], "short_bands": [short for _, short, _ in AGE_BANDS],
            "counts": counts, "open": sum(counts),
            "oldest_opened_at": _iso(oldest),
            "oldest_days": round((now - oldest).total_seconds() / 86400, 1) if oldest else None}


# --------------------------------------------------------------------------------------------
# Grants
# --------------------------------------------------------------------------------------------


def _tier_order(policy: Policy, seen: set[str]) -> list[str]:
    known = [t.name for t in sorted(policy.tiers, key=lambda t: t.rank)]
    return known + sorted(seen - set(known))


def grants_over_time(db: Session, policy: Policy, repositories: list[str] | None, now: datetime) -> dict[str, Any]:
    """Active grants per tier at the end of each week (the last point is now); tier changes
    (upgrades, downgrades) and revocations per week.

    Walked back from today's active grants: at the end of week k a grant counts if it was
    created before and not revoked by then, under the tier it had then (the `from` of its first
    tier change after that, read from the audit rows grant.tier_changed)."""
    edges = week_edges(now)
    scope = _in_repositories(Grant.repo, repositories)
    current: dict[str, int] = dict(db.exec(select(Grant.tier, func.count()).where(
        *_where(Grant.status == GrantStatus.ACTIVE, scope)).group_by(Grant.tier)).all())
    # (status grouped, not filtered: a condition on it would tempt SQLite to read every active grant)
    # (bucket first in GROUP BY: grouped by tier first, SQLite would rather walk the tier index)
    created = [(t, b, n) for b, t, status, n in _grouped(
        db, select(Grant.tier.label("t"), Grant.status.label("s"), bucket(Grant.created_at, edges).label("b")).where(
            *_where(Grant.created_at >= edges[0], scope)), "b", "t", "s") if status == GrantStatus.ACTIVE]
    revoked = [(t, rb, cb, n) for rb, cb, t, n in _grouped(
        db, select(Grant.tier.label("t"), bucket(Grant.revoked_at, edges).label("rb"),
                   bucket(Grant.created_at, edges, before=-1).label("cb")).where(
            *_where(Grant.revoked_at >= edges[0], scope)), "rb", "cb", "t")]
    changes = _grouped(db, select(bucket(AuditEvent.at, edges).label("b"),
                                  bucket(Grant.created_at, edges, before=-1).label("cb"),
                                  AuditEvent.details["from"].as_string().label("f"),
                                  AuditEvent.details["to"].as_string().label("to"))
                       .join(Grant, Grant.id == AuditEvent.grant_id)
                       .where(*_where(AuditEvent.action == "grant.tier_changed", AuditEvent.at >= edges[0], scope)),
                       "b", "cb", "f", "to")
    tiers = _tier_order(policy, set(current) | {t for t, *_ in created} | {t for t, *_ in revoked}
                        | {f for *_, f, _to, _n in changes if f} | {to for *_, to, _n in changes if to})
    active = {t: [current.get(t, 0)] * WEEKS for t in tiers}
    for k in range(WEEKS):
        for tier, b, count in created:
            if b is not None and b > k:
                active[tier][k] -= count
        for tier, rb, cb, count in revoked:
            if rb is not None and rb > k and cb is not None and cb <= k:
                active[tier][k] += count
        for b, cb, before, after, count in changes:
            if b is not None and b > k and cb is not None and cb <= k and before and after:
                active[before][k] += count
                active[after][k] -= count
    rank = {t.name: t.rank for t in policy.tiers}
    upgrades, downgrades, revocations = [0] * WEEKS, [0] * WEEKS, [0] * WEEKS
    for b, _cb, before, after, count in changes:
        if b is None or before not in rank or after not in rank:
            continue
        if rank[after] > rank[before]:
            upgrades[b] += count
        elif rank[after] < rank[before]:
            downgrades[b] += count
    for _tier, rb, _cb, count in revoked:
        if rb is not None:
            revocations[rb] += count
    return {"weeks": [e.date().isoformat() for e in edges[:-1]], "tiers": tiers, "active": active,
            "active_now": sum(current.values()), "upgrades": upgrades, "downgrades": downgrades,
            "revocations": revocations}


# --------------------------------------------------------------------------------------------
# Gateways and the allowlist version
# --------------------------------------------------------------------------------------------


def gateway_figures(db: Session, policy: Policy, now: datetime) -> dict[str, Any]:
    """Active gateways: last pull, pulls per hour over the last HOURS, the version held, and
    `silent` when no pull came for SILENT_POLLS poll intervals (plus the pull figures' batching
    delay); the allowlist version at the end of each of the last DAYS days."""
    hours = hour_edges(now)
    silent_after = SILENT_POLLS * policy.allowlist.gateway_poll_seconds + policy.allowlist.pull_stats_flush_seconds
    version = current_version(db)
    rows = db.scalars(select(Gateway).where(Gateway.revoked_at == None).order_by(Gateway.name)).all()  # noqa: E711
    per_hour: dict[int, list[int]] = defaultdict(lambda: [0] * HOURS)
    sub = select(GatewayPullHour.gateway_id.label("g"), bucket(GatewayPullHour.hour, hours).label("b"),
                 GatewayPullHour.pulls.label("p")).where(GatewayPullHour.hour >= hours[0]).subquery()
    for gateway_id, b, pulls in db.exec(select(sub.c.g, sub.c.b, func.sum(sub.c.p)).group_by(sub.c.g, sub.c.b)):
        if b is not None:
            per_hour[gateway_id][b] = int(pulls)
    gateways = []
    for gw in rows:
        seen = _aware(gw.last_pull_at) or _aware(gw.created_at)
        quiet = (now - seen).total_seconds()
        gateways.append({
            "name": gw.name, "last_pull_at": _iso(_aware(gw.last_pull_at)), "pulls_total": gw.pull_count,
            "version_held": gw.last_version,
            "versions_behind": None if gw.last_version is None else max(version - gw.last_version, 0),
            "silent_seconds": round(quiet), "silent": quiet > silent_after, "pulls_per_hour": per_hour[gw.id]})
    days = day_edges(now)
    before = db.scalar(select(func.max(AllowlistChange.version)).where(AllowlistChange.at < days[0]))
    sub = select(bucket(AllowlistChange.at, days).label("b"), AllowlistChange.version.label("v")).where(
        AllowlistChange.at >= days[0]).subquery()
    latest = dict(db.exec(select(sub.c.b, func.max(sub.c.v)).group_by(sub.c.b)).all())
    versions, held = [], before or 0
    for d in range(DAYS):
        held = max(held, latest.get(d) or 0)
        versions.append(held)
    versions[-1] = max(versions[-1], version)
    return {"hours": [e.isoformat() for e in hours[:-1]], "poll_seconds": policy.allowlist.gateway_poll_seconds,
            "silent_after_seconds": silent_after, "current_version": version, "gateways": gateways,
            "days": [e.date().isoformat() for e in days[:-1]], "allowlist_version": versions}


# --------------------------------------------------------------------------------------------
# Deliveries
# --------------------------------------------------------------------------------------------


def deliveries_per_day(db: Session, repositories: list[str] | None, now: datetime) -> dict[str, Any] | None:
    """Per day received: deliveries, processed (or skipped: nothing to do), retried (more than
    one attempt, whatever the end), dead. Platform-wide: None for a maintainer of some
    repositories only (a delivery's repository is inside its payload)."""
    if repositories is not None:
        return None
    edges = day_edges(now)
    done = case((Delivery.status.in_([DeliveryStatus.PROCESSED, DeliveryStatus.SKIPPED]), 1), else_=0)
    retried = case((Delivery.attempts > 1, 1), else_=0)
    dead = case((Delivery.status == DeliveryStatus.DEAD, 1), else_=0)
    sub = select(bucket(Delivery.received_at, edges).label("b"), done.label("p"), retried.label("r"),
                 dead.label("d")).where(Delivery.received_at >= edges[0]).subquery()
    figures = {k: [0] * DAYS for k in ("received", "processed", "retried", "dead")}
    for b, n, p, r, d in db.exec(select(sub.c.b, func.count(), func.sum(sub.c.p), func.sum(sub.c.r),
                                        func.sum(sub.c.d)).group_by(sub.c.b)):
        if b is None:
            continue
        figures["received"][b], figures["processed"][b] = n, int(p)
        figures["retried"][b], figures["dead"][b] = int(r), int(d)
    return {"days": [e.date().isoformat() for e in edges[:-1]], **figures}


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------


def overview(db: Session, policy: Policy, repositories: list[str] | None, now: datetime | None = None
             ) -> dict[str, Any]:
    """All the overview's figures as plain JSON-ready values."""
    now = (now or utcnow()).astimezone(UTC)
    return {
        "generated_at": now.isoformat(),
        "repositories": None if repositories is None else sorted(repositories),
        "requests": requests_per_week(db, repositories, now),
        "decision_times": decision_times(db, repositories, now),
        "open_requests": open_ages(db, repositories, now),
        "grants": grants_over_time(db, policy, repositories, now),
        "gateways": gateway_figures(db, policy, now),
        "deliveries": deliveries_per_day(db, repositories, now),
    }


__all__ = ["overview", "requests_per_week", "decision_times", "open_ages", "grants_over_time", "gateway_figures",
           "deliveries_per_day", "week_edges", "day_edges", "hour_edges", "bucket"]
