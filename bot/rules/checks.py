"""Checks on a request's values: each check is a small function returning CheckResults.

A result is `ok`, `error` (the applicant must change something) or `warning` (worth knowing;
does not block). `flag` marks results a maintainer should look at before approving (a young
account, a tier above what the form may ask, a duplicate request, a look-alike domain), and
`conflict` marks a domain or app id already granted to another GitHub user — a question for a
maintainer, never an automatic yes.

Messages and hints are plain text (no markdown): the status comment escapes them, because they
quote what the applicant typed. The contact e-mail is never quoted in a result.

The domain and app-id checks need no issue and no GitHub client, so the self-service portal
reuses `normalize_domain`, `check_domains` and `check_referrer` as they are.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import idna
from confusable_homoglyphs import categories, confusables
from email_validator import EmailNotValidError, validate_email
from publicsuffixlist import PublicSuffixList
from sqlalchemy import or_
from sqlmodel import Session, select

from bot.core.clock import utcnow
from bot.core.config import Form, Policy, Validation
from bot.core.models import AccessRequest, Grant, GrantDomain, GrantStatus, RequestState
from bot.github.client import GitHubError, GitHubUnavailable, NotFound

if TYPE_CHECKING:
    from bot.rules.forms import FormSchema, ParsedForm

log = logging.getLogger("beekeeper.checks")

OK, ERROR, WARNING = "ok", "error", "warning"
QUOTE_LENGTH = 80  # applicant text quoted in a message is cut to this many characters

REFERRER_MIN, REFERRER_MAX = 3, 39
_REFERRER = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

Resolver = Callable[[str], bool]


@dataclass(frozen=True)
class CheckResult:
    status: str  # ok | error | warning
    name: str  # short, e.g. "domains", "app id"
    message: str
    hint: str | None = None
    conflict: bool = False  # already granted to another GitHub user
    flag: bool = False  # a maintainer should look before approving
    ref: str | None = None  # "owner/repo#12": an issue the report links to
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable details, never rendered
    info: bool = False  # a ✅ worth keeping but not worth a line of its own: folded into "details"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class CheckReport:
    results: list[CheckResult] = field(default_factory=list)
    # Values after normalisation, for the request row: domains, referrer, referrer_proposed,
    # tier, contact (the contact lives here only, never in `results`).
    normalized: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(r.status == ERROR for r in self.results)

    @property
    def conflicts(self) -> list[CheckResult]:
        return [r for r in self.results if r.conflict]

    @property
    def flags(self) -> list[CheckResult]:
        return [r for r in self.results if r.flag]

    @property
    def needs_maintainer(self) -> bool:
        """True when a maintainer must look before this may be approved (no auto-approval)."""
        return bool(self.conflicts or self.flags)


def _quote(text: object, length: int = QUOTE_LENGTH) -> str:
    """Applicant text for a message: one line, cut (the comment escapes it)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def _validation(policy: Policy | None) -> Validation:
    return policy.validation if policy is not None else Validation()


# --------------------------------------------------------------------------------------------
# Domains
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    """The Public Suffix List shipped with `publicsuffixlist` (offline); unknown TLDs are refused."""
    return PublicSuffixList(accept_unknown=False)


def _ip_like(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    labels = host.split(".")
    # 127.1, 0x7f.0.0.1, 2130706433: browsers read these as IPv4 addresses too.
    return all(re.fullmatch(r"(0x[0-9a-f]*|[0-9]+)", label or "0", re.I) for label in labels)


def _host_part(text: str) -> tuple[str | None, str | None]:
    """Strip scheme, credentials, path and port: the host as typed, or a problem."""
    candidate = text.strip().strip("`'\"<>").strip()
    if "://" in candidate:
        scheme, _, candidate = candidate.partition("://")
        if scheme.lower() not in ("http", "https", "ws", "wss"):
            return None, f"only web origins are accepted, not {_quote(scheme, 20)}:// addresses"
    elif candidate.startswith("//"):
        candidate = candidate[2:]
    candidate = re.split(r"[/?#\\]", candidate, maxsplit=1)[0]
    if "@" in candidate:
        return None, "looks like an e-mail address, not a domain"
    if candidate.startswith("["):
        return None, "IP addresses are not accepted; use a domain name"
    if candidate.count(":") == 1:
        candidate, port = candidate.split(":")
        if port and not port.isdigit():
            return None, "not a domain name (bad port)"
    elif candidate.count(":") > 1:
        if _ip_like(candidate):
            return None, "IP addresses are not accepted; use a domain name"
        return None, "not a domain name"
    return candidate.strip(), None


def is_disposable_email_domain(domain: str, policy: Policy) -> bool:
    """On the `disposable-email-domains` list or the policy's additions (subdomains included),
    unless the policy allows it."""
    validation = policy.validation
    if _suffix_of(domain, validation.allowed_email_domains):
        return False
    if _suffix_of(domain, validation.disposable_email_domains):
        return True
    if validation.disposable_email_list:
        from disposable_email_domains import blocklist

        labels = domain.strip(".").lower().split(".")
        return any(".".join(labels[i:]) in blocklist for i in range(len(labels) - 1))
    return False


def _suffix_of(host: str, suffixes: Iterable[str]) -> str | None:
    for suffix in suffixes:
        suffix = suffix.strip(".").lower()
        if suffix and (host == suffix or host.endswith("." + suffix)):
            return suffix
    return None


def normalize_domain(text: str | None, policy: Policy | None = None) -> tuple[str | None, str | None]:
    """A bare host or a URL → (normalised domain, None), or (None, problem).

    Lower case, scheme/credentials/path/port stripped, one trailing dot dropped, IDNA → punycode.
    Refused: IP literals, localhost, private-use names (`.local`, `.internal`, …: the policy's
    `validation.private_suffixes`), unknown TLDs, and bare public suffixes (`github.io`,
    `vercel.app`, `co.uk`). `*.example.com` is allowed as a leading wildcard only.
    """
    raw = str(text or "").strip()
    if not raw:
        return None, "empty"
    host, problem = _host_part(raw)
    if problem:
        return None, problem
    if host.endswith("."):
        host = host[:-1]  # the root dot: example.com. is example.com
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        return None, "a wildcard is only allowed as the first label, as in *.example.com"
    if not host:
        return None, "not a domain name"
    if _ip_like(host):
        return None, "IP addresses are not accepted; use a domain name"
    try:
        ascii_host = idna.encode(host, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return None, "not a valid domain name (characters or labels that DNS does not allow)"
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        return None, "not a valid domain name"
    if labels[-1] == "localhost":
        return None, "localhost names are not reachable from the internet"
    private = _suffix_of(ascii_host, _validation(policy).private_suffixes)
    if private:
        return None, f"names under .{private} are private or reserved, not reachable from the internet"
    psl = _psl()
    if psl.publicsuffix(ascii_host) is None:
        return None, "no known top-level domain"
    if psl.privatesuffix(ascii_host) is None:
        return None, f"a public suffix shared by many sites; name your own site, e.g. yourname.{ascii_host}"
    return ("*." if wildcard else "") + ascii_host, None


# UTS #39 "highly restrictive": one script per label, or Latin with these CJK combinations.
_ALLOWED_SCRIPT_SETS = (
    {"LATIN", "HAN", "HIRAGANA", "KATAKANA"},
    {"LATIN", "HAN", "BOPOMOFO"},
    {"LATIN", "HAN", "HANGUL"},
)


def homograph_problem(domain: str) -> str | None:
    """Why a (punycode) domain looks like another one, or None: a label that mixes scripts
    (pаypal with a Cyrillic а), or a non-Latin label made only of Latin look-alikes (аррӏе)."""
    for label in domain.removeprefix("*.").split("."):
        if not label.startswith("xn--"):
            continue
        try:
            text = idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            continue
        scripts = set(categories.unique_aliases(text)) - {"COMMON", "INHERITED"}
        if len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_SCRIPT_SETS):
            names = " + ".join(sorted(s.title() for s in scripts))
            return f"{text} mixes scripts ({names}) and may imitate another name"
        if scripts and scripts != {"LATIN"}:
            letters = {ch for ch in text if unicodedata.category(ch).startswith("L")}
            lookalikes = {r["character"] for r in confusables.is_confusable(
                text, preferred_aliases=["latin"], greedy=True) or []}
            if letters and letters <= lookalikes:
                return f"{text} is written only with letters that look Latin and may imitate another name"
    return None


def resolve_host(host: str) -> bool:
    """The default DNS check: does the name resolve at all (A or AAAA)."""
    try:
        return bool(socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return False


def _wildcard_parents(domain: str) -> list[str]:
    """*.b.c and *.c forms that would cover `domain` (for a.b.c: *.b.c, *.c)."""
    labels = domain.removeprefix("*.").split(".")
    start = 1 if not domain.startswith("*.") else 0
    return ["*." + ".".join(labels[i:]) for i in range(start, len(labels) - 1)]


def domain_conflicts(session: Session, domain: str, applicant_id: int) -> list[tuple[GrantDomain, Grant]]:
    """Active grants of other GitHub users holding `domain`, a wildcard covering it, or (for a
    wildcard) a name it would cover."""
    base = domain.removeprefix("*.")
    matches = [GrantDomain.domain.in_({domain, *_wildcard_parents(domain)})]
    if domain.startswith("*."):
        matches += [GrantDomain.domain == base, GrantDomain.domain.like(f"%.{base}")]
    rows = session.exec(
        select(GrantDomain, Grant)
        .join(Grant, Grant.id == GrantDomain.grant_id)
        .where(GrantDomain.active, Grant.status == GrantStatus.ACTIVE, Grant.github_user_id != applicant_id,
               or_(*matches))
    ).all()
    return list(rows)


def _domain_items(values: dict[str, Any] | list[str] | str | None) -> list[str]:
    from bot.rules.forms import split_list

    raw = values.get("domains") if isinstance(values, dict) else values
    if isinstance(raw, str):
        return split_list(raw)
    return [str(item) for item in raw or [] if str(item).strip()]


def check_domains(session: Session, values: dict[str, Any] | list[str] | str | None, applicant_id: int,
                  policy: Policy, *, resolver: Resolver | None = None) -> list[CheckResult]:
    """Every listed domain: syntax and PSL rules, look-alikes, conflicts, optional DNS.

    `values` is the parsed form's values (its "domains"), or the list or text itself.
    `resolver` replaces the DNS lookup (tests); DNS runs only when `validation.dns_check` is on.
    """
    items = _domain_items(values)
    if not items:
        return [CheckResult(OK, "domains", "none listed: the app will be known by its app id only")]
    results: list[CheckResult] = []
    limit = policy.validation.max_domains
    if len(items) > limit:
        results.append(CheckResult(ERROR, "domains", f"{len(items)} domains listed; at most {limit} are allowed",
                                   "List only the origins that call the API from a browser; "
                                   "use a wildcard such as *.example.com for many subdomains."))
    good: list[str] = []
    for item in items[: limit * 3]:
        domain, problem = normalize_domain(item, policy)
        if problem:
            results.append(CheckResult(ERROR, "domains", f"{_quote(item)}: {problem}",
                                       "Use a public domain name you control, such as app.example.com.",
                                       data={"input": _quote(item, 253)}))
            continue
        if domain in good:
            continue
        good.append(domain)
        results.extend(_domain_findings(session, domain, applicant_id, policy, resolver))
    if good:
        results.insert(0, CheckResult(OK, "domains", ", ".join(good), data={"domains": good}))
    return results


def _domain_findings(session: Session, domain: str, applicant_id: int, policy: Policy,
                     resolver: Resolver | None) -> list[CheckResult]:
    findings = []
    look_alike = homograph_problem(domain)
    if look_alike:
        findings.append(CheckResult(WARNING, "domains", f"{domain}: {look_alike}",
                                    "A maintainer will check that this is your real domain.", flag=True,
                                    data={"domain": domain}))
    for grant_domain, grant in domain_conflicts(session, domain, applicant_id):
        findings.append(CheckResult(
            ERROR, "domains", f"{domain} is already granted to another GitHub account's app"
            + (f" (as {grant_domain.domain})" if grant_domain.domain != domain else ""),
            "Remove it, or if the domain is now yours, say so in a comment: a maintainer will check "
            "(they see who holds it).",
            conflict=True, data={"domain": domain, "grant_id": grant.id, "granted": grant_domain.domain}))
    if policy.validation.dns_check:
        lookup = resolver or resolve_host
        if not lookup(domain.removeprefix("*.")):
            findings.append(CheckResult(WARNING, "domains", f"{domain} does not resolve in DNS (yet)",
                                        "Check the spelling; a domain that does not resolve cannot call the API.",
                                        data={"domain": domain}))
    return findings


# --------------------------------------------------------------------------------------------
# Referrer / app id
# --------------------------------------------------------------------------------------------


def _id_lengths(policy: Policy | None) -> tuple[int, int]:
    rule = getattr(policy, "app_ids", None)
    return (rule.min_length, rule.max_length) if rule is not None else (REFERRER_MIN, REFERRER_MAX)


def normalize_referrer(text: str | None, policy: Policy | None = None) -> tuple[str | None, str | None]:
    """An app id as typed → (lower-case name, None), or (None, problem). Lengths: the policy's
    `app_ids` rule (3 to 39 by default)."""
    name = str(text or "").strip().lower()
    low, high = _id_lengths(policy)
    if not name:
        return None, "is empty"
    if not low <= len(name) <= high:
        return None, f"must be {low} to {high} characters long"
    if not re.fullmatch(r"[a-z0-9-]+", name):
        return None, "may only contain a-z, 0-9 and -"
    if not _REFERRER.match(name):
        return None, "must not start or end with -"
    return name, None


def slugify(text: str | None, max_length: int = REFERRER_MAX) -> str:
    """An app name → a candidate app id (ASCII letters and digits joined by -): `ImgGen Bot` →
    `imggen-bot`."""
    ascii_text = unicodedata.normalize("NFKD", str(text or "")).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def _reserved(name: str, policy: Policy) -> bool:
    return name in {r.strip().lower() for r in policy.validation.reserved_referrers}


def referrer_grant(session: Session, name: str) -> Grant | None:
    """The grant holding this app id (app ids stay taken after a revocation)."""
    return session.exec(select(Grant).where(Grant.app_id == name)).first()


def _requested_elsewhere(session: Session, name: str, applicant_id: int,
                         request_id: int | None) -> AccessRequest | None:
    query = select(AccessRequest).where(AccessRequest.referrer == name,
                                        AccessRequest.state.in_(RequestState.OPEN),
                                        AccessRequest.applicant_id != applicant_id)
    if request_id is not None:
        query = query.where(AccessRequest.id != request_id)
    return session.exec(query.order_by(AccessRequest.id)).first()


def propose_referrer(session: Session, app_name: str | None, applicant_id: int, policy: Policy,
                     request_id: int | None = None) -> str:
    """A free app id made from the app name (app-<user id> when the name has no ASCII letters)."""
    low, high = _id_lengths(policy)
    base = slugify(app_name, high)
    if len(base) < low:
        base = f"app-{applicant_id}" if not base else f"{base}-app"

    def free(name: str) -> bool:
        if normalize_referrer(name, policy)[1] or _reserved(name, policy):
            return False
        grant = referrer_grant(session, name)
        if grant is not None and grant.github_user_id != applicant_id:
            return False
        return _requested_elsewhere(session, name, applicant_id, request_id) is None

    if free(base):
        return base
    for n in range(2, 100):
        candidate = f"{base[: high - len(str(n)) - 1].rstrip('-')}-{n}"
        if free(candidate):
            return candidate
    return f"app-{applicant_id}"


def check_referrer(session: Session, referrer: str | None, app_name: str | None, applicant_id: int,
                   policy: Policy, *, request_id: int | None = None, field_label: str | None = "Referrer / app id",
                   suggest: bool = True) -> CheckResult:
    """The app id asked for (or, when empty, one proposed from the app name).

    An id typed as a name ("ImgGen Bot") gets a suggestion ("imggen-bot"): with the policy's
    `app_ids.use_suggestion` the suggestion is used (⚠️), else it is the hint of a ❌.
    `data` carries {"referrer": the effective name, "proposed": bool}.
    """
    low, high = _id_lengths(policy)
    if not str(referrer or "").strip():
        proposed = propose_referrer(session, app_name, applicant_id, policy, request_id)
        return CheckResult(OK, "app id", f"none given; proposed: {proposed}",
                           f"Fill in \"{field_label}\" to choose another one." if field_label else None,
                           data={"referrer": proposed, "proposed": True})
    name, problem = normalize_referrer(referrer, policy)
    if problem:
        suggestion = slugify(referrer, high) if suggest else ""
        usable = bool(suggestion) and normalize_referrer(suggestion, policy)[1] is None
        if usable and policy.app_ids.use_suggestion:
            result = check_referrer(session, suggestion, app_name, applicant_id, policy, request_id=request_id,
                                    field_label=field_label, suggest=False)
            if result.status == OK:
                return CheckResult(WARNING, "app id", f"{_quote(referrer, 40)} is not an app id; using {suggestion}",
                                   f"App ids are {low}-{high} characters of a-z, 0-9 and -; edit the field if you "
                                   "want another one.", data={**result.data, "suggested_from": _quote(referrer, 40)})
            return result
        hint = f"Use {low}-{high} characters of a-z, 0-9 and -, like " + (
            f"{suggestion}." if usable else "freeaichat.")
        return CheckResult(ERROR, "app id", f"{_quote(referrer, 40)} {problem}", hint,
                           data={"suggestion": suggestion} if usable else {})
    if _reserved(name, policy):
        return CheckResult(ERROR, "app id", f"{name} is reserved", "Choose another app id.")
    grant = referrer_grant(session, name)
    if grant is not None and grant.github_user_id != applicant_id:
        return CheckResult(ERROR, "app id", f"{name} belongs to another GitHub account's app: only its owner can "
                           "ask to change it", "Choose another app id. If this app is yours under another "
                           "account, say so in a comment: a maintainer will check.",
                           conflict=True, data={"referrer": name, "grant_id": grant.id})
    if grant is not None:
        return CheckResult(WARNING, "app id", f"{name} is already yours (tier {grant.tier})",
                           "To change the tier of an existing app, ask a maintainer instead of a new request.",
                           flag=True, data={"referrer": name, "grant_id": grant.id, "proposed": False})
    other = _requested_elsewhere(session, name, applicant_id, request_id)
    if other is not None:
        return CheckResult(WARNING, "app id", f"{name} is also asked for by another open request",
                           "The first request approved gets it; you may choose another one.",
                           data={"referrer": name, "proposed": False})
    return CheckResult(OK, "app id", name, data={"referrer": name, "proposed": False})


# --------------------------------------------------------------------------------------------
# Contact, tier, terms, text, URLs
# --------------------------------------------------------------------------------------------


def normalize_contact(contact: str | None, policy: Policy) -> str | None:
    """The e-mail address in normal form, or None when it is not a valid address."""
    try:
        info = validate_email(str(contact or "").strip(),
                              check_deliverability=policy.validation.email_deliverability_check)
    except EmailNotValidError:
        return None
    return info.normalized


CONTACT_WORDS = {"email": "an e-mail address", "github": "a GitHub username", "discord": "a Discord username",
                 "url": "a web address (URL)", "any": "a way to reach you"}
CONTACT_FOUND = {"email": "e-mail address", "github": "GitHub user", "discord": "Discord username",
                 "url": "web address", "any": "given"}
_GITHUB_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_DISCORD_NAME = re.compile(r"^(?!.*\.\.)[a-z0-9_.]{2,32}$")
_DISCORD_LEGACY = re.compile(r"^[^@#:`]{2,32}#[0-9]{4}$")
_CONTACT_PREFIX = re.compile(r"^(e-?mail|github|gh|discord|url|web(?:site)?)\s*[:=]\s*(\S.*)$", re.I)
_PREFIX_KIND = {"email": "email", "e-mail": "email", "github": "github", "gh": "github", "discord": "discord",
                "url": "url", "web": "url", "website": "url"}
GITHUB_LOGIN_TTL = {True: 86400.0, False: 3600.0}  # seconds a lookup is trusted (found / not found)
_login_cache: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, bool]]] = weakref.WeakKeyDictionary()


def _contact_words(kinds: list[str]) -> str:
    words = [CONTACT_WORDS[k] for k in kinds if k != "any"] or [CONTACT_WORDS["any"]]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def github_login_exists(gh, login: str, *, clock: Callable[[], float] = time.monotonic) -> bool:
    """GET /users/{login}, cached per GitHub client (a day when found, an hour when not)."""
    owner = getattr(gh, "app", gh)
    try:
        cache = _login_cache.setdefault(owner, {})
    except TypeError:
        cache = {}
    key = login.lower()
    hit = cache.get(key)
    now = clock()
    if hit and hit[0] > now:
        return hit[1]
    try:
        exists = bool(gh.get_user(login))
    except NotFound:
        exists = False
    if len(cache) > 5000:
        cache.clear()
    cache[key] = (now + GITHUB_LOGIN_TTL[exists], exists)
    return exists


def _guess_contact(text: str) -> tuple[str | None, str]:
    """(kind, value) from how the contact is written; kind None: a bare handle (GitHub or Discord)."""
    prefixed = _CONTACT_PREFIX.match(text)
    if prefixed:
        return _PREFIX_KIND[prefixed.group(1).lower()], prefixed.group(2).strip()
    github = re.match(r"^(?:https?://)?(?:www\.)?github\.com/([A-Za-z0-9-]+)/?$", text, re.I)
    if github:
        return "github", github.group(1)
    if "://" in text or text.lower().startswith("www."):
        return "url", text
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        return "email", text
    if _DISCORD_LEGACY.match(text):
        return "discord", text
    return None, text.removeprefix("@")


def check_contact(contact: str | None, policy: Policy, *, kinds: list[str] | None = None, gh=None,
                  description: str = "", required: bool = True) -> CheckResult | None:
    """The contact, for the kinds the form accepts (`contact_kinds`): an e-mail (syntax, the
    disposable-domain list, MX only when the policy asks), a GitHub login (looked up when a
    client is given), a Discord username, a URL, or `any` non-empty text. The contact itself is
    never quoted in a result; `data` says the kind and the normalised value for the request row."""
    kinds = list(kinds or ["email"])
    text = " ".join(str(contact or "").split())
    wanted = _contact_words(kinds)
    asks = f" The form asks: {_quote(description, 160)}" if description else ""
    if not text:
        if not required:
            return None
        return CheckResult(ERROR, "contact", "no contact given", f"Add {wanted}.{asks}")
    kind, value = _guess_contact(text)
    candidates = [kind] if kind else [k for k in ("github", "discord") if k in kinds]
    allowed = [k for k in candidates if k in kinds]
    if not allowed and len(kinds) == 1 and kinds[0] != "any":
        return _contact_of_kind(kinds[0], value if kind else text, policy, gh)  # its own precise message
    if not allowed:
        if "any" in kinds and not is_placeholder(text, policy):
            return CheckResult(OK, "contact", CONTACT_FOUND["any"], data={"kind": "any"})
        shown = CONTACT_WORDS.get(kind or "", "a username")
        return CheckResult(ERROR, "contact", f"the contact looks like {shown}, which this form does not accept",
                           f"Give {wanted}.{asks}")
    for candidate in allowed:
        result = _contact_of_kind(candidate, value, policy, gh)
        if result.status == OK or len(allowed) == 1:
            return result
    if "any" in kinds:
        return CheckResult(OK, "contact", CONTACT_FOUND["any"], data={"kind": "any"})
    return CheckResult(ERROR, "contact", "the contact is not " + " nor ".join(CONTACT_WORDS[k] for k in allowed),
                       f"Give {wanted}.{asks}")


def contact_value(contact: str | None, kind: str | None, policy: Policy) -> str | None:
    """The contact for the private request row, in normal form for its kind (`github:login`,
    `discord:name`, an e-mail address, a URL or the text as given)."""
    text = " ".join(str(contact or "").split())
    if not text or not kind:
        return None
    _guessed, value = _guess_contact(text)
    if kind == "email":
        return normalize_contact(value, policy)
    if kind in ("github", "discord"):
        return f"{kind}:{value.removeprefix('@')}"
    return value if kind == "url" else text


def _contact_of_kind(kind: str, value: str, policy: Policy, gh) -> CheckResult:
    if kind == "email":
        try:
            info = validate_email(value, check_deliverability=policy.validation.email_deliverability_check)
        except EmailNotValidError:
            return CheckResult(ERROR, "contact", "the contact e-mail address is not valid",
                               "Use a full address such as name@example.com.")
        if is_disposable_email_domain(info.ascii_domain.lower(), policy):
            return CheckResult(ERROR, "contact", "disposable e-mail addresses are not accepted",
                               "Use an address you will still read in a few months.")
        return CheckResult(OK, "contact", "valid e-mail address", data={"kind": "email"})
    if kind == "github":
        login = value.removeprefix("@")
        if not _GITHUB_LOGIN.match(login):
            return CheckResult(ERROR, "contact", "not a valid GitHub username",
                               "GitHub usernames are letters, digits and single hyphens.")
        found = "GitHub username (not looked up)"
        if gh is not None:
            try:
                if not github_login_exists(gh, login):
                    return CheckResult(ERROR, "contact", "no GitHub user has that username", "Check the spelling.")
                found = "GitHub user found"
            except GitHubUnavailable:
                raise  # the delivery is retried
            except GitHubError as exc:  # e.g. 403: not worth failing the applicant for
                log.warning("GitHub login lookup failed (%s); the contact is checked for its syntax only", exc.status)
        return CheckResult(OK, "contact", found, data={"kind": "github"})
    if kind == "discord":
        name = value.removeprefix("@")
        if not (_DISCORD_NAME.match(name) or _DISCORD_LEGACY.match(name)):
            return CheckResult(ERROR, "contact", "not a valid Discord username",
                               "Discord usernames are 2-32 characters of a-z, 0-9, _ and .")
        return CheckResult(OK, "contact", "Discord username", data={"kind": "discord"})
    if kind == "url":
        result = check_url(value, "contact", policy)
        if result is None or result.status != OK:
            return CheckResult(ERROR, "contact", "the contact is not a public http(s) address",
                               "Use a full address such as https://example.com/contact.")
        return CheckResult(OK, "contact", "web address", data={"kind": "url"})
    return CheckResult(OK, "contact", CONTACT_FOUND["any"], data={"kind": "any"})


def _tier_name(value: Any) -> tuple[str, int]:
    items = value if isinstance(value, list) else [value]
    items = [str(v).strip() for v in items if str(v or "").strip()]
    if not items:
        return "", 0
    match = re.match(r"[a-z0-9_-]+", items[0].lower())
    return (match.group(0) if match else items[0].lower()), len(items)


def check_tier(value: Any, policy: Policy) -> CheckResult:
    """One of the policy's tiers; above `max_requestable_tier` is flagged for a maintainer."""
    name, count = _tier_name(value)
    choices = ", ".join(policy.tier_names)
    if not name:
        return CheckResult(ERROR, "tier", "no tier chosen", f"Choose one of: {choices}.")
    if count > 1:
        return CheckResult(ERROR, "tier", "more than one tier chosen", f"Choose one of: {choices}.")
    tier = policy.tier(name)
    if tier is None:
        return CheckResult(ERROR, "tier", f"{_quote(name, 32)} is not a tier", f"Choose one of: {choices}.")
    limit = policy.tier(policy.max_requestable_tier) if policy.max_requestable_tier else None
    if limit is not None and tier.rank > limit.rank:
        return CheckResult(WARNING, "tier",
                           f"{tier.name} is above the highest tier the form can request ({limit.name})",
                           "A maintainer decides on this tier; it is never granted automatically.",
                           flag=True, data={"tier": tier.name})
    return CheckResult(OK, "tier", tier.name, data={"tier": tier.name})


def check_terms(value: Any, unticked: list[str] | None = None) -> CheckResult:
    if value is True:
        return CheckResult(OK, "terms", "accepted")
    missing = "; ".join(_quote(u, 100) for u in unticked or []) or "the required boxes"
    return CheckResult(ERROR, "terms", f"not ticked: {missing}", "Edit the issue and tick every required box.")


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.casefold())


def is_placeholder(text: str | None, policy: Policy) -> bool:
    """Junk such as "gg", "test", "asdf", "aaaa", "n/a" or "test test": the documented rule is
    (a) no letters or digits, (b) made only of the policy's placeholder words, or
    (c) one character repeated."""
    words = _words(str(text or ""))
    if not words:
        return True
    placeholders = {" ".join(_words(w)) for w in policy.validation.placeholder_words}
    if " ".join(words) in placeholders or all(w in placeholders for w in words):
        return True
    return len(set("".join(words))) == 1


def check_app_name(value: str | None, policy: Policy) -> CheckResult:
    text = " ".join(str(value or "").split())
    limit = policy.validation.app_name_max_length
    if not text:
        return CheckResult(ERROR, "app name", "no app name given", "Add the name users know your app by.")
    if len(text) > limit:
        return CheckResult(ERROR, "app name", f"too long ({len(text)} characters; at most {limit})",
                           "Use the short name of the app.")
    if len(re.sub(r"[\W_]", "", text)) < 2 or is_placeholder(text, policy):
        return CheckResult(ERROR, "app name", f"{_quote(text, 40)} looks like a placeholder",
                           "Use the real name of your app.")
    return CheckResult(OK, "app name", _quote(text, limit))


def check_description(value: str | None, policy: Policy) -> CheckResult:
    text = str(value or "").strip()
    rules = policy.validation
    if not text:
        return CheckResult(ERROR, "description", "no description given",
                           "Say in a few sentences what the app does and how it uses the API.")
    if len(text) > rules.description_max_length:
        return CheckResult(ERROR, "description",
                           f"too long ({len(text)} characters; at most {rules.description_max_length})",
                           "Summarise; a maintainer can ask for more.")
    if is_placeholder(text, policy):
        return CheckResult(ERROR, "description", "looks like a placeholder",
                           "Say in a few sentences what the app does and how it uses the API.")
    if len(text) < rules.description_min_length:
        return CheckResult(ERROR, "description",
                           f"too short ({len(text)} characters; at least {rules.description_min_length})",
                           "Say in a few sentences what the app does and how it uses the API.")
    return CheckResult(OK, "description", f"{len(text)} characters")


def check_text_fields(values: dict[str, Any], policy: Policy) -> list[CheckResult]:
    """App name and description: present, within limits, not placeholder junk."""
    return [check_app_name(values.get("app_name"), policy), check_description(values.get("description"), policy)]


def check_url(value: str | None, name: str, policy: Policy) -> CheckResult | None:
    """An optional http(s) URL with a public host; None when left empty."""
    text = str(value or "").strip()
    if not text:
        return None
    parts = urlsplit(text if "://" in text else "https://" + text)
    host, problem = (None, "is not an http(s) URL")
    if parts.scheme in ("http", "https"):
        host, problem = normalize_domain(parts.netloc, policy)
    if problem or (host or "").startswith("*."):
        return CheckResult(ERROR, name, f"{_quote(text)} is not a public http(s) URL",
                           "Use a full address such as https://example.com/ or leave the field empty.")
    return CheckResult(OK, name, _quote(text, 200))


# --------------------------------------------------------------------------------------------
# Applicant
# --------------------------------------------------------------------------------------------


def _created_at(gh, applicant_login: str, applicant_id: int) -> datetime | None:
    """The account's creation time, by numeric id (logins can be renamed), else by login."""
    user = None
    try:
        user = gh.get_user_by_id(applicant_id)
    except NotFound:
        try:
            user = gh.get_user(applicant_login)
        except NotFound:
            return None
    if not user or user.get("id") != applicant_id or not user.get("created_at"):
        return None
    return datetime.fromisoformat(str(user["created_at"]).replace("Z", "+00:00"))


def check_applicant(gh, session: Session, applicant_login: str, applicant_id: int, request_id: int | None,
                    policy: Policy) -> list[CheckResult]:
    """Account age (via GitHub; skipped without `gh`), other open requests by the same user and
    an existing active grant. Each finding is flagged for a maintainer."""
    results: list[CheckResult] = []
    rules = policy.validation
    if gh is not None and rules.min_account_age_days > 0:
        created = _created_at(gh, applicant_login, applicant_id)
        if created is None:
            results.append(CheckResult(WARNING, "account", "the GitHub account could not be looked up",
                                       "A maintainer will check the account.", flag=True))
        else:
            age_days = (utcnow() - created).days
            if age_days < rules.min_account_age_days:
                results.append(CheckResult(
                    WARNING, "account", f"the account is {age_days} days old (the policy asks for "
                    f"{rules.min_account_age_days})", "A maintainer will review the request.", flag=True,
                    data={"age_days": age_days}))
            else:
                results.append(CheckResult(OK, "account", f"{age_days} days old", info=True))
    query = select(AccessRequest).where(AccessRequest.applicant_id == applicant_id,
                                        AccessRequest.state.in_(RequestState.OPEN))
    if request_id is not None:
        query = query.where(AccessRequest.id != request_id)
    for other in session.exec(query.order_by(AccessRequest.id)).all():
        ref = f"{other.repo}#{other.issue_number}"
        newer = request_id is None or (other.id or 0) < request_id
        results.append(CheckResult(
            WARNING, "other request", "you have another open request", "Keep one request per app; close the other "
            "one if it is a duplicate.", flag=True, ref=ref,
            data={"request_id": other.id, "duplicate_of": other.id if newer else None}))
    grants = session.exec(select(Grant).where(Grant.github_user_id == applicant_id,
                                              Grant.status == GrantStatus.ACTIVE).order_by(Grant.id)).all()
    for grant in grants:
        ref = f"{grant.repo}#{grant.issue_number}" if grant.repo and grant.issue_number else None
        results.append(CheckResult(
            WARNING, "existing access", f"you already have access as {grant.app_id} (tier {grant.tier})",
            "To change the tier of that app, ask a maintainer for a tier change instead of a new request.",
            flag=True, ref=ref, data={"grant_id": grant.id}))
    return results


# --------------------------------------------------------------------------------------------
# The form itself, and everything together
# --------------------------------------------------------------------------------------------


def check_form(parsed: ParsedForm, schema: FormSchema, policy: Policy, spec: Form | None = None) -> list[CheckResult]:
    """The parser's problems. For a free-text issue, the hint lists the fields the form needs."""
    spec = spec or policy.default_form
    if not parsed.from_form:
        required = {schema.field_for_role(r, policy, spec) for r in spec.required_roles} - {None}
        needed = ", ".join(f.label + (" (required)" if f in required or f.required else "") for f in schema.fields)
        return [CheckResult(ERROR, "form", parsed.problems[0] if parsed.problems else "not made from the form",
                            f"Open the request with the form, or edit this issue to hold these fields: {needed}.",
                            data={"fields": [f.label for f in schema.fields]})]
    return [CheckResult(ERROR, "form", _quote(problem, 300)) for problem in parsed.problems]


def sort_domain_or_referrer(items: list[str]) -> tuple[list[str], list[str]]:
    """Values of a "domain or referrer" field → (hosts, app ids): a URL or anything with a dot
    is a host (normalised and checked as a domain), the rest is an app id."""
    hosts, app_ids = [], []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        (hosts if "://" in text or "." in text or text.startswith("*") else app_ids).append(text)
    return hosts, app_ids


def _as_list(value: Any) -> list[str]:
    from bot.rules.forms import split_list

    if isinstance(value, str):
        return split_list(value)
    return [str(v) for v in value or [] if str(v).strip()]


def run_checks(session: Session, parsed: ParsedForm, policy: Policy, *, schema: FormSchema, applicant_id: int,
               applicant_login: str = "", gh=None, request_id: int | None = None,
               resolver: Resolver | None = None, spec: Form | None = None) -> CheckReport:
    """Every check on a parsed form, in the order the report lists them.

    Only roles whose field the form has are checked; a required role whose heading is missing
    from the body already has its one ❌ from the parser, so its check is left out."""
    spec = spec or policy.form_named(parsed.form) or policy.default_form
    report = CheckReport(results=check_form(parsed, schema, policy, spec))
    if not parsed.from_form:
        return report
    values = parsed.values
    results = report.results
    present = schema.roles_present(policy, spec) - set(parsed.missing_roles)

    def required(role: str) -> bool:
        field_ = schema.field_for_role(role, policy, spec)
        return role in spec.required_roles or bool(field_ and field_.required)

    for role, check in (("app_name", check_app_name), ("description", check_description)):
        if role in present and (required(role) or str(values.get(role) or "").strip()):
            results.append(check(values.get(role), policy))
    for role, label in (("homepage", "homepage"), ("repository", "repository")):
        url_result = check_url(values.get(role), label, policy) if role in present else None
        if url_result is not None:
            results.append(url_result)
    hosts, app_ids = sort_domain_or_referrer(_as_list(values.get("domain_or_referrer")))
    domain_items = _as_list(values.get("domains")) + hosts
    domain_results: list[CheckResult] = []
    listed = [role for role in ("domain_or_referrer", "domains") if role in present]
    if listed and not domain_items and not app_ids and any(required(role) for role in listed):
        label = schema.field_for_role(listed[0], policy, spec).label
        results.append(CheckResult(ERROR, "domains" if listed[0] == "domains" else "domain or referrer",
                                   "nothing listed", f"Fill in \"{label}\"."))
    elif listed and (domain_items or "domains" in present):
        domain_results = check_domains(session, domain_items, applicant_id, policy, resolver=resolver)
        if not domain_items:
            domain_results = [replace(r, info=True) for r in domain_results]
        results.extend(domain_results)
    referrer_field = schema.field_for_role("referrer", policy, spec) if "referrer" in present else None
    if referrer_field is None and "domain_or_referrer" in present:
        referrer_field = schema.field_for_role("domain_or_referrer", policy, spec)
    referrer_value = values.get("referrer") if "referrer" in present else None
    if not str(referrer_value or "").strip() and app_ids:
        referrer_value = app_ids[0]
    if len(app_ids) > 1 or (app_ids and str(values.get("referrer") or "").strip()):
        named = ", ".join(_quote(a, 40) for a in app_ids)
        results.append(CheckResult(ERROR, "app id", f"more than one app id given ({named})",
                                   "A request is for one app: keep one app id (domains may be several)."))
    referrer_label = referrer_field.label if referrer_field else None
    referrer_result = check_referrer(session, referrer_value, values.get("app_name"), applicant_id, policy,
                                     request_id=request_id, field_label=referrer_label)
    results.append(referrer_result)
    contact_result = None
    if "contact" in present:
        contact_field = schema.field_for_role("contact", policy, spec)
        contact_result = check_contact(values.get("contact"), policy, kinds=spec.contact_kinds, gh=gh,
                                       description=contact_field.description if contact_field else "",
                                       required=required("contact"))
        if contact_result is not None:
            results.append(contact_result)
    tier_result = None
    if spec.fixed_tier:
        tier_result = CheckResult(OK, "tier", f"{spec.fixed_tier} (every request of this form asks for it)",
                                  data={"tier": spec.fixed_tier}, info=True)
        results.append(tier_result)
    elif "tier" in present:
        tier_result = check_tier(values.get("tier"), policy)
        results.append(tier_result)
    if "terms" in present:
        terms_field = schema.field_for_role("terms", policy, spec)
        results.append(check_terms(values.get("terms"), parsed.unticked.get(terms_field.id if terms_field else "", [])))
    results.extend(check_applicant(gh, session, applicant_login, applicant_id, request_id, policy))
    contact_kind = contact_result.data.get("kind") if contact_result is not None else None
    report.normalized = {
        "domains": next((r.data["domains"] for r in domain_results if "domains" in r.data), []),
        "referrer": referrer_result.data.get("referrer"),
        "referrer_proposed": bool(referrer_result.data.get("proposed")),
        "tier": tier_result.data.get("tier") if tier_result is not None else None,
        "contact": contact_value(values.get("contact"), contact_kind, policy),
    }
    # Whether this is an upgrade of a grant the applicant holds is the requests layer's reading
    # (bot.requests.upgrades.annotate), applied by its callers after these field checks.
    return report
