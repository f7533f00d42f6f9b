"""Allowlist commands: gateway credentials, signing keys, the signed export.

    beekeeper gateways add NAME            beekeeper signing-keys generate
    beekeeper gateways list [--json]       beekeeper signing-keys rotate
    beekeeper gateways revoke NAME         beekeeper signing-keys list [--json]
                                           beekeeper signing-keys prepare
    beekeeper allowlist export FILE        beekeeper allowlist new-epoch
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from bot.cli import pass_state
from bot.core.clock import isoformat
from bot.core.db import session_scope


def _actor() -> str:
    from bot.cli.requests import os_user

    return f"cli:{os_user()}"[:64]


def register(main: click.Group) -> None:
    @main.group()
    def gateways() -> None:
        """Credentials of the API gateways that pull the allowlist."""

    @gateways.command("add")
    @click.argument("name")
    @pass_state
    def gateways_add(state, name: str) -> None:
        """Register a gateway and print its credential (shown this once; only its hash is kept)."""
        from bot.allowlist import gateways as service

        runtime = state.runtime
        try:
            with session_scope(runtime.engine) as session:
                gateway, credential = service.add(session, name, runtime.policy.keys.prefix, _actor())
                gateway_name = gateway.name
        except service.GatewayError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"gateway {gateway_name} added. Its credential (shown once, store it in the gateway's secrets):",
                   err=True)
        click.echo(credential)
        click.echo("Send it as `Authorization: Bearer <credential>` to GET /v1/allowlist.", err=True)

    @gateways.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
    @pass_state
    def gateways_list(state, as_json: bool) -> None:
        """Gateways with their last pull, the version they hold and their pull count."""
        from bot.allowlist import gateways as service
        from bot.allowlist.versioning import current_version

        with session_scope(state.runtime.engine) as session:
            rows = service.list_gateways(session)
            version = current_version(session)
        if not rows and not as_json:
            click.echo("no gateway registered (beekeeper gateways add NAME)")
        for g in rows:
            record = {"name": g.name, "credential": g.display, "created_at": isoformat(g.created_at),
                      "revoked_at": isoformat(g.revoked_at), "last_pull_at": isoformat(g.last_pull_at),
                      "last_version": g.last_version, "pull_count": g.pull_count, "current_version": version}
            if as_json:
                click.echo(json.dumps(record))
                continue
            status = f"revoked {record['revoked_at']}" if g.revoked_at else "active"
            held = "never pulled" if g.last_pull_at is None else (
                f"last pull {record['last_pull_at']}, holds v{g.last_version} of v{version}")
            click.echo(f"{g.name:<24} {g.display:<18} {status:<28} {held}, {g.pull_count} pulls")

    @gateways.command("revoke")
    @click.argument("name")
    @pass_state
    def gateways_revoke(state, name: str) -> None:
        """Revoke a gateway's credential: its next pull answers 401."""
        from bot.allowlist import gateways as service

        try:
            with session_scope(state.runtime.engine) as session:
                gateway = service.revoke(session, name, _actor())
                gateway_name = gateway.name
        except service.GatewayError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"gateway {gateway_name} revoked")

    @main.group("signing-keys")
    def signing_keys() -> None:
        """Ed25519 keys that sign the allowlist (public halves at /.well-known/jwks.json)."""

    @signing_keys.command("generate")
    @pass_state
    def signing_keys_generate(state) -> None:
        """Create the signing key if there is none (the bot also does this on first need)."""
        from bot.allowlist import signing

        with session_scope(state.runtime.engine) as session:
            key, created = signing.generate(session, _actor())
            kid = key.kid
        click.echo(f"signing key {kid} {'created' if created else 'already active (rotate to replace it)'}")

    @signing_keys.command("prepare")
    @pass_state
    def signing_keys_prepare(state) -> None:
        """Make the next signing key now (published, not signing) so gateways can pin its
        thumbprint before `rotate` makes it the signer."""
        from bot.allowlist import signing

        with session_scope(state.runtime.engine) as session:
            key, created = signing.prepare(session, _actor())
            thumb = signing.thumbprint(key.public_jwk)
        click.echo(f"next signing key: thumbprint {thumb} ({'prepared now' if created else 'already prepared'}). "
                   "Pin it on every gateway (trusted_keys), then run `beekeeper signing-keys rotate`.")

    @signing_keys.command("rotate")
    @pass_state
    def signing_keys_rotate(state) -> None:
        """Sign with the prepared key (else a new one) from now on; the old one stays published
        for the grace period."""
        from bot.allowlist import signing

        runtime = state.runtime
        with session_scope(runtime.engine) as session:
            new, retired = signing.rotate(session, _actor())
            kid, old = new.kid, [k.kid for k in retired]
        grace = runtime.policy.allowlist.signing_key_grace_hours
        click.echo(f"signing key {kid} is now the signer")
        for retired_kid in old:
            click.echo(f"retired {retired_kid}: stays in the JWKS for {grace:g} hours")

    @signing_keys.command("list")
    @click.option("--json", "as_json", is_flag=True,
                  help="One JSON object per line: each key's public JWK and thumbprint.")
    @pass_state
    def signing_keys_list(state, as_json: bool) -> None:
        """Every signing key with its RFC 7638 thumbprint (what a gateway pins with
        `AllowlistClient(trusted_keys=[…])`): active, published during its grace, or retired."""
        from sqlmodel import select

        from bot.allowlist import signing
        from bot.core.models import SigningKey

        runtime = state.runtime
        with session_scope(runtime.engine) as session:
            published = {k.kid for k in signing.published_keys(session, runtime.policy)}
            rows = session.exec(select(SigningKey).order_by(SigningKey.id.desc())).all()
            # The thumbprint is recomputed from the public key, never copied from the stored kid.
            lines = [{"thumbprint": signing.thumbprint(k.public_jwk), "kid": k.kid, "active": k.active,
                      "prepared": signing.is_prepared(k),
                      "published": k.kid in published, "created_at": isoformat(k.created_at),
                      "retired_at": isoformat(k.retired_at),
                      "jwk": {f: v for f, v in k.public_jwk.items() if f in ("kty", "crv", "x", "kid", "use", "alg")}}
                     for k in rows]
        if as_json:
            for line in lines:  # JSON lines, as every listing command's --json
                click.echo(json.dumps(line))
            return
        if not lines:
            click.echo("no signing key yet (beekeeper signing-keys generate)")
        for line in lines:
            if line["active"]:
                status = "active signer"
            elif line["prepared"]:
                status = "prepared: next signer, published, not signing yet"
            else:
                status = f"retired {line['retired_at']}, " + ("still published" if line["published"]
                                                              else "no longer published")
            kid = "" if line["kid"] == line["thumbprint"] else f"  kid {line['kid']}"
            click.echo(f"thumbprint {line['thumbprint']}  created {line['created_at']}  {status}{kid}")

    @main.group()
    def allowlist() -> None:
        """The allowlist document."""

    @allowlist.command("export")
    @click.argument("file", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
    @pass_state
    def allowlist_export(state, file: str) -> None:
        """Write the signed full allowlist (compact JWS) to FILE, for a CDN or object storage.

        It expires after policy.allowlist.ttl_seconds: export again at least every half TTL."""
        from bot.allowlist import serving as service

        runtime = state.runtime
        with session_scope(runtime.engine) as session:
            stamp, token = service.export_signed(session, runtime.policy)
        if file == "-":
            click.echo(token.decode())
        else:
            _write_atomically(Path(file), token)
        click.echo(f"allowlist version {stamp.version} written ({len(token)} bytes) to {file}", err=True)


    @allowlist.command("new-epoch")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @pass_state
    def allowlist_new_epoch(state, yes: bool) -> None:
        """Start a new allowlist epoch: run it after restoring a database backup.

        A gateway refuses a document whose version is lower than the highest it has seen. After
        a restore the version really went down; in a new epoch gateways accept the lower version
        (from a document signed by a key they trust) instead of refusing it until it catches up."""
        from bot.allowlist import serving as service
        from bot.allowlist import versioning

        runtime = state.runtime
        if not yes:
            click.confirm("Start a new allowlist epoch (only after restoring a backup)?", abort=True)
        with session_scope(runtime.engine) as session:
            old, new = service.new_epoch(session, _actor())
            version = versioning.current_version(session)
        click.echo(f"allowlist epoch {new} (was {old}); version {version}. Gateways accept it at their next poll.")


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers (a sync job to object storage) never see half a document."""
    path = path.absolute()
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
