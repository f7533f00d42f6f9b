"""Settings from the environment and the platform's policy file.

The environment is read by pydantic-settings (`EnvSettings`: the BEEKEEPER_ prefix, the process
environment over a `.env` file in the working directory); `load_settings` checks each value and
builds `Settings`, whose secrets are pydantic `SecretStr` so no repr, log line or traceback prints
one (`.get_secret_value()` where the plain value is needed).

Settings are the deployment's wiring (URLs, credentials); the policy is what a platform tunes
(tiers, labels, form roles, validation rules). Both are read once at start-up and validated so
that a mistake is reported with the setting's or key's name before any request is served.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BEEKEEPER_"
DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.default.yml")


class ConfigError(Exception):
    """A setting or policy key is missing or malformed; the message names it."""


# --------------------------------------------------------------------------------------------
# Settings (environment)
# --------------------------------------------------------------------------------------------


SECRET_FIELDS = ("github_private_key", "webhook_secret", "github_client_secret", "secret_key", "metrics_token")


@dataclass(frozen=True)
class Settings:
    database_url: str
    github_api_url: str = "https://api.github.com"
    github_url: str = "https://github.com"
    github_app_id: str | None = None
    github_private_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    public_url: str = "http://localhost:8000"
    secret_key: SecretStr = SecretStr("")
    policy_path: str | None = None
    max_webhook_bytes: int = 5 * 1024 * 1024
    worker_max_attempts: int = 8
    worker_lease_seconds: int = 30  # renewed by a heartbeat while a delivery is processed
    worker_poll_seconds: float = 1.0
    # Deliveries a worker processes at once (BEEKEEPER_WORKER_CONCURRENCY); None: 4 on
    # PostgreSQL, 1 on SQLite (bot.intake.worker.default_concurrency).
    worker_concurrency: int | None = None
    instance_path: str = "instance"
    log_level: str = "INFO"
    # /metrics and `beekeeper worker --metrics-port` need `Authorization: Bearer <token>`; unset:
    # they answer the local machine only (bot.core.metrics.scrape_refusal).
    metrics_token: SecretStr | None = None
    # Set when BEEKEEPER_SECRET_KEY was not given: the web app then signs sessions with a key it
    # generates once and shares through the database (bot.access.sessions), not with `secret_key`.
    secret_key_generated: bool = False
    # --- proof of domain control (bot.access.domain_proof) ---
    # The DNS server that answers the TXT and address lookups (BEEKEEPER_DNS_NAMESERVER, an IP
    # address, and BEEKEEPER_DNS_PORT); None: the system's resolvers (/etc/resolv.conf).
    dns_nameserver: str | None = None
    dns_port: int = 53
    domain_proof_timeout: float = 5.0
    # Test-only, never read from the environment: production fetches the well-known file with
    # https on port 443 from public addresses only.
    domain_proof_http_scheme: str = "https"
    domain_proof_http_port: int | None = None
    domain_proof_allow_private_addresses: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # Webhook intake (docs/foundation.md): the app's hook id (else learned from its ping), and
    # how long and how slowly a delivery's body may arrive before it is answered 408.
    webhook_hook_id: int | None = None
    webhook_read_seconds: float = 10.0
    webhook_min_bytes_per_second: int = 16384
    log_format: str = "text"  # BEEKEEPER_LOG_FORMAT: text, or json (one object per line)

    def __post_init__(self) -> None:
        # Secrets given as plain strings (tests, dataclasses.replace) are wrapped all the same.
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, SecretStr(value))

    @property
    def github_app_configured(self) -> bool:
        return bool(self.github_app_id and self.github_private_key and self.webhook_secret)

    @property
    def oauth_configured(self) -> bool:
        return bool(self.github_client_id and self.github_client_secret)

    def missing_github_settings(self) -> list[str]:
        """Names of the settings a working bot still needs, for the start-up message."""
        missing = []
        if not self.github_app_id:
            missing.append("BEEKEEPER_GITHUB_APP_ID")
        if not self.github_private_key:
            missing.append("BEEKEEPER_GITHUB_PRIVATE_KEY (or BEEKEEPER_GITHUB_PRIVATE_KEY_PATH)")
        if not self.webhook_secret:
            missing.append("BEEKEEPER_WEBHOOK_SECRET")
        return missing


class EnvSettings(BaseSettings):
    """Every BEEKEEPER_* variable as pydantic-settings reads it (the process environment over a
    `.env` file in the working directory). Values stay text here; `load_settings` checks them and
    names the variable in its error. A new setting is one line here and one in `load_settings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore",
                                      case_sensitive=True, env_ignore_empty=False)

    DATABASE_URL: str = ""
    INSTANCE_PATH: str = ""
    GITHUB_API_URL: str = ""
    GITHUB_URL: str = ""
    GITHUB_APP_ID: str = ""
    GITHUB_PRIVATE_KEY: SecretStr = SecretStr("")
    GITHUB_PRIVATE_KEY_PATH: str = ""
    WEBHOOK_SECRET: SecretStr = SecretStr("")
    GITHUB_CLIENT_ID: str = ""
    GITHUB_CLIENT_SECRET: SecretStr = SecretStr("")
    PUBLIC_URL: str = ""
    SECRET_KEY: SecretStr = SecretStr("")
    POLICY: str = ""
    MAX_WEBHOOK_BYTES: str = ""
    WORKER_MAX_ATTEMPTS: str = ""
    WORKER_LEASE_SECONDS: str = ""
    WORKER_POLL_SECONDS: str = ""
    WORKER_CONCURRENCY: str = ""
    LOG_LEVEL: str = ""
    LOG_FORMAT: str = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, dotenv_settings


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    """BEEKEEPER_* values by their full names: `env` when given (tests), else pydantic-settings'
    reading of the process environment over `.env`."""
    if env is not None:
        return dict(env)
    read = EnvSettings()
    values = {}
    for name in EnvSettings.model_fields:
        value = getattr(read, name)
        values[ENV_PREFIX + name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    # Variables not declared above still reach `load_settings` (process environment over .env).
    dotenv_path = Path.cwd() / ".env"
    undeclared = dict(dotenv_values(dotenv_path)) if dotenv_path.is_file() else {}
    undeclared.update(os.environ)
    values.update({k: v for k, v in undeclared.items()
                   if k.startswith(ENV_PREFIX) and k not in values and v is not None})
    return values


def _url(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(ENV_PREFIX + name, "").strip() or default
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV_PREFIX}{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{ENV_PREFIX}{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{ENV_PREFIX}{name} must be at least {minimum}, got {raw}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env: dict[str, str]) -> str:
    level = env.get(ENV_PREFIX + "LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ConfigError(f"BEEKEEPER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


LOG_FORMATS = ("text", "json")


def _log_format(env: dict[str, str]) -> str:
    value = env.get(ENV_PREFIX + "LOG_FORMAT", "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ConfigError(f"BEEKEEPER_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


def _private_key(env: dict[str, str]) -> str | None:
    pem = env.get(ENV_PREFIX + "GITHUB_PRIVATE_KEY", "").strip()
    path = env.get(ENV_PREFIX + "GITHUB_PRIVATE_KEY_PATH", "").strip()
    source = "BEEKEEPER_GITHUB_PRIVATE_KEY" if pem else "BEEKEEPER_GITHUB_PRIVATE_KEY_PATH"
    if not pem and path:
        try:
            pem = Path(path).expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"BEEKEEPER_GITHUB_PRIVATE_KEY_PATH: cannot read {path}: {exc.strerror}") from None
    if not pem:
        return None
    pem = pem.replace("\\n", "\n").strip() + "\n"  # one-line env values carry escaped newlines
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{source} is not a PEM private key (download it from the app's settings page)"
        ) from None
    return pem


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and validate every BEEKEEPER_* setting; raise ConfigError naming the bad one."""
    env = _environment(env)
    instance_path = env.get(ENV_PREFIX + "INSTANCE_PATH", "").strip() or str(Path.cwd() / "instance")
    database_url = env.get(ENV_PREFIX + "DATABASE_URL", "").strip()
    if not database_url:
        database_url = f"sqlite:///{Path(instance_path).absolute() / 'beekeeper.sqlite3'}"
    elif not database_url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise ConfigError(
            f"BEEKEEPER_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {database_url.split(':')[0]}:…"
        )
    app_id = env.get(ENV_PREFIX + "GITHUB_APP_ID", "").strip() or None
    if app_id is not None and not app_id.isdigit():
        raise ConfigError(f"BEEKEEPER_GITHUB_APP_ID must be the numeric app id, got {app_id!r}")
    secret_key = env.get(ENV_PREFIX + "SECRET_KEY", "").strip()
    generated = False
    if not secret_key:
        import secrets

        secret_key, generated = secrets.token_urlsafe(32), True
    return Settings(
        database_url=normalize_database_url(database_url),
        github_api_url=_url(env, "GITHUB_API_URL", "https://api.github.com"),
        github_url=_url(env, "GITHUB_URL", "https://github.com"),
        github_app_id=app_id,
        github_private_key=_private_key(env),
        webhook_secret=env.get(ENV_PREFIX + "WEBHOOK_SECRET", "").strip() or None,
        github_client_id=env.get(ENV_PREFIX + "GITHUB_CLIENT_ID", "").strip() or None,
        github_client_secret=env.get(ENV_PREFIX + "GITHUB_CLIENT_SECRET", "").strip() or None,
        public_url=_url(env, "PUBLIC_URL", "http://localhost:8000"),
        secret_key=secret_key,
        secret_key_generated=generated,
        policy_path=env.get(ENV_PREFIX + "POLICY", "").strip() or None,
        max_webhook_bytes=_int(env, "MAX_WEBHOOK_BYTES", 5 * 1024 * 1024, minimum=1024),
        worker_max_attempts=_int(env, "WORKER_MAX_ATTEMPTS", 8, minimum=1),
        worker_lease_seconds=_int(env, "WORKER_LEASE_SECONDS", 30, minimum=1),
        worker_poll_seconds=_float(env, "WORKER_POLL_SECONDS", 1.0, minimum=0.05),
        worker_concurrency=_int(env, "WORKER_CONCURRENCY", 0, minimum=0) or None,
        instance_path=instance_path,
        log_level=_log_level(env),
        dns_nameserver=_ip_address(env, "DNS_NAMESERVER"),
        dns_port=_int(env, "DNS_PORT", 53, minimum=1),
        webhook_hook_id=_int(env, "WEBHOOK_HOOK_ID", 0, minimum=0) or None,
        webhook_read_seconds=_float(env, "WEBHOOK_READ_SECONDS", 10.0, minimum=0.1),
        webhook_min_bytes_per_second=_int(env, "WEBHOOK_MIN_BYTES_PER_SECOND", 16384, minimum=0),
        metrics_token=env.get(ENV_PREFIX + "METRICS_TOKEN", "").strip() or None,
        log_format=_log_format(env),
    )


def _ip_address(env: dict[str, str], name: str) -> str | None:
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return None
    import ipaddress

    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an IP address, got {raw!r}") from None


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator used."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# --------------------------------------------------------------------------------------------
# Policy (YAML)
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    rank: int = Field(ge=0)
    description: str = ""
    requests_per_minute: int = Field(ge=0)
    concurrency: int = Field(ge=1)
    daily_quota: int | None = Field(default=None, ge=0)
    auto_approve: bool = False
    # Proof of control a domain needs before it enters a grant of this tier without a maintainer's
    # review (self-service, and portal additions on auto-approved tiers): a DNS TXT record, the
    # well-known file, either, or none (bot.access.domain_proof). Wildcards always need DNS.
    domain_proof: Literal["none", "dns", "http", "dns_or_http"] = "dns_or_http"

    def limits(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "concurrency": self.concurrency,
            "daily_quota": self.daily_quota,
        }


class Labels(_Strict):
    trigger: str = "special-access"
    needs_info: str = "needs-info"
    validated: str = "validated"
    approved: str = "approved"
    rejected: str = "rejected"
    tier_prefix: str = "tier:"

    def tier(self, name: str) -> str:
        return f"{self.tier_prefix}{name}"


FORM_ROLES = (
    "app_name",
    "description",
    "homepage",
    "domains",
    "referrer",
    "contact",
    "tier",
    "traffic",
    "repository",
    "terms",
    "domain_or_referrer",  # one field holding domains and/or an app id, sorted value by value
)
DEFAULT_ROLES = {r: r.replace("_", "-") for r in FORM_ROLES if r != "domain_or_referrer"}
# ---- request forms (issue 12): contact kinds, form kinds, app-id rule, free-text replies ----
CONTACT_KINDS = ("email", "github", "discord", "url", "any")
FORM_KINDS = ("new", "upgrade", "domain_change")


class Form(_Strict):
    """One request form: its template, how issues are recognised, and role -> field id.

    Under `forms:` the role map replaces the default one (a role not listed is absent); under
    the single `form:` key it is merged with the defaults, and `role: null` drops a role."""

    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,40}$")  # short name for logs and doctor
    # Where the issue form lives in the platform's repository; the bundled copy is the fallback.
    template_path: str = ".github/ISSUE_TEMPLATE/special-access.yml"
    # A local copy of the form (relative to the policy file): checked at start-up, and used when
    # the repository's copy cannot be read.
    template_file: str | None = None
    labels: list[str] = Field(default_factory=list)  # trigger labels; empty = `labels.trigger`
    title_prefix: str = ""  # an issue titled so, with one recognised heading, is a request
    kind: str = "new"  # new | upgrade | domain_change
    # role -> the field `id` in the form template, so a platform can keep its existing form.
    roles: dict[str, str | None] = Field(default_factory=lambda: dict(DEFAULT_ROLES))
    required_roles: list[str] = Field(default_factory=lambda: ["app_name", "description", "contact", "tier", "terms"])
    fixed_tier: str | None = None  # the tier every request of this form asks for (forms without a tier field)
    aliases: dict[str, list[str]] = Field(default_factory=dict)  # field id -> older labels of that field
    contact_kinds: list[str] = Field(default_factory=lambda: ["email"])

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(roles) - set(FORM_ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; known roles are {list(FORM_ROLES)}")
        return roles

    @field_validator("contact_kinds")
    @classmethod
    def _known_contact_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in CONTACT_KINDS]
        if unknown:
            raise ValueError(f"unknown contact kind(s) {unknown}; fix: use some of {list(CONTACT_KINDS)}")
        if not kinds:
            raise ValueError(f"at least one contact kind is needed; fix: use some of {list(CONTACT_KINDS)}")
        return kinds

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in FORM_KINDS:
            raise ValueError(f"unknown form kind {kind!r}; fix: use one of {list(FORM_KINDS)}")
        return kind

    @property
    def role_map(self) -> dict[str, str]:
        """role -> field id, roles mapped to nothing left out."""
        return {role: fid for role, fid in self.roles.items() if fid}

    @property
    def template_name(self) -> str:
        return self.template_path.rsplit("/", 1)[-1]


class AppIds(_Strict):
    """The app-id (referrer) rule: lower-case a-z, 0-9 and -, not starting or ending with -."""

    min_length: int = Field(default=3, ge=1, le=63)
    max_length: int = Field(default=39, ge=1, le=63)
    # An id typed with capitals or spaces ("ImgGen Bot") is taken as its suggestion ("imggen-bot")
    # with a ⚠️; false: it is a ❌ and the suggestion is only the hint.
    use_suggestion: bool = True

    @model_validator(mode="after")
    def _lengths(self) -> AppIds:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) is above max_length ({self.max_length}); "
                             "fix: make min_length the smaller one")
        return self


class FreeTextRequests(_Strict):
    """Issues without the trigger label that look like an access request get one comment
    pointing to the form (off by default)."""

    reply: bool = False
    words: list[str] = Field(default_factory=lambda: [
        "api key", "access", "referrer", "whitelist", "allowlist", "rate limit", "tier", "quota"])


class Validation(_Strict):
    min_account_age_days: int = Field(default=30, ge=0)
    reserved_referrers: list[str] = Field(
        default_factory=lambda: ["admin", "api", "beekeeper", "default", "null", "root", "system", "test", "www"]
    )
    # Disposable e-mail domains: the maintained `disposable-email-domains` package's list (when
    # disposable_email_list is on), plus the domains added here, minus allowed_email_domains.
    disposable_email_domains: list[str] = Field(default_factory=list)
    disposable_email_list: bool = True
    allowed_email_domains: list[str] = Field(default_factory=list)
    placeholder_words: list[str] = Field(
        default_factory=lambda: ["test", "testing", "asdf", "qwerty", "gg", "aaa", "xxx", "abc", "foo", "bar",
                                 "lorem ipsum", "n/a", "na", "none", "todo", "tbd", "hello", "hi", "app"]
    )
    app_name_max_length: int = Field(default=80, ge=1)
    description_min_length: int = Field(default=20, ge=0)
    description_max_length: int = Field(default=4000, ge=1)
    max_domains: int = Field(default=10, ge=1)
    # Names under these suffixes are never public web origins (RFC 6761/6762, RFC 8375, ICANN's .internal).
    private_suffixes: list[str] = Field(
        default_factory=lambda: ["local", "localhost", "internal", "intranet", "private", "corp", "home", "lan",
                                 "localdomain", "test", "example", "invalid", "onion", "arpa"]
    )
    dns_check: bool = False
    email_deliverability_check: bool = False
    close_duplicates: bool = False


# --- identities in the policy (maintainers.users, admins) ------------------------------------
# A person is known by their numeric GitHub id: logins can be renamed and recycled. Policy
# entries are numeric ids, or logins that bot.github.identity resolves once (GET /users/{login}) and
# remembers, so whoever takes over a login later does not inherit its rights.

_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


def _policy_user(value: Any) -> int | str:
    """A numeric id (int, or digits) or a GitHub login (lower-cased)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is neither a numeric GitHub user id nor a login")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if number <= 0:
            raise ValueError(f"{value!r} is not a GitHub user id")
        return number
    if isinstance(value, str) and _LOGIN.match(value.strip().lstrip("@")):
        return value.strip().lstrip("@").lower()
    raise ValueError(f"{value!r} is neither a numeric GitHub user id nor a login")


def _policy_admin(value: Any) -> int | str:
    """A numeric user id or an org/team-slug (never a login: admins are named unambiguously)."""
    if isinstance(value, str) and "/" in value:
        org, _, team = value.strip().partition("/")
        if not org or not team or "/" in team:
            raise ValueError(f"team {value!r} must be written as org/team-slug")
        return f"{org}/{team}"
    number = _policy_user(value)
    if not isinstance(number, int):
        raise ValueError(f"{value!r}: admins are numeric GitHub user ids (`beekeeper doctor` prints them) "
                         "or org/team-slug, not logins")
    return number


PolicyUser = Annotated[int | str, BeforeValidator(_policy_user)]
PolicyAdmin = Annotated[int | str, BeforeValidator(_policy_admin)]


class Maintainers(_Strict):
    users: list[PolicyUser] = Field(default_factory=list)  # numeric ids, or logins (resolved once, see below)
    teams: list[str] = Field(default_factory=list)  # "org/team-slug"
    forbid_self_approval: bool = True

    @field_validator("teams")
    @classmethod
    def _org_slash_team(cls, teams: list[str]) -> list[str]:
        for team in teams:
            if team.count("/") != 1 or not all(team.split("/")):
                raise ValueError(f"team {team!r} must be written as org/team-slug")
        return teams


class Keys(_Strict):
    prefix: str = Field(default="bk", pattern=r"^[a-z][a-z0-9]{1,9}$")
    rotation_grace_hours: float = Field(default=24, ge=0)


class Allowlist(_Strict):
    ttl_seconds: int = Field(default=3600, ge=60)  # expires_at = generated_at + ttl
    signing_key_grace_hours: float = Field(default=72, ge=0)
    delta_history: int = Field(default=100_000, ge=1)  # versions kept for ?since=
    pull_stats_flush_seconds: float = Field(default=5, ge=0)  # gateway pull counts written this often
    # how often gateways poll (beekeeper_gateway's AllowlistClient poll_interval); the dashboard overview
    # shows a gateway in red when it has not pulled for three of these
    gateway_poll_seconds: float = Field(default=30, gt=0)


class SelfService(_Strict):
    enabled: bool = True
    tier: str | None = None  # default: the lowest auto-approved tier


class Policy(_Strict):
    tiers: list[Tier]
    max_requestable_tier: str | None = None  # highest tier an applicant may ask for in the form
    labels: Labels = Field(default_factory=Labels)
    form: Form = Field(default_factory=Form)
    forms: list[Form] = Field(default_factory=list)  # several forms; when set, `form` is not used
    app_ids: AppIds = Field(default_factory=AppIds)
    free_text_requests: FreeTextRequests = Field(default_factory=FreeTextRequests)
    validation: Validation = Field(default_factory=Validation)
    maintainers: Maintainers = Field(default_factory=Maintainers)
    keys: Keys = Field(default_factory=Keys)
    allowlist: Allowlist = Field(default_factory=Allowlist)
    self_service: SelfService = Field(default_factory=SelfService)
    repositories: list[str] = Field(default_factory=list)  # owner/name served; empty = the only installed one
    admins: list[PolicyAdmin] = Field(default_factory=list)  # platform admins: numeric ids or org/team
    reconcile_interval_minutes: int = Field(default=60, ge=0)  # 0 = no periodic reconcile in the worker

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        names = [t.name for t in self.tiers]
        if not names:
            raise ValueError("tiers: at least one tier is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: names must be unique, got {names}")
        if self.max_requestable_tier and self.max_requestable_tier not in names:
            raise ValueError(f"max_requestable_tier: {self.max_requestable_tier!r} is not one of the tiers {names}")
        if self.self_service.tier and self.self_service.tier not in names:
            raise ValueError(f"self_service.tier: {self.self_service.tier!r} is not one of the tiers {names}")
        _check_forms(self, names)
        return self

    # ---- request forms ----------------------------------------------------------------------

    @property
    def request_forms(self) -> list[Form]:
        """Every request form, trigger labels filled in (`forms:`, else the single `form:`)."""
        forms = self.forms or [self.form]
        return [f if f.labels else f.model_copy(update={"labels": [self.labels.trigger]}) for f in forms]

    @property
    def default_form(self) -> Form:
        return self.request_forms[0]

    @property
    def trigger_labels(self) -> list[str]:
        return list(dict.fromkeys(label for f in self.request_forms for label in f.labels))

    def form_named(self, name: str | None) -> Form | None:
        return next((f for f in self.request_forms if name and form_key(f) == name), None)

    def form_for_labels(self, labels) -> Form | None:
        """The form whose trigger label the issue carries."""
        present = set(labels or [])
        return next((f for f in self.request_forms if present & set(f.labels)), None)

    def tier(self, name: str | None) -> Tier | None:
        name = (name or "").strip().lower()
        return next((t for t in self.tiers if t.name == name), None)

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in sorted(self.tiers, key=lambda t: t.rank)]

    @property
    def default_tier(self) -> Tier:
        return min(self.tiers, key=lambda t: t.rank)

    @property
    def self_service_tier(self) -> Tier | None:
        if self.self_service.tier:
            return self.tier(self.self_service.tier)
        auto = [t for t in self.tiers if t.auto_approve]
        return min(auto, key=lambda t: t.rank) if auto else None


def form_key(form: Form) -> str:
    """How a form is named in the request row, logs and doctor: its `name`, else its file."""
    return form.name or form.template_name


def _check_forms(policy: Policy, tier_names: list[str]) -> None:
    """Cross-field rules of the forms; each message starts with the key's path and says the fix."""
    forms = policy.forms or [policy.form]
    where = (lambda i: f"forms.{i}") if policy.forms else (lambda i: "form")
    seen_labels: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, form in enumerate(forms):
        key = where(i)
        if form.fixed_tier is not None and form.fixed_tier not in tier_names:
            raise ValueError(f"{key}.fixed_tier: {form.fixed_tier!r} is not a tier; fix: use one of {tier_names}")
        roles = form.role_map
        for role in form.required_roles:
            if role not in FORM_ROLES:
                raise ValueError(f"{key}.required_roles: unknown role {role!r}; fix: use roles from {list(FORM_ROLES)}")
            if role == "tier" and form.fixed_tier:
                continue
            if role not in roles and not (role in ("domains", "referrer") and "domain_or_referrer" in roles):
                raise ValueError(f"{key}.required_roles: {role!r} is required but {key}.roles maps it to no field; "
                                 f"fix: add `{role}: <field id>` under {key}.roles or remove it from required_roles")
        if "tier" not in roles and not form.fixed_tier and "tier" in form.required_roles:
            raise ValueError(f"{key}.fixed_tier: the form has no tier field; fix: set {key}.fixed_tier to one of "
                             f"{tier_names}")
        for label in form.labels or [policy.labels.trigger]:
            if label in seen_labels:
                raise ValueError(f"{key}.labels: the trigger label {label!r} is also used by "
                                 f"{where(seen_labels[label])}; fix: give each form its own trigger label")
            seen_labels[label] = i
        name = form_key(form)
        if name in seen_names:
            raise ValueError(f"{key}.name: {name!r} names two forms; fix: give each form its own `name`")
        seen_names[name] = i


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if not key:  # a cross-field check names its key first: "max_requestable_tier: …"
            head, sep, rest = message.partition(": ")
            key, message = (head, rest) if sep and head.replace("_", "").replace(".", "").isalnum() else (
                "(top level)", message)
        lines.append(f"  {key}: {message}")
    return f"invalid policy {source}:\n" + "\n".join(lines)


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """The shipped defaults, overlaid with the operator's file; ConfigError names the bad key."""
    defaults = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data = defaults
    source = str(DEFAULT_POLICY_PATH)
    if path:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"BEEKEEPER_POLICY: cannot read {path}: {exc.strerror}") from None
        try:
            override = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"BEEKEEPER_POLICY: {path} is not valid YAML: {exc}") from None
        if not isinstance(override, dict):
            raise ConfigError(f"BEEKEEPER_POLICY: {path} must hold a mapping at the top level")
        # Tiers are replaced whole, never merged item by item: a platform lists its own tiers.
        data = _deep_merge(defaults, override)
    base = Path(path).resolve().parent if path else Path.cwd()
    data = _absolute_template_files(data, base)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    check_form_templates(policy, source)
    return policy


def _absolute_template_files(data: dict, base: Path) -> dict:
    """`template_file` is relative to the policy file: made absolute before validation."""
    def fix(form: Any) -> Any:
        if isinstance(form, dict) and isinstance(form.get("template_file"), str):
            return {**form, "template_file": str((base / form["template_file"]).expanduser())}
        return form

    data = dict(data)
    if "form" in data:
        data["form"] = fix(data["form"])
    if isinstance(data.get("forms"), list):
        data["forms"] = [fix(f) for f in data["forms"]]
    return data


def check_form_templates(policy: Policy, source: str = "policy") -> None:
    """Forms with a local `template_file`: the file must be an issue form holding every field id
    the roles, aliases and required roles name. ConfigError with the key's path and a fix."""
    from bot.core.form_templates import FormTemplateError, parse_form_template

    problems = []
    for key, form in _keyed_forms(policy):
        if not form.template_file:
            continue
        try:
            schema = parse_form_template(Path(form.template_file).read_text(encoding="utf-8"),
                                         source=form.template_file)
        except OSError as exc:
            problems.append(f"  {key}.template_file: cannot read {form.template_file}: {exc.strerror}; "
                            "fix: give the path of a copy of the form, relative to the policy file")
            continue
        except FormTemplateError as exc:
            problems.append(f"  {key}.template_file: {form.template_file} is not an issue form ({exc}); "
                            "fix: point it at the form's YAML")
            continue
        problems.extend(f"  {problem}" for problem in form_mapping_problems(key, form, schema))
    if problems:
        raise ConfigError(f"invalid policy {source}:\n" + "\n".join(problems))


def _keyed_forms(policy: Policy) -> list[tuple[str, Form]]:
    if policy.forms:
        return [(f"forms.{i}", f) for i, f in enumerate(policy.request_forms)]
    return [("form", policy.request_forms[0])]


def form_mapping_problems(key: str, form: Form, schema) -> list[str]:
    """Roles and aliases naming a field id the form does not have, each with its fix."""
    ids = [f.id for f in schema.fields]
    problems = []
    for role, field_id in form.role_map.items():
        if field_id not in ids:
            problems.append(f"{key}.roles.{role}: the form has no field with id {field_id!r} (its ids: "
                            f"{', '.join(ids)}); fix: map {role} to one of those ids, or set it to null to drop it")
    for field_id in form.aliases:
        if field_id not in ids:
            problems.append(f"{key}.aliases.{field_id}: the form has no field with id {field_id!r} "
                            f"(its ids: {', '.join(ids)}); fix: key the old labels by the field's id")
    return problems


def plain_secret(value: SecretStr | str | None) -> str | None:
    """A secret setting's plain value, for the one place that must compare or send it."""
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else value
