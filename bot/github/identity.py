"""Who someone is: numeric GitHub user ids, never logins.

Logins can be renamed (the same person, a new login) and recycled (a new person takes a login
somebody gave up). Every rule about a person — the applicant of a request, the owner of a grant,
the maintainer deciding, the people the policy names — compares numeric ids.

The policy may name people by login for convenience (`maintainers.users`). Such a login is
resolved once through GitHub (`GET /users/{login}`) and the id is remembered in the database
(table `policy_login`); from then on the login stands for that id. A renamed maintainer keeps
their rights; whoever takes the login over later does not get them. `beekeeper doctor` prints the
ids so the operator can write them into the policy instead.

`admins` (platform-wide pages) are numeric ids or `org/team-slug` only.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot.core.config import Policy
from bot.core.models import PolicyLogin
from bot.github.client import NotFound

log = logging.getLogger("beekeeper.identity")


def policy_ids(entries) -> set[int]:
    """The numeric ids written in a policy list."""
    return {e for e in entries if isinstance(e, int)}


def policy_logins(entries) -> list[str]:
    """The logins written in a policy list (lower-case), teams (org/team) excluded."""
    return [e for e in entries if isinstance(e, str) and "/" not in e]


def policy_teams(entries) -> list[tuple[str, str]]:
    return [tuple(e.split("/", 1)) for e in entries if isinstance(e, str) and "/" in e]


def remembered_ids(session: Session, logins: list[str]) -> dict[str, int]:
    """login -> the id it was first resolved to, for the logins already resolved."""
    if not logins:
        return {}
    rows = session.exec(select(PolicyLogin).where(PolicyLogin.login.in_(logins))).all()
    return {row.login: row.user_id for row in rows}


def remember(session: Session, login: str, user_id: int) -> int:
    """Record `login` -> `user_id` unless the login was resolved before; returns the id that
    stands (the first one). Safe when two processes resolve the same login at once."""
    login = login.lower()
    existing = session.get(PolicyLogin, login)
    if existing is not None:
        return existing.user_id
    try:
        with session.begin_nested():
            session.add(PolicyLogin(login=login, user_id=int(user_id)))
    except IntegrityError:
        pass  # another process remembered it first: theirs stands
    row = session.get(PolicyLogin, login, populate_existing=True)
    return row.user_id if row is not None else int(user_id)


def resolve_logins(session: Session, gh, logins: list[str]) -> dict[str, int]:
    """login -> id for every login: the remembered id, else asked of GitHub once and remembered.
    A login GitHub does not know is left out (logged). Other GitHub errors propagate (unknown)."""
    known = remembered_ids(session, logins)
    for login in logins:
        if login in known:
            continue
        try:
            user = gh.get_user(login)
        except NotFound:
            log.warning("the policy names %r, which is not a GitHub account: ignored", login)
            continue
        known[login] = remember(session, login, int(user["id"]))
        log.info("policy login %r resolved to GitHub user id %s (remembered)", login, known[login])
    return known


def is_policy_user(session: Session | None, gh, entries, user_id: int) -> bool:
    """`user_id` is named in `entries` (a policy list of ids and logins). Logins count only
    through the id they were first resolved to (needs `session`; without one, ids only)."""
    if not user_id:
        return False
    if user_id in policy_ids(entries):
        return True
    logins = policy_logins(entries)
    if not logins or session is None:
        return False
    if user_id in remembered_ids(session, logins).values():
        return True
    return gh is not None and user_id in resolve_logins(session, gh, logins).values()


def in_policy_team(gh, entries, login: str) -> bool:
    """`login` (the account's current login, fresh from GitHub) is an active member of one of
    the `org/team` entries."""
    if gh is None or not login:
        return False
    return any(gh.is_team_member(org, team, login) for org, team in policy_teams(entries))


def is_policy_maintainer(session: Session | None, gh, policy: Policy, login: str, user_id: int) -> bool:
    """Named in maintainers.users (by id), or an active member of one of maintainers.teams."""
    if is_policy_user(session, gh, policy.maintainers.users, user_id):
        return True
    return in_policy_team(gh, policy.maintainers.teams, login)


def is_platform_admin(gh, policy: Policy, login: str, user_id: int) -> bool:
    """Named in the policy's `admins` by id, or an active member of one of its teams."""
    if user_id and user_id in policy_ids(policy.admins):
        return True
    return in_policy_team(gh, policy.admins, login)


def same_person(actor_id: int | None, owner_id: int | None) -> bool:
    """The actor is the owner (numeric ids; unknown ids are never the same person)."""
    return bool(actor_id) and bool(owner_id) and int(actor_id) == int(owner_id)
