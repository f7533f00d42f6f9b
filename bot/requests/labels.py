"""Which labels an issue should carry for its request's state, and making it so.

The bot manages a fixed set of labels (needs-info, validated, approved, rejected, tier:<name>)
and never touches any other label on the issue. Labels are created in the repository when
missing, with a colour and description, so the first request in a new repo works.
"""

from __future__ import annotations

from bot.core.config import Policy
from bot.core.models import RequestState

COLORS = {
    "trigger": ("fbca04", "An access request made with the request form (handled by Beekeeper)"),
    "needs_info": ("d93f0b", "The request needs changes from the applicant"),
    "validated": ("0e8a16", "Every check passed; waiting for a maintainer"),
    "approved": ("1d76db", "Access granted"),
    "rejected": ("b60205", "Request declined"),
    "tier": ("5319e7", "Access tier granted"),
}


def managed_labels(policy: Policy) -> set[str]:
    labels = policy.labels
    return {labels.needs_info, labels.validated, labels.approved, labels.rejected} | {
        labels.tier(t.name) for t in policy.tiers
    }


def desired_labels(policy: Policy, state: str, tier: str | None = None) -> set[str]:
    """The managed labels an issue in `state` should carry (tier: the granted tier, if any)."""
    labels = policy.labels
    wanted = {
        RequestState.RECEIVED: set(),
        RequestState.NEEDS_INFO: {labels.needs_info},
        RequestState.VALIDATED: {labels.validated},
        RequestState.APPROVED: {labels.approved},
        RequestState.REJECTED: {labels.rejected},
        RequestState.WITHDRAWN: set(),
        RequestState.REVOKED: set(),
    }.get(state, set())
    if state == RequestState.APPROVED and tier:
        wanted = wanted | {labels.tier(tier)}
    return wanted


def label_spec(policy: Policy, name: str) -> tuple[str, str]:
    """(colour, description) for one of our labels."""
    labels = policy.labels
    if name in policy.trigger_labels:  # every request form's trigger label
        return COLORS["trigger"]
    for key in ("trigger", "needs_info", "validated", "approved", "rejected"):
        if getattr(labels, key) == name:
            return COLORS[key]
    return COLORS["tier"]


def sync_labels(gh, policy: Policy, repo: str, number: int, current: list[str] | set[str], wanted: set[str]) -> bool:
    """Add the wanted managed labels and remove the unwanted ones; returns True if anything changed."""
    current = set(current)
    managed = managed_labels(policy)
    to_add = sorted(wanted - current)
    to_remove = sorted((current & managed) - wanted)
    for name in to_add:
        colour, description = label_spec(policy, name)
        gh.ensure_label(repo, name, colour, description)
    if to_add:
        gh.add_labels(repo, number, to_add)
    for name in to_remove:
        gh.remove_label(repo, number, name)
    return bool(to_add or to_remove)


def issue_label_names(issue: dict) -> list[str]:
    return [label["name"] if isinstance(label, dict) else str(label) for label in issue.get("labels") or []]
