"""Who may use the maintainer dashboard, answered from GitHub and the policy (no Flask here).

A maintainer is someone listed in the policy (`maintainers.users`, or a member of one of
`maintainers.teams`) — a maintainer of every repository Beekeeper serves — or someone with
write, maintain or admin permission on a served repository, who is a maintainer of that
repository only. Actions on a request or grant tied to a repository need the scope to cover
that repository; grants made without an issue (self-service, CLI) need a platform-wide
maintainer or one of any served repository.

GitHub is asked with the app's installation token (`GET /repos/{repo}/collaborators/{user}/permission`,
`GET /orgs/{org}/teams/{team}/memberships/{user}`). The web layer caches the answer briefly in
the signed session (bot.web_permissions), so a page view does not cost an API call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from bot.commands import MAINTAINER_PERMISSIONS, is_policy_maintainer
from bot.config import Policy
from bot.errors import RetryLater
from bot.github import GitHubApp, GitHubError
from bot.models import AccessRequest, Installation


class PermissionUnknown(Exception):
    """GitHub could not be asked (down, rate limited, app not installed): neither yes nor no."""


@dataclass(frozen=True)
class MaintainerScope:
    """Where a signed-in user may act as a maintainer."""

    everywhere: bool = False
    repos: frozenset[str] = frozenset()

    @property
    def is_maintainer(self) -> bool:
        return self.everywhere or bool(self.repos)

    def covers(self, repo: str | None) -> bool:
        """May act on something tied to `repo` (None: not tied to an issue; any maintainer may)."""
        if self.everywhere:
            return True
        if repo is None:
            return bool(self.repos)
        return repo.lower() in {r.lower() for r in self.repos}

    def to_dict(self) -> dict:
        return {"everywhere": self.everywhere, "repos": sorted(self.repos)}

    @classmethod
    def from_dict(cls, data: dict) -> MaintainerScope:
        return cls(everywhere=bool(data.get("everywhere")), repos=frozenset(data.get("repos") or ()))


NOBODY = MaintainerScope()


def served_repositories(session: Session, policy: Policy) -> list[str]:
    """The repositories whose requests the dashboard shows: the policy's list, else every
    repository the app is installed on or has seen a request from."""
    if policy.repositories:
        return list(policy.repositories)
    repos: set[str] = set()
    for installation in session.exec(select(Installation).where(Installation.active == True)):  # noqa: E712
        repos.update(installation.repositories or [])
    repos.update(session.exec(select(AccessRequest.repo).distinct()).all())
    return sorted(repos)


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


def maintainer_scope(session: Session, github: GitHubApp, policy: Policy, login: str) -> MaintainerScope:
    """Ask GitHub (and the policy) where `login` is a maintainer. Raises PermissionUnknown when
    GitHub cannot answer, so that an outage is never mistaken for "no" (or "yes")."""
    repos = served_repositories(session, policy)
    try:
        if login.lower() in {u.lower() for u in policy.maintainers.users}:
            return MaintainerScope(everywhere=True)  # no GitHub call needed
        clients = {repo: github.for_installation(installation_for(session, github, repo)) for repo in repos}
        if policy.maintainers.teams and clients and is_policy_maintainer(next(iter(clients.values())), login, policy):
            return MaintainerScope(everywhere=True)
        allowed = {repo for repo, client in clients.items() if client.permission(repo, login) in MAINTAINER_PERMISSIONS}
    except (GitHubError, RetryLater) as exc:
        raise PermissionUnknown(str(exc)) from None
    return MaintainerScope(repos=frozenset(allowed))
