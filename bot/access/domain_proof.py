"""Proof of domain control before a domain enters a grant without a maintainer's review.

Self-service used to take any domain (`stripe.com`, `*.shopify.com`) at once. Now, on a tier whose
policy says `domain_proof: dns | http | dns_or_http` (the default), a domain asked for at
self-service or added in the portal on an auto-approved tier waits as a `DomainProof` row with a
random token until the applicant shows control of it, by either:

- **dns**: a TXT record `beekeeper-verification=<token>` on the domain itself (for `*.example.com`,
  on `example.com`: a wildcard needs DNS proof of its base domain);
- **http**: a file `https://<domain>/.well-known/beekeeper-verification.txt` whose content holds
  the token (a line of its own). Not for wildcards.

The applicant presses "Verify" in the portal; the check runs outside any database transaction
(it may wait on the network), then the domain goes through bot.access.domain_changes like any other
addition (checked again; applied at once on auto-approved tiers).

The HTTP fetch is made safe for a server that fetches what an applicant names: the host's
addresses come from the same resolver as the TXT lookup and must all be public (not loopback,
private, link-local…); the connection goes to that address (no second lookup a rebinding DNS could
change); https with certificate checks on port 443, a short timeout for the whole fetch, at most
4 KiB read, and redirects followed only on the same host and scheme (two at most).
Settings: BEEKEEPER_DNS_NAMESERVER / BEEKEEPER_DNS_PORT choose the resolver. Tests alone may
switch the scheme, port and the public-address rule (Settings fields with no environment variable).
"""

from __future__ import annotations

import http.client
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import dns.exception
import dns.resolver
from sqlmodel import Session, select

from bot.access import domain_changes
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.config import Policy, Settings, Tier
from bot.core.models import DomainChange, DomainChangeState, DomainProof, DomainProofState, Grant, GrantDomain
from bot.rules.checks import ERROR, check_domains

DNS = "dns"
HTTP = "http"
RECORD_PREFIX = "beekeeper-verification="
WELL_KNOWN_PATH = "/.well-known/beekeeper-verification.txt"
MAX_BYTES = 4096
MAX_REDIRECTS = 2
SOURCE = "portal"

_METHODS = {"none": (), "dns": (DNS,), "http": (HTTP,), "dns_or_http": (DNS, HTTP)}


class Refused(Exception):
    """The domain cannot be asked for; the message says why, for the applicant."""


def methods_for(tier: Tier | None, domain: str) -> tuple[str, ...]:
    """The proofs the tier accepts for `domain` (empty: no proof needed). Wildcards: DNS only."""
    methods = _METHODS[tier.domain_proof] if tier is not None else _METHODS["dns_or_http"]
    if domain.startswith("*."):
        return tuple(m for m in methods if m == DNS)
    return methods


def proof_required(tier: Tier | None) -> bool:
    return tier is None or tier.domain_proof != "none"


def record_name(domain: str) -> str:
    """Where the TXT record goes: the domain, or a wildcard's base domain."""
    return domain.removeprefix("*.")


def record_value(token: str) -> str:
    return RECORD_PREFIX + token


def file_url(domain: str) -> str:
    return f"https://{domain}{WELL_KNOWN_PATH}"


# --------------------------------------------------------------------------------------------
# Checking (network; no database)
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    method: str | None = None
    problems: list[str] = field(default_factory=list)


class Prover:
    """Looks for the token in DNS and in the well-known file."""

    def __init__(self, settings: Settings):
        self.nameserver = settings.dns_nameserver
        self.port = settings.dns_port
        self.timeout = settings.domain_proof_timeout
        self.scheme = settings.domain_proof_http_scheme
        self.http_port = settings.domain_proof_http_port
        self.allow_private = settings.domain_proof_allow_private_addresses

    def resolver(self) -> dns.resolver.Resolver:
        if self.nameserver:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.nameserver]
            resolver.port = self.port
        else:
            resolver = dns.resolver.Resolver()
        resolver.timeout = resolver.lifetime = self.timeout
        return resolver

    def check(self, methods: tuple[str, ...], domain: str, token: str) -> Check:
        """Try each accepted method in turn; ok with the first that shows the token. No method
        (the tier's policy changed to `none` since): nothing to prove."""
        if not methods:
            return Check(True, "none")
        problems = []
        for method in methods:
            problem = self.dns(domain, token) if method == DNS else self.http(domain, token)
            if problem is None:
                return Check(True, method)
            problems.append(problem)
        return Check(False, None, problems)

    # --- DNS -----------------------------------------------------------------------------------

    def dns(self, domain: str, token: str) -> str | None:
        """None when a TXT record of the domain (a wildcard's base) is exactly the expected value."""
        name = record_name(domain)
        expected = record_value(token)
        try:
            answer = self.resolver().resolve(name, "TXT", search=False)
        except dns.resolver.NXDOMAIN:
            return f"DNS: {name} does not exist."
        except dns.resolver.NoAnswer:
            return f"DNS: {name} has no TXT record yet (new records can take a few minutes to appear)."
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            return "DNS: no answer from the name servers just now; try again in a minute."
        except dns.exception.DNSException:
            return f"DNS: the TXT lookup of {name} failed."
        for rdata in answer:
            value = b"".join(rdata.strings).decode("utf-8", "replace").strip()
            if secrets.compare_digest(value.encode(), expected.encode()):
                return None
        return f"DNS: no TXT record of {name} is {expected} (found {len(answer)} other TXT record(s))."

    # --- HTTP ----------------------------------------------------------------------------------

    def _addresses(self, host: str) -> list[str]:
        resolver = self.resolver()
        found: list[str] = []
        for rtype in ("A", "AAAA"):
            try:
                found += [r.address for r in resolver.resolve(host, rtype, search=False)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
        return found

    def http(self, domain: str, token: str) -> str | None:
        """None when the well-known file on the domain holds the token on a line of its own."""
        if domain.startswith("*."):
            return "File: a wildcard needs the DNS record on its base domain."
        host = domain
        where = f"{self.scheme}://{host}{WELL_KNOWN_PATH}"
        try:
            addresses = self._addresses(host)
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException):
            return f"File: {host} could not be resolved just now; try again in a minute."
        if not addresses:
            return f"File: {host} has no address in DNS."
        if not self.allow_private and not all(ipaddress.ip_address(a).is_global for a in addresses):
            return f"File: {host} resolves to a non-public address; it cannot be fetched."
        deadline = time.monotonic() + self.timeout
        path = WELL_KNOWN_PATH
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                status, location, body = self._get(host, addresses[0], path, deadline)
            except (OSError, http.client.HTTPException) as exc:  # timeouts and TLS errors are OSErrors
                return f"File: {where} could not be fetched ({exc.__class__.__name__})."
            except _TooLarge:
                return f"File: {where} is larger than {MAX_BYTES} bytes."
            if status in (301, 302, 303, 307, 308) and location:
                netloc = host if self._port == self._default_port else f"{host}:{self._port}"
                target = urlsplit(urljoin(f"{self.scheme}://{netloc}{path}", location))
                if target.scheme != self.scheme or (target.hostname or "").lower() != host \
                        or (target.port or self._default_port) != self._port:
                    return f"File: {where} redirects to another host; the file must be served by {host} itself."
                path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                continue
            if status != 200:
                return f"File: {where} answered HTTP {status}."
            lines = body.decode("utf-8", "replace").split()
            if any(secrets.compare_digest(line.encode(), token.encode()) for line in lines):
                return None
            return f"File: {where} does not contain the token."
        return f"File: {where} redirects too often."

    @property
    def _default_port(self) -> int:
        return 443 if self.scheme == "https" else 80

    @property
    def _port(self) -> int:
        return self.http_port or self._default_port

    def _get(self, host: str, address: str, path: str, deadline: float) -> tuple[int, str | None, bytes]:
        port = self._port
        timeout = max(0.1, deadline - time.monotonic())
        if self.scheme == "https":
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(host, address, port, timeout,
                                                                      ssl.create_default_context())
        else:
            conn = _PinnedHTTPConnection(host, address, port, timeout)
        try:
            conn.request("GET", path, headers={
                "Host": host if port == self._default_port else f"{host}:{port}",
                "User-Agent": "Beekeeper domain verification", "Accept": "text/plain"})
            response = conn.getresponse()
            body = b""
            if response.status == 200:
                while len(body) <= MAX_BYTES:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the file took too long")
                    chunk = response.read1(MAX_BYTES + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
                if len(body) > MAX_BYTES:
                    raise _TooLarge()
            return response.status, response.getheader("Location"), body
        finally:
            conn.close()


class _TooLarge(Exception):
    pass


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address already checked, whatever a second DNS lookup would say."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


# --------------------------------------------------------------------------------------------
# Rows (database; no network)
# --------------------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(24)


def pending(session: Session, grant_ids: list[int]) -> dict[int, list[DomainProof]]:
    """Pending proofs by grant id, oldest first."""
    if not grant_ids:
        return {}
    rows = session.exec(select(DomainProof).where(DomainProof.grant_id.in_(grant_ids),
                                                  DomainProof.state == DomainProofState.PENDING)
                        .order_by(DomainProof.id)).all()
    found: dict[int, list[DomainProof]] = {}
    for row in rows:
        found.setdefault(row.grant_id, []).append(row)
    return found


def open_proof(session: Session, grant: Grant, user_id: int, domain: str, actor: str) -> DomainProof:
    """A pending proof for a normalised domain on the grant (the existing one if asked again)."""
    existing = session.exec(select(DomainProof).where(DomainProof.grant_id == grant.id,
                                                      DomainProof.domain == domain,
                                                      DomainProof.state == DomainProofState.PENDING)).first()
    if existing is not None:
        return existing
    proof = DomainProof(grant_id=grant.id, github_user_id=user_id, domain=domain, token=new_token(),
                        created_at=utcnow())
    session.add(proof)
    session.flush()
    audit.record(session, actor, "domain.proof_requested", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=SOURCE, details={"domain": domain, "proof_id": proof.id})
    return proof


def request(session: Session, policy: Policy, grant: Grant, user_id: int, actor: str, raw: str) -> DomainProof:
    """The owner asks for a domain on a tier that needs proof: checked like any domain, then pending."""
    if grant.status != "active":
        raise Refused("This grant is revoked; its domains can no longer change.")
    results = check_domains(session, [raw], grant.github_user_id, policy)
    errors = [r for r in results if r.status == ERROR]
    if errors:
        raise Refused(" ".join(r.message.rstrip(".") + "." for r in errors))
    domain = next((r.data["domains"][0] for r in results if r.data.get("domains")), None)
    if domain is None:
        raise Refused("Please enter a domain, like app.example.com.")
    tier = policy.tier(grant.tier)
    if not methods_for(tier, domain):
        raise Refused(f"{domain}: a wildcard needs a DNS record on {record_name(domain)}, and this tier accepts "
                      "only the file proof. Add the domains one by one, or open a request.")
    active = session.exec(select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id,
                                                           GrantDomain.active == True)).all()  # noqa: E712
    changes = session.exec(select(DomainChange.domain).where(DomainChange.grant_id == grant.id,
                                                             DomainChange.state == DomainChangeState.PENDING)).all()
    proofs = pending(session, [grant.id]).get(grant.id, [])
    if domain in active:
        raise Refused(f"{domain} is already one of this grant's domains.")
    if domain in changes:
        raise Refused(f"{domain} is already waiting for a maintainer's review.")
    if domain not in {p.domain for p in proofs} and \
            len(active) + len(changes) + len(proofs) >= policy.validation.max_domains:
        raise Refused(f"A grant can have at most {policy.validation.max_domains} domains; remove one first, "
                      "or use a wildcard such as *.example.com.")
    return open_proof(session, grant, user_id, domain, actor)


@dataclass
class Verified:
    status: str  # "added" | "pending" (a maintainer reviews it next) | "failed" | "refused"
    domain: str
    problems: list[str] = field(default_factory=list)
    result: domain_changes.Result | None = None


def record_check(session: Session, policy: Policy, proof: DomainProof, check: Check, actor: str,
                 actor_id: int) -> Verified:
    """Store what a check found; a proven domain goes on through bot.access.domain_changes (re-checked)."""
    if proof.state != DomainProofState.PENDING:
        return Verified("refused", proof.domain, [f"{proof.domain} is no longer waiting for proof."])
    grant = session.get(Grant, proof.grant_id)
    proof.checked_at = utcnow()
    if not check.ok:
        proof.last_error = " ".join(check.problems)[:2000]
        session.add(proof)
        return Verified("failed", proof.domain, check.problems)
    try:
        with session.begin_nested():
            result = domain_changes.request_add(session, policy, grant, actor, actor_id, proof.domain)
    except domain_changes.Refused as exc:
        proof.last_error = str(exc)
        session.add(proof)
        return Verified("refused", proof.domain, [str(exc)])
    proof.state = DomainProofState.VERIFIED
    proof.method = check.method
    proof.verified_at = proof.checked_at
    proof.last_error = None
    session.add(proof)
    audit.record(session, actor, "domain.proof_verified", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=SOURCE,
                 details={"domain": proof.domain, "proof_id": proof.id, "method": check.method})
    return Verified(result.status, proof.domain, result=result)


def withdraw(session: Session, proof: DomainProof, actor: str) -> None:
    if proof.state != DomainProofState.PENDING:
        raise Refused(f"{proof.domain} is no longer waiting for proof.")
    proof.state = DomainProofState.WITHDRAWN
    session.add(proof)
    audit.record(session, actor, "domain.proof_withdrawn", grant_id=proof.grant_id, source=SOURCE,
                 details={"domain": proof.domain, "proof_id": proof.id})
