"""The developer portal: "My access" for a signed-in applicant, self-service and key management.

Applicants sign in with GitHub (bot.web.auth, the same login as the claim page). Everything here is
matched on the numeric GitHub user id; a grant that belongs to somebody else answers 404, so
nothing about it is revealed. The issue workflow stays the source of truth: the portal shows
requests and grants, and its actions call the same services as the slash-commands.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, flash, make_response, redirect, render_template, request, url_for
from sqlmodel import Session

from bot.access import domain_changes, domain_proof, keys, self_service
from bot.access.holdings import my_access, owned_grant
from bot.core.db import session_scope
from bot.core.errors import RetryLater
from bot.core.models import ApiKey, DomainChange, DomainProof, Grant
from bot.github.client import GitHubError
from bot.requests import upgrades
from bot.requests.permissions import PermissionUnknown, installation_for, served_repositories
from bot.web import page_format
from bot.web.auth import login_required, renew_session
from bot.web.shared import guard_pages, no_store
from bot.web.web_permissions import cached_scope, is_maintainer_quietly, runtime, signed_in_user

bp = Blueprint("portal", __name__)
page_format.register(bp)

NOT_YOURS = "There is no such grant among yours."
SOURCE = "portal"  # what the audit rows of portal actions point at


guard_pages(bp)


@bp.app_context_processor
def _navigation():
    return {"portal_nav_links": nav_links, "proof_methods": domain_proof.methods_for,
            "proof_record_name": domain_proof.record_name, "proof_record_value": domain_proof.record_value,
            "proof_file_url": domain_proof.file_url}


def nav_links() -> list[tuple[str, str]]:
    """Links for the page header. Uses only the cached maintainer answer: no GitHub call here."""
    if signed_in_user() is None:
        return []
    links = [("My access", url_for("portal.home"))]
    scope = cached_scope()
    if scope is not None and scope.is_maintainer and "dashboard.queue" in current_app.view_functions:
        links.append(("Dashboard", url_for("dashboard.queue")))
    return links


def issue_form_url(repo: str | None, **answers: str) -> str | None:
    """The request form on GitHub, pre-filled with `answers` (role -> value), or None without a repo."""
    if not repo:
        return None
    rt = runtime()
    form = next((f for f in rt.policy.request_forms if f.kind == "new"), rt.policy.default_form)
    roles = form.role_map
    params = {"template": PurePosixPath(form.template_path).name}
    params.update({roles.get(role, role.replace("_", "-")): value for role, value in answers.items() if value})
    return f"{rt.settings.github_url}/{repo}/issues/new?{urlencode(params)}"


def request_repository(db: Session) -> str | None:
    """Where new requests go: the first repository Beekeeper serves."""
    try:
        repos = served_repositories(db, runtime().policy, runtime().github)
    except (GitHubError, RetryLater):
        return None
    return repos[0] if repos else None


def higher_tiers(policy) -> list:
    """Tiers an applicant can ask for with the issue form (above self-service, up to the cap)."""
    base = policy.self_service_tier
    cap = policy.tier(policy.max_requestable_tier) if policy.max_requestable_tier else None
    return [t for t in sorted(policy.tiers, key=lambda t: t.rank)
            if (base is None or t.rank > base.rank) and (cap is None or t.rank <= cap.rank)]


@bp.get("/me")
@login_required
def home():
    user = signed_in_user()
    rt = runtime()
    is_maintainer_quietly()  # warms the cached answer the header's Dashboard link reads
    with Session(rt.engine) as db:
        access = my_access(db, rt.policy, user.id)
        repo = request_repository(db)
        proofs = domain_proof.pending(db, [view.grant.id for view in access.grants if view.active])
    tiers = higher_tiers(rt.policy)
    upgrade_links = {view.grant.id: upgrade_form_links(repo, view) for view in access.grants if view.active}
    instant_upgrades = {view.grant.id: upgrades.self_service_tiers(rt.policy, view.grant)
                        for view in access.grants if view.active}
    return render_template(
        "pages/portal_home.html",
        user=user,
        access=access,
        policy=rt.policy,
        self_service=self_service_offer(access),
        request_links=[(t, issue_form_url(repo, tier=t.name)) for t in tiers],
        upgrade_links=upgrade_links,
        instant_upgrades=instant_upgrades,
        github_url=rt.settings.github_url,
        proofs=proofs,
    )


def upgrade_form_links(repo: str | None, view) -> list[tuple]:
    """"Request an upgrade" of a grant: the issue form pre-filled with the grant's app name, app id
    and domains and a tier above its own, one link per such tier (bot.requests.upgrades reads the request
    as an upgrade of this grant; a maintainer decides, tiers above the form's cap included)."""
    policy = runtime().policy
    request = view.request
    app_name = (request.app_name if request is not None and request.app_name else None) or view.grant.app_id
    domains = "\n".join(d.domain for d in view.domains)
    return [(t, issue_form_url(repo, app_name=app_name, referrer=view.grant.app_id, domains=domains, tier=t.name))
            for t in sorted(policy.tiers, key=lambda t: t.rank) if view.tier is None or t.rank > view.tier.rank]


def self_service_offer(access) -> dict | None:
    """What the home page offers for self-service, or None when the policy switched it off."""
    policy = runtime().policy
    tier = policy.self_service_tier
    if not policy.self_service.enabled or tier is None:
        return None
    # Mirrors the applicant checks (an active grant is flagged), so the offer is not a dead end.
    return {"tier": tier, "available": not any(v.active for v in access.grants)}


# --------------------------------------------------------------------------------------------
# Self-service
# --------------------------------------------------------------------------------------------


def installation_client(db: Session, repo: str | None):
    """The app's client for `repo` (account-age lookups, issue comments), or None if unreachable."""
    if not repo:
        return None
    rt = runtime()
    try:
        return rt.github.for_installation(installation_for(db, rt.github, repo))
    except PermissionUnknown:
        return None


@bp.route("/me/self-service", methods=["GET", "POST"])
@login_required
def self_service_page():
    user = signed_in_user()
    rt = runtime()
    form = {"app_id": (request.form.get("app_id") or "").strip()[:39],
            "domains": (request.form.get("domains") or "")[:4000]}
    problems: list[str] = []
    try:
        with session_scope(rt.engine) as db:
            repo = request_repository(db)
            gh = installation_client(db, repo)
            if request.method == "POST":
                outcome = self_service.create(db, gh, rt.policy, user.id, user.login, form["app_id"], form["domains"])
                if outcome.grant is not None:
                    flash(f"Your {outcome.grant.tier} grant {outcome.grant.app_id} is ready. Claim its key below: "
                          "it is shown once.", "success")
                    if outcome.proofs:
                        flash(f"{len(outcome.proofs)} domain(s) wait for proof that they are yours: add the DNS "
                              "record or the file shown below, then press Verify.", "info")
                    return redirect(url_for("portal.home") + f"#grant-{outcome.grant.id}")
                eligibility = self_service.Eligibility(rt.policy.self_service_tier)
                if outcome.ineligible:
                    eligibility.reasons = outcome.problems
                else:
                    problems = outcome.problems
            else:
                eligibility = self_service.eligibility(db, gh, rt.policy, user.id, user.login)
    except (GitHubError, RetryLater):
        abort(503, description="GitHub did not answer when we checked your account. Try again in a minute.")
    if eligibility.tier is None:
        abort(404, description="Self-service is not offered on this platform; use the request form instead.")
    tier = eligibility.tier
    return render_template("pages/portal_self_service.html", tier=tier, eligibility=eligibility, form=form,
                           problems=problems, form_link=issue_form_url(repo, tier=tier.name))


@bp.post("/me/grants/<int:grant_id>/upgrade")
@login_required
def upgrade_now(grant_id: int):
    """Move the grant to a higher tier the policy approves automatically, at once (bot.requests.upgrades)."""
    user = signed_in_user()
    rt = runtime()
    tier = (request.form.get("tier") or "").strip().lower()[:32]
    try:
        with session_scope(rt.engine) as db:
            grant = _owned(db, grant_id, user.id)
            upgrades.self_service_upgrade(db, rt.policy, grant, user.id, tier, user.login, source=SOURCE)
            app_id = grant.app_id
        flash(f"{app_id} is now on the {tier} tier; your keys stay the same. Gateways pick it up with the next "
              "allowlist version.", "success")
    except upgrades.Refused as exc:
        flash(str(exc), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


# --------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------


def _owned(db: Session, grant_id: int, user_id: int):
    grant = owned_grant(db, grant_id, user_id)
    if grant is None:
        abort(404, description=NOT_YOURS)
    return grant


def _tell_issue(db: Session, grant, result, actor: str) -> None:
    """Post the domain-change note on the grant's issue; a GitHub failure only costs the note."""
    comment = domain_changes.issue_comment(grant, result, actor)
    if comment is None:
        return
    gh = installation_client(db, grant.repo)
    try:
        if gh is None:
            raise PermissionUnknown(grant.repo)
        gh.post_comment_once(grant.repo, grant.issue_number, *comment)
    except (GitHubError, RetryLater, PermissionUnknown):
        flash("The maintainers could not be told in the issue just now; your request still waits in their queue.",
              "info")


@bp.post("/me/grants/<int:grant_id>/domains")
@login_required
def add_domain(grant_id: int):
    user = signed_in_user()
    rt = runtime()
    raw = (request.form.get("domain") or "").strip()[:300]
    try:
        with session_scope(rt.engine) as db:
            grant = _owned(db, grant_id, user.id)
            tier = rt.policy.tier(grant.tier)
            if domain_proof.proof_required(tier) and not domain_changes.needs_review(rt.policy, grant):
                # No maintainer looks at it: the owner proves control first (bot.access.domain_proof).
                proof = domain_proof.request(db, rt.policy, grant, user.id, user.login, raw)
                flash(f"{proof.domain} waits for proof that it is yours: add the DNS record or the file shown "
                      "below, then press Verify.", "info")
                return redirect(url_for("portal.home") + f"#proof-{proof.id}")
            result = domain_changes.request_add(db, rt.policy, grant, user.login, user.id, raw)
        if result.status == "pending":
            with Session(rt.engine) as db:
                _tell_issue(db, grant, result, user.login)
            flash(f"{result.domain} waits for a maintainer's review; it works once they add it.", "info")
        else:
            flash(f"{result.domain} was added. Gateways pick it up with the next allowlist version.", "success")
    except (domain_changes.Refused, domain_proof.Refused) as exc:
        flash(str(exc), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


def _owned_proof(db: Session, grant_id: int, proof_id: int, user_id: int) -> tuple:
    grant = _owned(db, grant_id, user_id)
    proof = db.get(DomainProof, proof_id)
    if proof is None or proof.grant_id != grant.id:
        abort(404, description="There is no such domain waiting for proof on this grant.")
    return grant, proof


@bp.post("/me/grants/<int:grant_id>/domain-proofs/<int:proof_id>/verify")
@login_required
def verify_proof(grant_id: int, proof_id: int):
    """Look for the token now (DNS, then the file), outside any database transaction, then record it."""
    user = signed_in_user()
    rt = runtime()
    with Session(rt.engine) as db:
        grant, proof = _owned_proof(db, grant_id, proof_id, user.id)
        methods = domain_proof.methods_for(rt.policy.tier(grant.tier), proof.domain)
        domain, token = proof.domain, proof.token
    check = domain_proof.Prover(rt.settings).check(methods, domain, token)
    with session_scope(rt.engine) as db:
        proof = db.get(DomainProof, proof_id, with_for_update=True)  # two Verify clicks: the second waits
        outcome = domain_proof.record_check(db, rt.policy, proof, check, user.login, user.id)
    if outcome.status == "added":
        flash(f"{domain} is verified and added. Gateways pick it up with the next allowlist version.", "success")
    elif outcome.status == "pending":
        with Session(rt.engine) as db:
            _tell_issue(db, db.get(Grant, grant_id), outcome.result, user.login)
        flash(f"{domain} is verified and now waits for a maintainer's review.", "info")
    elif outcome.status == "failed":
        flash(f"{domain} is not verified yet: " + " ".join(outcome.problems), "error")
    else:
        flash(" ".join(outcome.problems), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


@bp.post("/me/grants/<int:grant_id>/domain-proofs/<int:proof_id>/withdraw")
@login_required
def withdraw_proof(grant_id: int, proof_id: int):
    user = signed_in_user()
    try:
        with session_scope(runtime().engine) as db:
            _, proof = _owned_proof(db, grant_id, proof_id, user.id)
            domain_proof.withdraw(db, proof, user.login)
            domain = proof.domain
        flash(f"You withdrew {domain}.", "success")
    except domain_proof.Refused as exc:
        flash(str(exc), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


@bp.post("/me/grants/<int:grant_id>/domains/<int:domain_id>/remove")
@login_required
def remove_domain(grant_id: int, domain_id: int):
    user = signed_in_user()
    try:
        with session_scope(runtime().engine) as db:
            result = domain_changes.remove(db, _owned(db, grant_id, user.id), domain_id, user.login)
        flash(f"{result.domain} was removed; keys stop working from it with the next allowlist version.", "success")
    except domain_changes.Refused as exc:
        flash(str(exc), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


@bp.post("/me/grants/<int:grant_id>/domain-changes/<int:change_id>/withdraw")
@login_required
def withdraw_domain(grant_id: int, change_id: int):
    user = signed_in_user()
    try:
        with session_scope(runtime().engine) as db:
            grant = _owned(db, grant_id, user.id)
            change = db.get(DomainChange, change_id)
            if change is None or change.grant_id != grant.id:
                abort(404, description="There is no such domain request on this grant.")
            result = domain_changes.withdraw(db, change, user.login)
        flash(f"You withdrew {result.domain}.", "success")
    except domain_changes.Refused as exc:
        flash(str(exc), "error")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


# --------------------------------------------------------------------------------------------
# Keys (bot.access.keys)
# --------------------------------------------------------------------------------------------


@bp.post("/me/grants/<int:grant_id>/keys/claim")
@login_required
def claim_key(grant_id: int):
    """Make the grant's keys and show them once, in this response only (never cached)."""
    user = signed_in_user()
    rt = runtime()
    try:
        with session_scope(rt.engine) as db:
            grant = _owned(db, grant_id, user.id)
            issued = keys.claim(db, grant, user.id, prefix=rt.policy.keys.prefix, actor=user.login, source=SOURCE)
            shown = [(item.kind, item.plaintext) for item in issued]
    except keys.ClaimRefused as exc:
        flash(str(exc), "error")
        return redirect(url_for("portal.home") + f"#grant-{grant_id}")
    return no_store(make_response(render_template("pages/portal_key.html", grant=grant, keys=shown)))


@bp.post("/me/grants/<int:grant_id>/keys/rotate")
@login_required
def rotate_key(grant_id: int):
    user = signed_in_user()
    rt = runtime()
    with session_scope(rt.engine) as db:
        rotation = keys.rotate(db, _owned(db, grant_id, user.id), user.login,
                               grace_hours=rt.policy.keys.rotation_grace_hours, source=SOURCE)
    if rotation.changed:
        renew_session(user.id)  # a key changed: sessions elsewhere (a copied cookie) end, this one stays
    if rotation.changed and rotation.expires_at is not None:
        flash(f"{rotation.message} Your current key keeps working until {page_format.when(rotation.expires_at)}.",
              "success")
    else:
        flash(rotation.message, "success" if rotation.changed else ("info" if rotation.status == keys.NOOP
                                                                     else "error"))
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")


@bp.post("/me/grants/<int:grant_id>/keys/<int:key_id>/revoke")
@login_required
def revoke_key(grant_id: int, key_id: int):
    user = signed_in_user()
    with session_scope(runtime().engine) as db:
        grant = _owned(db, grant_id, user.id)
        key = db.get(ApiKey, key_id)
        if key is None or key.grant_id != grant.id:
            abort(404, description="There is no such key on this grant.")
        done = keys.revoke_key(db, key, user.login, "revoked by its owner in the portal", source=SOURCE)
        display = key.display
    if done:
        renew_session(user.id)
    flash(f"{display} is revoked: gateways refuse it from the next allowlist version. Rotate to get a new key."
          if done else f"{display} was already revoked.", "success" if done else "info")
    return redirect(url_for("portal.home") + f"#grant-{grant_id}")
