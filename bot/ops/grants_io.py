"""Moving grants in and out: `beekeeper grants import FILE` and `beekeeper grants export`.

A platform that already has grants elsewhere (env files, a spreadsheet, a KV store) writes them
as CSV or JSON lines, one grant per row:

    app_id, owner_login and/or owner_id, tier, domains, referrers, created, note

- `domains` and `referrers`: a JSON list, or one text with the items separated by spaces,
  commas or semicolons. A grant has one referrer, its app id: `referrers` may be empty or
  name the app id only.
- `owner_id` is the numeric GitHub user id (what Beekeeper matches on); a row with only a login
  is resolved through the API (GET /users/{login}), a row with only an id likewise
  (GET /user/{id}) for the login shown in pages.
- `created`: an RFC 3339 date or time (UTC when no offset); empty means now.

Every row goes through the checks of the issue form: app id syntax and reserved names, the
domain rules (Public Suffix List, IP literals, private names, at most `validation.max_domains`),
the tier, and conflicts with the grants in the database and with the rows above it. A row that
fails is refused with its line number and reason and nothing of it is applied; a row whose
grant exists already (same app id, same owner) is unchanged, or updated (tier, added domains)
through bot.requests.upgrades like an upgrade; so re-running the same file changes nothing. The rows
that pass are applied in one transaction (each in a savepoint); `strict` applies nothing when
any row was refused. Imported grants have no keys until their owner claims them, and are in the
allowlist at once: one allowlist version for every grant the import created (updates of
existing grants get one each, as upgrades do).

`export_rows` writes the same format, so importing an export gives back the same export.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlmodel import Session, select

from bot.access import grants
from bot.allowlist import versioning
from bot.core.clock import isoformat, utcnow
from bot.core.config import Policy
from bot.core.models import Grant, GrantDomain, GrantStatus
from bot.requests import upgrades
from bot.rules.checks import homograph_problem, normalize_domain, normalize_referrer

COLUMNS = ("app_id", "owner_login", "owner_id", "tier", "domains", "referrers", "created", "note")
ALIASES = {"app": "app_id", "appid": "app_id", "referrer": "referrers", "owner": "owner_login", "login": "owner_login",
           "github_login": "owner_login", "user": "owner_login", "github_id": "owner_id", "user_id": "owner_id",
           "github_user_id": "owner_id", "created_at": "created", "domain": "domains"}
ORIGIN = "import"  # Grant.source of imported grants
NOTE_MAX = 2000
CREATED, UPDATED, UNCHANGED, REFUSED = "created", "updated", "unchanged", "refused"


class FormatError(Exception):
    """The file cannot be read as grants at all (no header, not CSV, not JSON lines)."""


# --------------------------------------------------------------------------------------------
# Reading and writing the format
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    line: int
    values: dict[str, Any]
    problem: str | None = None  # the row could not even be parsed


def detect_format(name: str | None, text: str) -> str:
    """"csv" or "jsonl": by the file name's extension, else by the first character."""
    lower = (name or "").lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _column(name: str) -> str:
    key = re.sub(r"[^a-z0-9_]", "", name.strip().lower().replace(" ", "_").replace("-", "_"))
    return ALIASES.get(key, key)


def read_rows(text: str, fmt: str) -> list[Row]:
    """The file's rows with their line numbers (1-based, the header is line 1 of a CSV)."""
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                rows.append(Row(number, {}, f"not valid JSON ({exc.msg})"))
                continue
            if not isinstance(value, dict):
                rows.append(Row(number, {}, "not a JSON object"))
                continue
            rows.append(Row(number, {_column(k): v for k, v in value.items()}))
        return rows
    if fmt != "csv":
        raise FormatError(f"unknown format {fmt!r} (csv or jsonl)")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [_column(h) for h in next(reader)]
    except StopIteration:
        return []
    if "app_id" not in header:
        raise FormatError(f"the CSV header must name the columns ({', '.join(COLUMNS)}); found: "
                          f"{', '.join(header) or 'nothing'}")
    rows = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append(Row(start, {}, f"not valid CSV ({exc})"))
            break
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            rows.append(Row(start, {}, f"{len(cells)} cells for {len(header)} columns"))
            continue
        rows.append(Row(start, dict(zip(header, cells, strict=False))))
    return rows


def export_rows(session: Session, *, status: str = GrantStatus.ACTIVE) -> list[dict[str, Any]]:
    """Every grant (active ones by default) as a row of the import format, oldest first."""
    statement = select(Grant).order_by(Grant.id)
    if status != "all":
        statement = statement.where(Grant.status == status)
    found = session.exec(statement).all()
    domains: dict[int, list[str]] = {}
    for grant_id, domain in session.exec(
            select(GrantDomain.grant_id, GrantDomain.domain).where(GrantDomain.active == True)  # noqa: E712
            .order_by(GrantDomain.grant_id, GrantDomain.domain)).all():
        domains.setdefault(grant_id, []).append(domain)
    return [{"app_id": g.app_id, "owner_login": g.github_login, "owner_id": g.github_user_id, "tier": g.tier,
             "domains": domains.get(g.id, []), "referrers": [g.app_id], "created": isoformat(g.created_at),
             "note": g.note or ""} for g in found]


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, out) -> int:
    """Write `rows` as CSV (lists joined with spaces) or JSON lines; returns how many."""
    count = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            count += 1
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([" ".join(row[c]) if isinstance(row[c], list) else ("" if row[c] is None else row[c])
                         for c in COLUMNS])
        count += 1
    return count


# --------------------------------------------------------------------------------------------
# GitHub users
# --------------------------------------------------------------------------------------------


class UserLookup(Protocol):
    def by_login(self, login: str) -> tuple[int, str] | None: ...
    def by_id(self, user_id: int) -> tuple[int, str] | None: ...


class GitHubUsers:
    """Logins → numeric ids (and back) through the GitHub API, each asked once. 404 is None;
    other GitHub errors propagate (the import stops before writing anything)."""

    def __init__(self, gh):
        self.gh = gh
        self._logins: dict[str, tuple[int, str] | None] = {}
        self._ids: dict[int, tuple[int, str] | None] = {}
        self.calls = 0

    def by_login(self, login: str) -> tuple[int, str] | None:
        from bot.github.client import NotFound

        key = login.lower()
        if key not in self._logins:
            self.calls += 1
            try:
                user = self.gh.get_user(login)
                self._logins[key] = (int(user["id"]), str(user["login"]))
            except NotFound:
                self._logins[key] = None
        return self._logins[key]

    def by_id(self, user_id: int) -> tuple[int, str] | None:
        from bot.github.client import NotFound

        if user_id not in self._ids:
            self.calls += 1
            try:
                user = self.gh.get_user_by_id(user_id)
                self._ids[user_id] = (int(user["id"]), str(user["login"]))
            except NotFound:
                self._ids[user_id] = None
        return self._ids[user_id]


# --------------------------------------------------------------------------------------------
# Validating and applying
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    line: int
    app_id: str
    action: str  # created | updated | unchanged | refused
    message: str
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        name = self.app_id or "?"
        out = f"line {self.line}: {self.action} {name}" + (f": {self.message}" if self.message else "")
        return out + "".join(f" (warning: {w})" for w in self.warnings)


@dataclass
class Plan:
    """A row that passed its own checks, before it meets the database."""

    line: int
    app_id: str
    owner_id: int | None
    owner_login: str | None
    tier: str
    domains: list[str]
    created: datetime | None
    note: str | None
    warnings: list[str] = field(default_factory=list)


class Refusal(Exception):
    pass


def _items(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part for part in re.split(r"[\s,;]+", str(value)) if part]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _created(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise Refusal(f"created: {text[:40]!r} is not an RFC 3339 date or time (e.g. 2025-03-01T12:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def check_row(row: Row, policy: Policy) -> Plan:
    """The row's own checks (no database, no GitHub); Refusal says what is wrong."""
    if row.problem:
        raise Refusal(row.problem)
    values = row.values
    unknown = sorted(set(values) - set(COLUMNS))
    if unknown:
        raise Refusal(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                      f"(columns: {', '.join(COLUMNS)})")
    app_id, problem = normalize_referrer(_text(values.get("app_id")))
    if problem:
        raise Refusal(f"app id {_text(values.get('app_id'))[:40]!r} {problem}")
    if app_id in {r.strip().lower() for r in policy.validation.reserved_referrers}:
        raise Refusal(f"app id {app_id} is reserved")
    login = _text(values.get("owner_login")).lstrip("@") or None
    if login and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})", login):
        raise Refusal(f"owner_login {login[:40]!r} is not a GitHub login")
    raw_id = _text(values.get("owner_id"))
    if raw_id and not raw_id.isdigit():
        raise Refusal(f"owner_id {raw_id[:40]!r} is not a numeric GitHub user id")
    owner_id = int(raw_id) if raw_id else None
    if owner_id is None and login is None:
        raise Refusal("no owner: give owner_login and/or owner_id")
    tier = policy.tier(_text(values.get("tier")))
    if tier is None:
        raise Refusal(f"tier {_text(values.get('tier'))[:32]!r} is not a tier of the policy "
                      f"({', '.join(policy.tier_names)})")
    domains: list[str] = []
    warnings = []
    for item in _items(values.get("domains")):
        domain, problem = normalize_domain(item, policy)
        if problem:
            raise Refusal(f"domain {item[:80]!r}: {problem}")
        if domain not in domains:
            domains.append(domain)
            look_alike = homograph_problem(domain)
            if look_alike:
                warnings.append(f"{domain}: {look_alike}")
    if len(domains) > policy.validation.max_domains:
        raise Refusal(f"{len(domains)} domains; at most {policy.validation.max_domains} are allowed")
    others = [r for r in (_items(values.get("referrers"))) if r.lower() != app_id]
    if others:
        raise Refusal(f"referrers: a grant has one referrer, its app id {app_id} (not {others[0][:40]})")
    note = _text(values.get("note")) or None
    if note and len(note) > NOTE_MAX:
        raise Refusal(f"note: {len(note)} characters; at most {NOTE_MAX}")
    return Plan(row.line, app_id, owner_id, login, tier.name, domains, _created(values.get("created")), note,
                warnings)


def _resolve_owner(plan: Plan, users: UserLookup | None) -> tuple[int, str]:
    if plan.owner_id is not None and plan.owner_login:
        return plan.owner_id, plan.owner_login
    if users is None:
        raise Refusal("the owner needs both owner_login and owner_id when GitHub cannot be asked")
    if plan.owner_id is None:
        found = users.by_login(plan.owner_login)
        if found is None:
            raise Refusal(f"GitHub has no user {plan.owner_login}")
        return found
    found = users.by_id(plan.owner_id)
    if found is None:
        raise Refusal(f"GitHub has no user with id {plan.owner_id}")
    return found


@dataclass
class _Held:
    grant_id: int
    app_id: str
    owner_id: int
    login: str


class _Index:
    """The grants and active domains, read once (two queries) and kept up to date as rows are
    applied, so checking a row costs no round trip to the database. The database's unique
    indexes still decide: a concurrent writer makes the import fail as a whole, never half."""

    def __init__(self, session: Session):
        self.apps: dict[str, Grant] = {g.app_id: g for g in session.exec(select(Grant)).all()}
        by_id = {g.id: g for g in self.apps.values()}
        self.domains: dict[str, _Held] = {}
        self.by_grant: dict[int, list[str]] = {}
        self.suffixes: dict[str, set[str]] = {}  # "b.c" -> active domains ending in ".b.c"
        self.created: list[Grant] = []
        for grant_id, domain in session.exec(
                select(GrantDomain.grant_id, GrantDomain.domain).where(GrantDomain.active == True)  # noqa: E712
                .order_by(GrantDomain.id)).all():
            grant = by_id.get(grant_id)
            if grant is not None and grant.status == GrantStatus.ACTIVE:
                self.add(grant, domain)

    def add(self, grant: Grant, domain: str) -> None:
        self.domains[domain] = _Held(grant.id, grant.app_id, grant.github_user_id, grant.github_login)
        self.by_grant.setdefault(grant.id, []).append(domain)
        labels = domain.removeprefix("*.").split(".")
        for i in range(1, len(labels)):
            self.suffixes.setdefault(".".join(labels[i:]), set()).add(domain)

    def conflict(self, domain: str, owner_id: int, grant_id: int | None) -> str | None:
        """Why `domain` cannot go to a grant of `owner_id`: the rules of bot.rules.checks and of the
        unique index (an exact holder; another account's wildcard covering it or covered by it)."""
        held = self.domains.get(domain)
        if held is not None and held.grant_id != grant_id:
            return f"domain {domain} is in active grant #{held.grant_id} ({held.app_id}, {held.login})"
        labels = domain.removeprefix("*.").split(".")
        start = 0 if domain.startswith("*.") else 1
        covering = ["*." + ".".join(labels[i:]) for i in range(start, len(labels) - 1)]
        covered: list[str] = []
        if domain.startswith("*."):
            base = domain[2:]
            covered = sorted(({base} if base in self.domains else set()) | self.suffixes.get(base, set()))
        for other in [*covering, *covered]:
            held = self.domains.get(other)
            if other == domain or held is None or held.owner_id == owner_id or held.grant_id == grant_id:
                continue
            verb = "is covered by" if other in covering else "would cover"
            return f"domain {domain} {verb} {other} of active grant #{held.grant_id} ({held.app_id}, {held.login})"
        return None


def _create(session: Session, index: _Index, plan: Plan, owner_id: int, owner_login: str, *, actor: str,
            source: str) -> Grant:
    """What bot.access.grants.create_grant does (grant, domains, audit row), with the checks already made
    against the index and one flush; the allowlist version comes once for the whole import."""
    from bot.core.models import AuditEvent

    now = utcnow()
    grant = Grant(app_id=plan.app_id, tier=plan.tier, status=GrantStatus.ACTIVE, github_user_id=owner_id,
                  github_login=owner_login[:64], approved_by=actor[:64], source=ORIGIN,
                  created_at=plan.created or now, updated_at=now, note=plan.note)
    session.add(grant)
    session.flush()
    for domain in plan.domains:
        session.add(GrantDomain(grant_id=grant.id, domain=domain, active=True, created_at=now))
    session.add(AuditEvent(at=now, actor=actor[:64], action="grant.created", grant_id=grant.id, subject=plan.app_id,
                           source=source, details={"tier": plan.tier, "domains": plan.domains, "app_id": plan.app_id,
                                                   "imported": {"line": plan.line, "owner_id": owner_id}}))
    index.apps[grant.app_id] = grant
    index.created.append(grant)  # one allowlist version for all of them, at the end (import_rows)
    for domain in plan.domains:
        index.add(grant, domain)
    return grant


def import_rows(session: Session, policy: Policy, rows: list[Row], *, actor: str, source: str,
                users: UserLookup | None = None, strict: bool = False,
                on_row: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Check and apply `rows` in the session's transaction (the caller commits, or rolls back
    for a dry run). With `strict`, a refused row leaves everything unapplied (the savepoint of
    the whole import is rolled back); the outcomes still say what each row would have done."""
    outcomes: list[Outcome] = []
    seen_app: dict[str, int] = {}
    seen_domain: dict[str, int] = {}
    whole = session.begin_nested()
    index = _Index(session)
    for row in rows:
        outcome = _one_row(session, policy, index, row, actor=actor, source=source, users=users,
                           seen_app=seen_app, seen_domain=seen_domain)
        outcomes.append(outcome)
        if on_row is not None:
            on_row(outcome)
    if strict and any(o.action == REFUSED for o in outcomes):
        whole.rollback()
    else:
        versioning.bump_many(session, index.created, "created")
        whole.commit()
    return outcomes


def _one_row(session: Session, policy: Policy, index: _Index, row: Row, *, actor: str, source: str,
             users: UserLookup | None, seen_app: dict[str, int], seen_domain: dict[str, int]) -> Outcome:
    app_hint = _text(row.values.get("app_id")).lower()[:64]
    try:
        plan = check_row(row, policy)
        if plan.app_id in seen_app:
            raise Refusal(f"duplicate app id: {plan.app_id} is also on line {seen_app[plan.app_id]}")
        for domain in plan.domains:
            if domain in seen_domain:
                raise Refusal(f"domain {domain} is also on line {seen_domain[domain]}")
        owner_id, owner_login = _resolve_owner(plan, users)
        existing = index.apps.get(plan.app_id)
        if existing is not None and existing.github_user_id != owner_id:
            raise Refusal(f"app id {plan.app_id} belongs to grant #{existing.id} of {existing.github_login} "
                          f"(GitHub id {existing.github_user_id}), not to id {owner_id}")
        if existing is not None and existing.status != GrantStatus.ACTIVE:
            raise Refusal(f"app id {plan.app_id} is grant #{existing.id}, {existing.status}; app ids are never "
                          "reused")
        for domain in plan.domains:
            problem = index.conflict(domain, owner_id, existing.id if existing is not None else None)
            if problem:
                raise Refusal(problem)
        outcome = _apply(session, index, plan, existing, owner_id, owner_login, actor=actor, source=source)
    except Refusal as exc:
        return Outcome(row.line, app_hint, REFUSED, str(exc))
    except (grants.GrantConflict, grants.GrantNotActive) as exc:
        return Outcome(row.line, app_hint, REFUSED, str(exc))
    seen_app[plan.app_id] = row.line
    for domain in plan.domains:
        seen_domain[domain] = row.line
    outcome.warnings = plan.warnings
    return outcome


def _apply(session: Session, index: _Index, plan: Plan, existing: Grant | None, owner_id: int, owner_login: str, *,
           actor: str, source: str) -> Outcome:
    if existing is None:
        _create(session, index, plan, owner_id, owner_login, actor=actor, source=source)
        described = f"tier {plan.tier}, owner {owner_login} ({owner_id})"
        if plan.domains:
            described += ", domains " + " ".join(plan.domains)
        return Outcome(plan.line, plan.app_id, CREATED, described)
    current = index.by_grant.get(existing.id, [])
    added = [d for d in plan.domains if d not in current]
    if plan.tier == existing.tier and not added:
        return Outcome(plan.line, plan.app_id, UNCHANGED, "")
    with session.begin_nested():
        changed = upgrades.apply_changes(session, existing, tier=plan.tier, add_domains=added, actor=actor,
                                         source=source, details={"import_line": plan.line})
    for domain in added:
        index.add(existing, domain)
    parts = []
    if "tier" in changed:
        parts.append(f"tier → {plan.tier}")
    if added:
        parts.append("domains " + " ".join(f"+{d}" for d in added))
    return Outcome(plan.line, plan.app_id, UPDATED, ", ".join(parts))


def summary(outcomes: list[Outcome]) -> str:
    counts = {action: sum(o.action == action for o in outcomes) for action in (CREATED, UPDATED, UNCHANGED, REFUSED)}
    return (f"{len(outcomes)} rows: {counts[CREATED]} created, {counts[UPDATED]} updated, "
            f"{counts[UNCHANGED]} unchanged, {counts[REFUSED]} refused")


def iter_outcome_lines(outcomes: list[Outcome], *, only_refused: bool = False) -> Iterator[str]:
    for outcome in outcomes:
        if not only_refused or outcome.action == REFUSED:
            yield outcome.text()
