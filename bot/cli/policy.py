"""`beekeeper policy check`: an operator's dry run of the policy and its request form(s).

    beekeeper policy check [--policy FILE] [--form FILE] [--form-name NAME] [--body FILE] [--title TEXT]

Loads the policy (the file given, else BEEKEEPER_POLICY, else the defaults) with each request
form, prints every role → field and what is missing, and with `--body` parses a sample issue
body (as GitHub renders it) and prints the fields and the checks' verdicts. Nothing is written
and GitHub is not asked (a GitHub username in the contact is checked for its syntax only).
Exit status 1 when the policy is refused or a form has a problem that doctor would FAIL.
"""

from __future__ import annotations

from pathlib import Path

import click

from bot.core.config import FORM_ROLES, ConfigError, form_key, load_policy, load_settings

MARKS = {"ok": "  ok ", "warn": "WARN ", "fail": "FAIL ", "skip": "skip "}
ICONS = {"ok": "✅", "error": "❌", "warning": "⚠️"}


def _short(value, limit: int = 70) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_for(spec, form_file: str | None):
    """(schema, where it came from): --form, the policy's template_file, a local copy at the
    template path, else the bundled form."""
    from bot.rules.forms import FormTemplateError, bundled_schema, parse_form_template

    for path, what in ((form_file, "--form"), (spec.template_file, "template_file"),
                       (spec.template_path, "template_path (local copy)")):
        if not path:
            continue
        file = Path(path)
        if what != "--form" and not file.is_file():
            continue
        try:
            return parse_form_template(file.read_text(encoding="utf-8"), source=str(file)), f"{file} ({what})"
        except OSError as exc:
            raise click.ClickException(f"{what}: cannot read {path}: {exc.strerror}") from None
        except FormTemplateError as exc:
            raise click.ClickException(f"{what}: {path} is not a GitHub issue form: {exc}") from None
    return bundled_schema(), "Beekeeper's bundled form (no local copy of the template; pass --form FILE)"


def _print_form(policy, spec, schema, where: str) -> bool:
    from bot.ops.doctor import FAIL, form_findings

    click.echo(f"form {form_key(spec)!r}: {schema.display_name} — kind {spec.kind}, trigger label(s) "
               f"{', '.join(spec.labels)}" + (f", title prefix {spec.title_prefix!r}" if spec.title_prefix else ""))
    click.echo(f"  template: {where}")
    click.echo("  tier: " + (f"fixed: {spec.fixed_tier}" if spec.fixed_tier else "from the form's tier field"))
    click.echo(f"  contact kinds: {', '.join(spec.contact_kinds)}")
    roles = spec.role_map
    for role in FORM_ROLES:
        if role not in roles:
            continue
        field_ = schema.field(roles[role])
        need = " (required)" if role in spec.required_roles else ""
        if field_ is None:
            click.echo(f"  {role:<19} → {roles[role]}: MISSING from the form{need}")
        else:
            aliases = spec.aliases.get(field_.id) or []
            also = f" (also: {', '.join(repr(a) for a in aliases)})" if aliases else ""
            click.echo(f"  {role:<19} → {field_.id} {field_.label!r}{need}{also}")
    unused = [r for r in FORM_ROLES if r not in roles]
    if unused:
        click.echo(f"  not in this form (never checked): {', '.join(unused)}")
    mapped = set(roles.values())
    others = [f.id for f in schema.fields if f.id not in mapped]
    if others:
        click.echo(f"  fields no role uses (kept, not checked): {', '.join(others)}")
    failed = False
    for status, message, fix in form_findings(policy, spec, schema, "the form"):
        click.echo(f"{MARKS[status]} {message}")
        if fix and status != "ok":
            click.echo(f"        fix: {fix}")
        failed = failed or status == FAIL
    return not failed


def _print_body(policy, spec, schema, body: str, title: str | None) -> None:
    from sqlmodel import Session, SQLModel, create_engine

    import bot.core.models  # noqa: F401 - the tables the checks query
    from bot.rules.checks import run_checks
    from bot.rules.forms import parse_issue_body

    labelled = title is None or (spec.title_prefix and title.lower().startswith(spec.title_prefix.lower()))
    parsed = parse_issue_body(body, schema, policy, spec=spec, labelled=bool(labelled))
    click.echo("")
    click.echo(f"body ({'labelled' if labelled else 'no trigger label'}): "
               + ("made from the form" if parsed.from_form else "NOT made from the form"))
    for field_ in schema.fields:
        if field_.id in parsed.fields:
            click.echo(f"  {field_.label!r} [{field_.id}]: {_short(parsed.fields[field_.id]) or '(empty)'}")
        else:
            click.echo(f"  {field_.label!r} [{field_.id}]: (no heading in the body)")
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        report = run_checks(session, parsed, policy, schema=schema, applicant_id=1, spec=spec)
    click.echo("")
    for result in report.results:
        click.echo(f"  {ICONS.get(result.status, '•')} {result.name}: {result.message}"
                   + (" (details)" if result.info else ""))
        if result.hint and result.status != "ok":
            click.echo(f"      ↳ {result.hint}")
    errors = sum(r.status == "error" for r in report.results)
    verdict = "validated" if report.ok else f"needs info ({errors} ❌)"
    click.echo(f"verdict: {verdict}" + (", a maintainer looks first (⚠️)" if report.ok and report.needs_maintainer
                                        else "") + (f"; tier {report.normalized.get('tier')}"
                                                    if report.normalized.get("tier") else ""))


def register(main: click.Group) -> None:
    @main.group()
    def policy() -> None:
        """The policy file and its request forms."""

    @policy.command("check")
    @click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None,
                  help="The policy file (default: BEEKEEPER_POLICY, else the bundled defaults).")
    @click.option("--form", "form_file", type=click.Path(dir_okay=False), default=None,
                  help="A local copy of the issue form's YAML (default: the form's template_file).")
    @click.option("--form-name", default=None, help="Check only this form of `forms:` (its name).")
    @click.option("--body", "body_file", type=click.Path(dir_okay=False), default=None,
                  help="A sample issue body to parse and check.")
    @click.option("--title", default=None, help="The sample issue's title (default: treated as labelled).")
    def check(policy_file, form_file, form_name, body_file, title) -> None:
        """Dry run: roles → fields, what is missing, and (--body) a sample request's verdicts."""
        try:
            path = policy_file or load_settings().policy_path
            loaded = load_policy(path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"policy: {path or 'bundled defaults'}")
        forms = loaded.request_forms
        if form_name:
            forms = [f for f in forms if form_key(f) == form_name]
            if not forms:
                names = ", ".join(form_key(f) for f in loaded.request_forms)
                raise click.ClickException(f"--form-name: no form {form_name!r} (forms: {names})")
        body = None
        if body_file:
            try:
                body = Path(body_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"--body: cannot read {body_file}: {exc}") from None
        healthy = True
        for spec in forms:
            schema, where = _schema_for(spec, form_file if (len(forms) == 1 or form_name) else None)
            click.echo("")
            healthy = _print_form(loaded, spec, schema, where) and healthy
            if body is not None:
                _print_body(loaded, spec, schema, body, title)
        if not healthy:
            raise SystemExit(1)
