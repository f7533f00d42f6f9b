"""Which repositories Beekeeper serves requests from.

Only repositories the operator named: the policy's `repositories` list. An installation can
cover a whole organisation, and every admin of every repository in it would otherwise become a
maintainer of the platform (they approve requests, by a sock-puppet, in their own repository).

For a first run with an empty list, the app's one installed repository is served (that is the
repository it was set up for). With an empty list and more than one repository installed,
nothing is served: events from those repositories are ignored with a log line, and
`beekeeper doctor` fails until the operator names the repositories.

The installed repositories come from the Installation rows the installation webhooks keep; when
none were stored yet they are asked of GitHub (and remembered for a few minutes per process).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from sqlmodel import Session, select

from bot.core.config import Policy
from bot.core.models import Installation

log = logging.getLogger("beekeeper.served")

MEMO_SECONDS = 300.0
_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # GitHubApp -> (expires, repos)
_memo_lock = threading.Lock()


def installed_repositories(session: Session, github=None) -> list[str]:
    """Every repository the app is installed on (unsuspended installations), sorted."""
    rows = session.exec(select(Installation)).all()
    if rows:
        return sorted({repo for row in rows if row.active for repo in row.repositories or []})
    if github is None or not getattr(github, "configured", False):
        return []
    with _memo_lock:
        memo = _memo.get(github)
    if memo is not None and memo[0] > time.monotonic():
        return list(memo[1])
    repos: set[str] = set()
    for installation in github.list_installations():
        if installation.get("suspended_at"):
            continue
        repos.update(github.for_installation(int(installation["id"])).list_repositories())
    with _memo_lock:
        _memo[github] = (time.monotonic() + MEMO_SECONDS, sorted(repos))
    return sorted(repos)


def served_repositories(session: Session, policy: Policy, github=None) -> list[str]:
    """The repositories whose requests Beekeeper serves: the policy's list, else the only
    installed repository, else none."""
    if policy.repositories:
        return list(policy.repositories)
    installed = installed_repositories(session, github)
    return installed if len(installed) == 1 else []


def is_served(session: Session, policy: Policy, github, repo: str | None) -> bool:
    """`repo` is served (case-insensitive, as GitHub treats owner/name)."""
    if not repo:
        return False
    if policy.repositories:  # no GitHub call needed
        return repo.lower() in {r.lower() for r in policy.repositories}
    return repo.lower() in {r.lower() for r in served_repositories(session, policy, github)}


def ignore_unserved(session: Session, policy: Policy, github, repo: str | None, what: str) -> bool:
    """True (and a log line) when `repo` is not served, so the caller ignores the event."""
    if is_served(session, policy, github, repo):
        return False
    if policy.repositories:
        why = "the policy's `repositories` does not name it"
    else:
        why = ("the policy's `repositories` is empty and the app is installed on more than one repository: "
               "name the ones to serve")
    log.info("ignoring %s from %s: %s", what, repo or "(no repository)", why)
    return True
