"""Leak response: a live secret key posted in any issue or comment of a repository is revoked.

This is what GitHub's secret scanning does for its partners, done by the bot itself for every
repository it is installed on, on any issue (not only requests): new and edited comments, new
and edited issue bodies. The text is normalised first and every checksum-verified key body in
it is found, however it was written (keyformat.find_keys: glued to other words as in
`MY_KEY_<key>`, split over lines, HTML entities or %-escapes, zero-width or full-width
characters, without its `<prefix>_<kind>_`, base64-encoded); each is looked up by hash; then:

- a live **secret key** is revoked at once (bot.access.keys.revoke_key: audit row, allowlist bump);
- a live **gateway credential** (`_gw_`) is revoked too;
- a **publishable key** is left alone: it is public by design (it sits in the app's web pages)
  and works only from the grant's domains;
- an unknown, revoked or expired key changes nothing.

The comment author and the key's owner are told in the issue, without the key or any part of
it. Each leaked key is handled once: the audit key `leak:<key id>` (unique) records where it
was found, so a retried or redelivered event posts the same notice once and nothing else.

The revocation is committed before GitHub is asked to post the notice, so a GitHub outage
delays the notice, never the revocation. That commit is why this module is listed first in
bot.intake.handlers: no other handler's half-done work can be committed with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.access import keys
from bot.allowlist import gateways
from bot.core import audit
from bot.core.comments import Trusted, marker, render
from bot.core.models import ApiKey, Gateway, Grant, KeyKind
from bot.github.client import GitHubError, GitHubUnavailable
from bot.intake.router import Context, Event, router

log = logging.getLogger("beekeeper.leaks")

ACTOR = "system"


@dataclass(frozen=True)
class Place:
    """Where text was posted: a comment or an issue body."""

    repo: str
    number: int
    location: str  # "comment:<id>" or "issue:<repo>#<n>": what the audit row remembers
    url: str | None
    author: dict
    is_comment: bool


@dataclass
class Leak:
    kind: str  # "key" | "gateway"
    item_id: int
    grant: Grant | None = None


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


@router.on("issue_comment", "created", "edited")
def scan_comment(event: Event, ctx: Context) -> None:
    payload = event.payload
    comment, issue = payload.get("comment") or {}, payload.get("issue") or {}
    if not event.repo or not comment.get("id") or not issue.get("number"):
        return
    place = Place(event.repo, int(issue["number"]), f"comment:{comment['id']}", comment.get("html_url"),
                  _who_wrote(event, comment), is_comment=True)
    respond(ctx, place, comment.get("body") or "")


@router.on("issues", "opened", "edited")
def scan_issue(event: Event, ctx: Context) -> None:
    issue = event.payload.get("issue") or {}
    if not event.repo or not issue.get("number"):
        return
    place = Place(event.repo, int(issue["number"]), f"issue:{event.repo}#{issue['number']}", issue.get("html_url"),
                  _who_wrote(event, issue), is_comment=False)
    respond(ctx, place, f"{issue.get('title') or ''}\n{issue.get('body') or ''}")


def _who_wrote(event: Event, item: dict) -> dict:
    """Who put the text there: the sender (on an edit, the editor, who may not be the author)."""
    sender = event.sender
    return sender if sender.get("login") else (item.get("user") or {})


# --------------------------------------------------------------------------------------------
# The response
# --------------------------------------------------------------------------------------------


def respond(ctx: Context, place: Place, text: str) -> list[Leak]:
    """Revoke the live keys found in `text`, commit, then tell the issue. Returns the leaks."""
    candidates = keyformat.find_keys(text, ctx.policy.keys.prefix)
    if not candidates:
        return []
    leaks = [leak for plaintext in candidates if (leak := _handle_candidate(ctx.session, place, plaintext))]
    if not leaks:
        return []
    ctx.session.commit()  # the revocation stands even if GitHub fails below (see the module docstring)
    _notify(ctx, place, leaks)
    return leaks


def _handle_candidate(session: Session, place: Place, plaintext: str) -> Leak | None:
    """Revoke what `plaintext` unlocks, if live; a Leak to report (now or on a retry) or None."""
    digest = keyformat.sha256_hex(plaintext)
    parsed = keyformat.parse(plaintext)
    if parsed and parsed[1] == "gw":
        gateway = session.exec(select(Gateway).where(Gateway.sha256 == digest)).first()
        return _revoke_gateway(session, place, gateway) if gateway else None
    key = session.exec(select(ApiKey).where(ApiKey.sha256 == digest)).first()
    if key is None or key.kind != KeyKind.SECRET:
        return None
    grant = session.get(Grant, key.grant_id)
    once = f"leak:{key.id}"
    earlier = audit.already_done(session, once)
    if earlier is not None:
        # Handled before: report it again only from the same place (a retry whose notice failed).
        return Leak("key", key.id, grant) if (earlier.details or {}).get("location") == place.location else None
    if not keys.is_live(key):
        return None
    if not audit.claim_once(session, once, ACTOR, "key.leaked", request_id=grant.request_id if grant else None,
                            grant_id=key.grant_id, subject=grant.app_id if grant else None, source=place.url,
                            details=_details(place, key.display)):
        return None  # another worker got there first and reports it
    keys.revoke_key(session, key, ACTOR, f"leaked in {place.url or place.location}", source=place.url)
    log.warning("revoked leaked key id %s of grant %s (posted in %s)", key.id, key.grant_id, place.location)
    return Leak("key", key.id, grant)


def _revoke_gateway(session: Session, place: Place, gateway: Gateway) -> Leak | None:
    once = f"leak:gw:{gateway.id}"
    earlier = audit.already_done(session, once)
    if earlier is not None:
        return Leak("gateway", gateway.id) if (earlier.details or {}).get("location") == place.location else None
    if gateway.revoked_at is not None:
        return None
    if not audit.claim_once(session, once, ACTOR, "gateway.leaked", subject=gateway.name, source=place.url,
                            details=_details(place, gateway.display)):
        return None
    gateways.revoke(session, str(gateway.id), ACTOR)  # the gateways service's own revocation (audited there)
    log.warning("revoked leaked gateway credential %s (posted in %s)", gateway.name, place.location)
    return Leak("gateway", gateway.id)


def _details(place: Place, display: str) -> dict:
    return {"location": place.location, "url": place.url, "author": place.author.get("login"),
            "author_id": place.author.get("id"), "display": display}


def _notify(ctx: Context, place: Place, leaks: list[Leak]) -> None:
    """One notice per place and set of keys. A refusal from GitHub (a locked issue, say) costs
    only the notice; an outage is retried (the revocation is already committed)."""
    from bot.requests.outcomes import safe_mention

    author = place.author.get("login") or ""
    ids = "-".join(f"{leak.kind[0]}{leak.item_id}" for leak in sorted(leaks, key=lambda x: (x.kind, x.item_id)))
    hidden = marker("leak", f"{place.location}:{ids}")
    items = []
    for leak in leaks:
        if leak.kind == "gateway" or leak.grant is None:
            items.append({"kind": "gateway"})
            continue
        owner = leak.grant.github_login
        items.append({"kind": "key", "app_id": keys.app_id_code(leak.grant.app_id),
                      "owner": safe_mention(owner) if owner.lower() != author.lower() else None,
                      "claim_link": keys.claim_link(ctx.settings.public_url, leak.grant.app_id)})
    body = render("key_leaked.md", marker=Trusted(hidden), author=safe_mention(author) if author else Trusted("Hello"),
                  where=Trusted("your comment" if place.is_comment else "this issue's text"),
                  what=Trusted("the comment" if place.is_comment else "the key from the issue text"),
                  count=len(leaks), items=items)
    try:
        ctx.github.post_comment_once(place.repo, place.number, hidden, body)
    except GitHubUnavailable:
        raise
    except GitHubError as exc:
        log.warning("could not post the leak notice on %s#%s: %s", place.repo, place.number, exc)
