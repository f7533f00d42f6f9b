"""The `/rotate` slash-command: a new key for an approved request, claimable on the claim page.

    /rotate          the old key keeps working for policy.keys.rotation_grace_hours
    /rotate --now    the old key stops at once (e.g. it was exposed)

The applicant or a maintainer may run it. The reply links to the claim page and says until when
the old key works; it never contains key material (the key is made only when its owner claims
it, after signing in). Registered in bot.requests.commands' registry; imported through bot.intake.handlers.
"""

from __future__ import annotations

from bot.access import grants, keys
from bot.core.comments import Trusted, render
from bot.requests.commands import APPLICANT, MAINTAINER, CommandContext, Outcome, ParsedCommand, command, safe_mention

USAGE = "/rotate [--now]"


def grace_text(hours: float) -> str:
    return f"{hours:g}"


def rotation_notice(grant, rotation: keys.Rotation, *, public_url: str, actor: str | None, grace_hours: float,
                    marker: str = "", mention: str = "") -> str:
    """The markdown that tells the issue about a rotation (the /rotate reply, the CLI comment)."""
    owner = safe_mention(grant.github_login) if actor is None or actor.lower() != grant.github_login.lower() else None
    expires = Trusted(keys.utc_text(rotation.expires_at)) if rotation.expires_at and grace_hours > 0 else None
    return render("key_rotated.md", marker=Trusted(marker), mention=Trusted(mention),
                  app_id=keys.app_id_code(grant.app_id), actor=safe_mention(actor) if actor else None,
                  owner=owner, claim_link=keys.claim_link(public_url, grant.app_id),
                  expires_at=expires,
                  grace_hours=grace_text(grace_hours) if grace_hours > 0 else None, had_keys=bool(rotation.keys))


@command("rotate", roles={MAINTAINER, APPLICANT}, usage=USAGE,
         help="Make a new key claimable; the old one keeps working for the grace period (--now: stops at once).")
def rotate_command(cmd_ctx: CommandContext, cmd: ParsedCommand) -> Outcome:
    unknown = cmd.flags - {"--now"}
    if unknown or cmd.words:
        return Outcome.refused(f"/rotate takes no arguments besides --now. Usage: {USAGE}")
    grant = grants.grant_for_request(cmd_ctx.session, cmd_ctx.request)
    if grant is None:
        return Outcome.refused("This request has no grant yet, so it has no key to rotate.")
    grace = 0.0 if "--now" in cmd.flags else cmd_ctx.policy.keys.rotation_grace_hours
    rotation = keys.rotate(cmd_ctx.session, grant, cmd_ctx.actor, grace_hours=grace, source=cmd_ctx.source)
    if rotation.status == keys.REFUSED:
        return Outcome.refused(rotation.message)
    if rotation.status == keys.NOOP:
        link = keys.claim_link(cmd_ctx.ctx.settings.public_url, grant.app_id)
        return Outcome(Outcome.NOOP, rotation.message, markdown=Trusted(f"Claim it at {link}."))
    block = rotation_notice(grant, rotation, public_url=cmd_ctx.ctx.settings.public_url, actor=cmd_ctx.actor,
                            grace_hours=grace)
    return Outcome.done(markdown=Trusted(block))
