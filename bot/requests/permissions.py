"""Who may use the maintainer dashboard, answered from GitHub and the policy (no Flask here).

Requests are served only from the repositories the operator named (bot.core.served). A maintainer is
- someone the policy names (`maintainers.users` by numeric id, or a member of one of
  `maintainers.teams`): a maintainer of the whole platform;
- someone with write, maintain or admin permission on a served repository: a maintainer of that
  repository only (its requests and the grants made from them). Whoever holds the permission on
  every served repository (the usual one-repository platform) is a maintainer of the platform.
Grants made without an issue (self-service, CLI) belong to the platform: only its maintainers
act on them. Platform-wide pages (gateways, signing keys, the whole audit trail and its export)
need the policy's `admins` (numeric ids or org/team). People are compared by numeric GitHub id
(bot.github.identity): logins can be renamed and recycled.

GitHub is asked with the app's installation token (`GET /repos/{repo}/collaborators/{user}/permission`,
`GET /orgs/{org}/teams/{team}/memberships/{user}`). The web layer caches the answer briefly in
the signed session (bot.web.web_permissions), so a page view does not cost an API call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from bot.core import served
from bot.core.config import Policy
from bot.core.errors import RetryLater
from bot.core.models import AccessRequest, Installation
from bot.github import identity
from bot.github.client import GitHubApp, GitHubError
from bot.requests.commands import MAINTAINER_PERMISSIONS


class PermissionUnknown(Exception):
    """GitHub could not be asked (down, rate limited, app not installed): neither yes nor no."""


@dataclass(frozen=True)
class MaintainerScope:
    """Where a signed-in user may act as a maintainer. `everywhere`: the whole platform (every
    request and grant); `repos`: those repositories only; `admin`: the platform-wide pages too."""

    everywhere: bool = False
    repos: frozenset[str] = frozenset()
    admin: bool = False

    @property
    def is_maintainer(self) -> bool:
        return self.everywhere or self.admin or bool(self.repos)

    def covers(self, repo: str | None) -> bool:
        """May act on something tied to `repo` (None: not tied to an issue, so the platform's)."""
        if self.everywhere or self.admin:
            return True
        if repo is None:
            return False
        return repo.lower() in {r.lower() for r in self.repos}

    def visible_repositories(self) -> list[str] | None:
        """The repositories whose requests and grants this maintainer sees; None: all of them."""
        if self.everywhere or self.admin:
            return None
        return sorted(self.repos)

    def to_dict(self) -> dict:
        return {"everywhere": self.everywhere, "repos": sorted(self.repos), "admin": self.admin}

    @classmethod
    def from_dict(cls, data: dict) -> MaintainerScope:
        return cls(everywhere=bool(data.get("everywhere")), repos=frozenset(data.get("repos") or ()),
                   admin=bool(data.get("admin")))


NOBODY = MaintainerScope()


def served_repositories(session: Session, policy: Policy, github: GitHubApp | None = None) -> list[str]:
    """The repositories whose requests Beekeeper serves (bot.core.served): the policy's list, else
    the only installed repository, else none."""
    return served.served_repositories(session, policy, github)


def installation_for(session: Session, github: GitHubApp, repo: str) -> int:
    """The installation id that can act on `repo`: from the database when known, else GitHub."""
    for installation in session.exec(select(Installation).where(Installation.active == True)):  # noqa: E712
        if repo in (installation.repositories or []):
            return installation.id
    known = session.exec(
        select(AccessRequest.installation_id)
        .where(AccessRequest.repo == repo, AccessRequest.installation_id.is_not(None))
        .order_by(AccessRequest.id.desc())
    ).first()
    if known:
        return known
    try:
        return int(github.repo_installation(repo)["id"])
    except GitHubError as exc:
        raise PermissionUnknown(f"the app is not installed on {repo} ({exc.status})") from None


def _any_installation(session: Session, github: GitHubApp) -> int | None:
    """Some installation of the app, for calls that are not about a repository (users, teams)."""
    row = session.exec(select(Installation).where(Installation.active == True)  # noqa: E712
                       .order_by(Installation.id)).first()
    if row is not None:
        return row.id
    if not github.configured:
        return None
    installations = [i for i in github.list_installations() if not i.get("suspended_at")]
    return int(installations[0]["id"]) if installations else None


def maintainer_scope(session: Session, github: GitHubApp, policy: Policy, login: str,
                     user_id: int = 0) -> MaintainerScope:
    """Ask GitHub (and the policy) where the user `user_id` (currently `login`) is a maintainer.
    Raises PermissionUnknown when GitHub cannot answer, so that an outage is never mistaken for
    "no" (or "yes"). Logins the policy names are resolved to ids here once (bot.github.identity), so
    the caller commits `session`."""
    try:
        repos = served_repositories(session, policy, github)
        clients = {repo: github.for_installation(installation_for(session, github, repo)) for repo in repos}
        anywhere = next(iter(clients.values()), None)
        if anywhere is None and (policy.maintainers.users or policy.maintainers.teams or policy.admins):
            installation = _any_installation(session, github)
            anywhere = github.for_installation(installation) if installation is not None else None
        admin = identity.is_platform_admin(anywhere, policy, login, user_id)
        if admin or identity.is_policy_maintainer(session, anywhere, policy, login, user_id):
            return MaintainerScope(everywhere=True, admin=admin)
        allowed = {repo for repo, client in clients.items() if client.permission(repo, login) in MAINTAINER_PERMISSIONS}
    except (GitHubError, RetryLater) as exc:
        raise PermissionUnknown(str(exc)) from None
    return MaintainerScope(everywhere=bool(repos) and allowed == set(repos), repos=frozenset(allowed))
