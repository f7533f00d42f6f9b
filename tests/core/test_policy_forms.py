"""Request forms in the policy (issue 12): `forms:` and the single `form:` key, refusals at
start-up with the key's path and a fix, `beekeeper policy check`, and doctor's form findings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bot.cli import main
from bot.core.config import ConfigError, load_policy
from bot.ops import doctor
from tests.conftest import INSTALLATION_ID, REPO

FORMS = Path(__file__).parent.parent / "fixtures" / "forms"
FLOWER = yaml.safe_load((FORMS / "flower-policy.yml").read_text())


def write_policy(tmp_path: Path, data: dict) -> Path:
    shutil.copy(FORMS / "flower-access.yml", tmp_path / "flower-access.yml")
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def flower(**changes) -> dict:
    form = {**FLOWER["forms"][0], **changes}
    return {"forms": [form]}


BAD = [
    ("a role mapped to a missing id", flower(roles={**FLOWER["forms"][0]["roles"], "contact": "email"}),
     "forms.0.roles.contact: the form has no field with id 'email' (its ids: project-name, about, domain-referrer, "
     "contact, website, rules); fix: map contact to one of those ids, or set it to null to drop it"),
    ("an unknown contact kind", flower(contact_kinds=["discord", "telegram"]),
     "forms.0.contact_kinds: unknown contact kind(s) ['telegram']; fix: use some of "
     "['email', 'github', 'discord', 'url', 'any']"),
    ("a fixed tier that is not a tier", flower(fixed_tier="gold"),
     "forms.0.fixed_tier: 'gold' is not a tier; fix: use one of ['seed', 'flower', 'nectar']"),
    ("two forms with one trigger label", {"forms": [FLOWER["forms"][0], {**FLOWER["forms"][0], "name": "nectar"}]},
     "forms.1.labels: the trigger label 'flower-request' is also used by forms.0; fix: give each form its own "
     "trigger label"),
    ("a required role mapped to nothing", flower(required_roles=["app_name", "repository"]),
     "forms.0.required_roles: 'repository' is required but forms.0.roles maps it to no field; fix: add "
     "`repository: <field id>` under forms.0.roles or remove it from required_roles"),
    ("a form without a tier field that requires a tier", flower(fixed_tier=None, required_roles=["tier"]),
     "forms.0.required_roles: 'tier' is required but forms.0.roles maps it to no field"),
    ("an alias for a field the form lacks", flower(aliases={"domains": ["Domains"]}),
     "forms.0.aliases.domains: the form has no field with id 'domains'"),
]


@pytest.mark.parametrize(("what", "data", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_form_policies_are_refused_with_the_key_and_a_fix(tmp_path, what, data, message):
    path = write_policy(tmp_path, data)
    with pytest.raises(ConfigError) as refused:
        load_policy(path)
    assert message in str(refused.value)
    # The same at the command line: the message, exit status 1, no traceback.
    result = CliRunner().invoke(main, ["policy", "check", "--policy", str(path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_the_single_form_key_keeps_working_and_null_drops_a_role(tmp_path):
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump({"form": {"roles": {"contact": "email", "traffic": None},
                                             "fixed_tier": "flower",
                                             "required_roles": ["app_name", "contact"]}}))
    policy = load_policy(path)
    [form] = policy.request_forms
    assert form.role_map["contact"] == "email" and "traffic" not in form.role_map
    assert form.role_map["app_name"] == "app-name"  # merged with the defaults
    assert form.labels == ["special-access"] and policy.trigger_labels == ["special-access"]


def test_the_bundled_policy_has_one_form_with_the_old_defaults():
    policy = load_policy()
    [form] = policy.request_forms
    assert form.template_path == ".github/ISSUE_TEMPLATE/special-access.yml" and form.fixed_tier is None
    assert form.required_roles == ["app_name", "description", "contact", "tier", "terms"]
    assert form.contact_kinds == ["email"] and "domain_or_referrer" not in form.role_map


# ---- beekeeper policy check ---------------------------------------------------------------------


def test_policy_check_prints_roles_fields_and_a_sample_verdict():
    result = CliRunner().invoke(main, ["policy", "check", "--policy", str(FORMS / "flower-policy.yml"),
                                       "--body", str(FORMS / "bodies" / "old-labels.md")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "form 'flower': Flower tier request — kind new, trigger label(s) flower-request" in out
    assert "tier: fixed: flower" in out
    assert ("domain_or_referrer  → domain-referrer 'Domain/Referrer for Flower Tier' (required) "
            "(also: 'Domain/Referrer to Approve')") in out
    assert "not in this form (never checked): domains, referrer, tier, traffic, repository" in out
    assert "'What does your project do?' [about]: ImgGen turns prompts" in out
    assert "✅ contact: valid e-mail address" in out and "verdict: validated; tier flower" in out


def test_policy_check_with_an_incomplete_body_lists_its_errors():
    result = CliRunner().invoke(main, ["policy", "check", "--policy", str(FORMS / "flower-policy.yml"),
                                       "--body", str(FORMS / "bodies" / "empty-answers.md")])
    assert result.exit_code == 0, result.output
    assert "❌ contact: no contact given" in result.output and "verdict: needs info (4 ❌)" in result.output


def test_policy_check_fails_a_form_that_lacks_a_required_field(tmp_path):
    form = (FORMS / "flower-access.yml").read_text().replace("id: contact", "id: reach-us")
    (tmp_path / "form.yml").write_text(form)
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump(flower(template_file=None)))
    result = CliRunner().invoke(main, ["policy", "check", "--policy", str(policy), "--form",
                                       str(tmp_path / "form.yml")])
    assert result.exit_code == 1
    assert "contact             → contact: MISSING from the form (required)" in result.output
    assert "FAIL  the form lacks fields the policy requires: contact (id: contact)" in result.output


def test_policy_check_of_the_bundled_policy_passes(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["policy", "check"], env={"BEEKEEPER_POLICY": ""})
    assert result.exit_code == 0, result.output
    assert "tier                → tier 'Requested tier' (required)" in result.output


# ---- doctor ---------------------------------------------------------------------------------------


def test_doctor_fails_a_form_without_tier_field_or_fixed_tier(runtime, fake_github):
    fake_github.files[(REPO, ".github/ISSUE_TEMPLATE/flower.yml")] = (FORMS / "flower-access.yml").read_text()
    gh = runtime.github.for_installation(INSTALLATION_ID)
    policy = load_policy(FORMS / "flower-policy.yml")
    runtime.policy = policy
    report = doctor.Report()
    doctor.check_form(report, runtime, REPO, gh)
    assert report.ok, report.findings
    assert any("every request asks for flower" in f.message for f in report.findings)

    form = policy.forms[0].model_copy(update={"fixed_tier": None})
    runtime.policy = policy.model_copy(update={"forms": [form]})
    report = doctor.Report()
    doctor.check_form(report, runtime, REPO, gh)
    [fail] = [f for f in report.findings if f.status == doctor.FAIL]
    assert "has no tier field and the policy names no fixed tier" in fail.message
    assert "forms[flower].fixed_tier" in fail.fix
