"""Searches behind the dashboard: grants by app id, domain, user and tier; the audit trail by
actor, action, target and time. Each returns a SELECT so that pages paginate it and the CSV
export streams it, without loading everything.

Text filters are case-insensitive substring matches with LIKE wildcards escaped, so a search
for `a_b` means the literal text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import exists, or_
from sqlmodel import select

from bot.core.models import AuditEvent, Grant, GrantDomain


def _contains(column, value: str):
    """Case-insensitive substring; SQLAlchemy escapes LIKE's wildcards (autoescape)."""
    return column.icontains(value, autoescape=True)


@dataclass(frozen=True)
class GrantFilter:
    app: str = ""
    domain: str = ""
    user: str = ""  # login (substring) or numeric GitHub id
    tier: str = ""
    status: str = ""  # active | revoked | "" (both)

    @classmethod
    def from_args(cls, args) -> GrantFilter:
        return cls(**{name: (args.get(name) or "").strip()[:200] for name in cls.__dataclass_fields__})

    @property
    def active_filters(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def grants_query(f: GrantFilter):
    statement = select(Grant)
    if f.app:
        statement = statement.where(_contains(Grant.app_id, f.app))
    if f.user:
        login = f.user.removeprefix("@")
        condition = _contains(Grant.github_login, login)
        if login.isdigit():
            condition = or_(condition, Grant.github_user_id == int(login))
        statement = statement.where(condition)
    if f.domain:
        statement = statement.where(
            exists().where(GrantDomain.grant_id == Grant.id, _contains(GrantDomain.domain, f.domain))
        )
    if f.tier:
        statement = statement.where(Grant.tier == f.tier)
    if f.status:
        statement = statement.where(Grant.status == f.status)
    return statement.order_by(Grant.created_at.desc(), Grant.id.desc())


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    subject: str = ""
    grant: str = ""
    request: str = ""
    since: str = ""  # YYYY-MM-DD, inclusive
    until: str = ""  # YYYY-MM-DD, inclusive

    @classmethod
    def from_args(cls, args) -> AuditFilter:
        return cls(**{name: (args.get(name) or "").strip()[:200] for name in cls.__dataclass_fields__})

    @property
    def active_filters(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def problems(self) -> list[str]:
        """What in the filter cannot be used, said for a person (the rest still applies)."""
        found = []
        for name in ("grant", "request"):
            value = getattr(self, name)
            if value and not value.isdigit():
                found.append(f"The {name} filter takes a number (the {name} id); “{value}” was ignored.")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value and _date(value) is None:
                found.append(f"“{value}” is not a date like 2025-01-31; the {name} filter was ignored.")
        return found


def _date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def audit_query(f: AuditFilter):
    statement = select(AuditEvent)
    if f.actor:
        statement = statement.where(_contains(AuditEvent.actor, f.actor.removeprefix("@")))
    if f.action:
        statement = statement.where(_contains(AuditEvent.action, f.action))
    if f.subject:
        statement = statement.where(_contains(AuditEvent.subject, f.subject))
    if f.grant.isdigit():
        statement = statement.where(AuditEvent.grant_id == int(f.grant))
    if f.request.isdigit():
        statement = statement.where(AuditEvent.request_id == int(f.request))
    since, until = _date(f.since), _date(f.until)
    if since:
        statement = statement.where(AuditEvent.at >= since)
    if until:
        statement = statement.where(AuditEvent.at <= datetime.combine(until.date(), time.max, tzinfo=UTC))
    return statement.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())


def audit_actions(session) -> list[str]:
    """Every action name in the trail, for the filter's suggestions."""
    return list(session.exec(select(AuditEvent.action).distinct().order_by(AuditEvent.action)).all())
