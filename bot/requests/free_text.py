"""Free-text access requests: an issue opened without a trigger label, not made from a form,
whose title or body reads like a request for access, gets one polite comment pointing to the
form (policy `free_text_requests.reply`, off by default). Said once per issue: the comment
carries a marker and is never posted twice; the issue itself is not reviewed."""

from __future__ import annotations

import logging
import re

from bot.core import comments
from bot.rules.forms import load_form_schema

log = logging.getLogger("beekeeper.free_text")

MARKER = "<!-- beekeeper:form-pointer -->"
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def looks_like_request(text: str, words: list[str]) -> bool:
    """Does `text` hold one of the policy's words or phrases (whole words, any case)?"""
    flat = " ".join(str(text or "").casefold().split())
    return any(re.search(rf"(?<![\w-]){re.escape(' '.join(w.casefold().split()))}(?![\w-])", flat)
               for w in words if w.strip())


def maybe_point_to_form(ctx, repo: str, issue: dict) -> bool:
    """Post the pointer when the policy asks and the issue reads like a request; True if posted."""
    rules = ctx.policy.free_text_requests
    if not rules.reply or (issue.get("user") or {}).get("type") == "Bot":
        return False
    if not looks_like_request(f"{issue.get('title') or ''}\n{issue.get('body') or ''}", rules.words):
        return False
    spec = next((f for f in ctx.policy.request_forms if f.kind == "new"), ctx.policy.default_form)
    schema = load_form_schema(ctx.github, repo, ctx.policy, spec=spec)
    github_url = ctx.settings.github_url.rstrip("/")
    link = f"{github_url}/{repo}/issues/new?template={spec.template_name}" if _REPO.match(repo or "") else None
    body = comments.render("form_pointer.md", marker=comments.Trusted(MARKER), form_name=schema.display_name,
                           form_link=comments.Trusted(link) if link else None)
    ctx.github.post_comment_once(repo, int(issue["number"]), MARKER, body)
    log.info("issue %s#%s reads like a free-text access request: pointed to the form", repo, issue["number"])
    return True
