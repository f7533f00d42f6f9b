"""Settings from the environment (and .env), the policy file, and the app manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bot import create_app
from bot.cli import main
from bot.core.config import ConfigError, Settings, load_policy, load_settings, normalize_database_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No BEEKEEPER_* variable from the outside, and a working directory without a .env."""
    import os

    for name in list(os.environ):
        if name.startswith("BEEKEEPER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_setting_is_read(private_key_pem, tmp_path):
    env = {
        "BEEKEEPER_DATABASE_URL": "postgresql://bee:pw@db.internal:5432/beekeeper",
        "BEEKEEPER_GITHUB_API_URL": "https://ghe.example.test/api/v3/",
        "BEEKEEPER_GITHUB_URL": "https://ghe.example.test",
        "BEEKEEPER_GITHUB_APP_ID": "123456",
        "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
        "BEEKEEPER_WEBHOOK_SECRET": "whsec",
        "BEEKEEPER_GITHUB_CLIENT_ID": "Iv1.abc",
        "BEEKEEPER_GITHUB_CLIENT_SECRET": "client-secret",
        "BEEKEEPER_PUBLIC_URL": "https://bees.example.test/",
        "BEEKEEPER_SECRET_KEY": "cookie-key",
        "BEEKEEPER_POLICY": str(tmp_path / "policy.yml"),
        "BEEKEEPER_MAX_WEBHOOK_BYTES": "2048",
        "BEEKEEPER_WORKER_MAX_ATTEMPTS": "5",
        "BEEKEEPER_WORKER_LEASE_SECONDS": "120",
        "BEEKEEPER_WORKER_POLL_SECONDS": "0.5",
        "BEEKEEPER_INSTANCE_PATH": str(tmp_path / "inst"),
        "BEEKEEPER_LOG_LEVEL": "debug",
    }
    settings = load_settings(env)
    assert settings == Settings(
        database_url="postgresql+psycopg://bee:pw@db.internal:5432/beekeeper",
        github_api_url="https://ghe.example.test/api/v3",
        github_url="https://ghe.example.test",
        github_app_id="123456",
        github_private_key=private_key_pem.strip() + "\n",
        webhook_secret="whsec",
        github_client_id="Iv1.abc",
        github_client_secret="client-secret",
        public_url="https://bees.example.test",
        secret_key="cookie-key",
        policy_path=str(tmp_path / "policy.yml"),
        max_webhook_bytes=2048,
        worker_max_attempts=5,
        worker_lease_seconds=120,
        worker_poll_seconds=0.5,
        instance_path=str(tmp_path / "inst"),
        log_level="DEBUG",
    )
    assert settings.github_app_configured and settings.oauth_configured
    assert settings.missing_github_settings() == []


def test_defaults_with_nothing_set(clean_env):
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{clean_env / 'instance' / 'beekeeper.sqlite3'}"
    assert settings.github_api_url == "https://api.github.com"
    assert settings.github_url == "https://github.com"
    assert settings.public_url == "http://localhost:8000"
    assert (settings.max_webhook_bytes, settings.worker_max_attempts, settings.worker_lease_seconds) == (
        5 * 1024 * 1024, 8, 30)  # lease: 30 s, renewed by a heartbeat (issue 15)
    assert settings.worker_poll_seconds == 1.0 and settings.log_level == "INFO"
    assert settings.secret_key and settings.secret_key_generated
    assert not settings.github_app_configured
    assert settings.missing_github_settings() == [
        "BEEKEEPER_GITHUB_APP_ID", "BEEKEEPER_GITHUB_PRIVATE_KEY (or BEEKEEPER_GITHUB_PRIVATE_KEY_PATH)",
        "BEEKEEPER_WEBHOOK_SECRET"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("BEEKEEPER_DATABASE_URL", "mysql://root:hunter2@db/bk", "must be a sqlite:/// or postgresql:// URL"),
    ("BEEKEEPER_GITHUB_API_URL", "api.github.com", "must be an http(s) URL"),
    ("BEEKEEPER_GITHUB_URL", "ftp://github.com", "must be an http(s) URL"),
    ("BEEKEEPER_PUBLIC_URL", "bees.example.test", "must be an http(s) URL"),
    ("BEEKEEPER_GITHUB_APP_ID", "beekeeper", "must be the numeric app id"),
    ("BEEKEEPER_GITHUB_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----",
     "is not a PEM private key"),
    ("BEEKEEPER_MAX_WEBHOOK_BYTES", "5MB", "must be an integer"),
    ("BEEKEEPER_MAX_WEBHOOK_BYTES", "10", "must be at least 1024"),
    ("BEEKEEPER_WORKER_MAX_ATTEMPTS", "0", "must be at least 1"),
    ("BEEKEEPER_WORKER_LEASE_SECONDS", "soon", "must be an integer"),
    ("BEEKEEPER_WORKER_POLL_SECONDS", "fast", "must be a number of seconds"),
    ("BEEKEEPER_WORKER_POLL_SECONDS", "nan", "must be at least"),
    ("BEEKEEPER_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
])
def test_malformed_settings_are_reported_by_name(name, value, message):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert str(caught.value).startswith(name)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)  # a database password is never echoed


def test_private_key_from_a_file_and_from_one_line(private_key_pem, tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(private_key_pem)
    from_file = load_settings({"BEEKEEPER_GITHUB_PRIVATE_KEY_PATH": str(key_file)}).github_private_key
    assert from_file.get_secret_value().startswith("-----BEGIN PRIVATE KEY-----\n")
    one_line = private_key_pem.strip().replace("\n", "\\n")  # how some platforms store multi-line values
    loaded = load_settings({"BEEKEEPER_GITHUB_PRIVATE_KEY": one_line}).github_private_key.get_secret_value()
    assert loaded == private_key_pem.strip() + "\n"


def test_private_key_file_problems_name_the_path_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"^BEEKEEPER_GITHUB_PRIVATE_KEY_PATH: cannot read"):
        load_settings({"BEEKEEPER_GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match=r"^BEEKEEPER_GITHUB_PRIVATE_KEY_PATH is not a PEM private key"):
        load_settings({"BEEKEEPER_GITHUB_PRIVATE_KEY_PATH": str(garbage)})


def test_dotenv_file_in_the_working_directory_is_read(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "BEEKEEPER_WEBHOOK_SECRET=from-dotenv\n"
        "BEEKEEPER_GITHUB_APP_ID=777\n"
        "# a comment\n"
        "BEEKEEPER_PUBLIC_URL='https://dotenv.example.test'\n"
    )
    monkeypatch.setenv("BEEKEEPER_GITHUB_APP_ID", "888")  # the real environment wins over .env
    settings = load_settings()
    assert settings.webhook_secret.get_secret_value() == "from-dotenv"
    assert settings.public_url == "https://dotenv.example.test"
    assert settings.github_app_id == "888"


def test_malformed_setting_in_dotenv_is_reported_by_name(clean_env):
    (clean_env / ".env").write_text("BEEKEEPER_WORKER_LEASE_SECONDS=five minutes\n")
    with pytest.raises(ConfigError, match="^BEEKEEPER_WORKER_LEASE_SECONDS"):
        load_settings()


def test_database_url_spellings():
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


# ---------------------------------------------------------------------------------------------
# reported at start-up, not in the middle of a request
# ---------------------------------------------------------------------------------------------


def test_create_app_refuses_to_start_and_logs_the_setting(caplog):
    caplog.set_level(logging.ERROR)
    with pytest.raises(ConfigError, match="BEEKEEPER_GITHUB_APP_ID"):
        create_app(env={"BEEKEEPER_GITHUB_APP_ID": "my-app"})
    assert "BEEKEEPER_GITHUB_APP_ID" in caplog.text


def test_cli_reports_a_bad_setting_without_a_traceback(clean_env):
    result = CliRunner().invoke(main, ["db", "current"], env={"BEEKEEPER_WORKER_MAX_ATTEMPTS": "many"})
    assert result.exit_code == 1
    assert "BEEKEEPER_WORKER_MAX_ATTEMPTS must be an integer" in result.output
    assert "Traceback" not in result.output


def test_cli_help_needs_no_configuration(clean_env):
    result = CliRunner().invoke(main, ["--help"], env={"BEEKEEPER_GITHUB_APP_ID": "broken"})
    assert result.exit_code == 0
    for command in ("serve", "worker", "db", "deliveries", "redeliver"):
        assert command in result.output


# ---------------------------------------------------------------------------------------------
# policy file
# ---------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_policy_loads():
    policy = load_policy()
    assert policy.tier_names[0] == policy.default_tier.name


@pytest.mark.parametrize(("text", "key"), [
    ("tiers:\n  - {name: seed, rank: -1, requests_per_minute: 1, concurrency: 1}\n", "tiers.0.rank"),
    ("tiers:\n  - {name: Seed!, rank: 1, requests_per_minute: 1, concurrency: 1}\n", "tiers.0.name"),
    ("tiers:\n  - {name: seed, rank: 1, requests_per_minute: 1}\n", "tiers.0.concurrency"),
    ("labels:\n  colour: red\n", "labels.colour"),
    ("maintainers:\n  teams: [just-a-team]\n", "maintainers.teams"),
    ("keys:\n  prefix: NO\n", "keys.prefix"),
    ("allowlist:\n  ttl_seconds: 5\n", "allowlist.ttl_seconds"),
    ("max_requestable_tier: platinum\n", "max_requestable_tier"),
])
def test_invalid_policy_names_the_exact_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as caught:
        load_policy(write(tmp_path / "policy.yml", text))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"invalid policy {tmp_path / 'policy.yml'}:"
    assert any(line.strip().startswith(f"{key}:") for line in lines[1:]), lines


def test_policy_file_problems_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="^BEEKEEPER_POLICY: cannot read"):
        load_policy(tmp_path / "absent.yml")
    with pytest.raises(ConfigError, match="^BEEKEEPER_POLICY: .* is not valid YAML"):
        load_policy(write(tmp_path / "bad.yml", "tiers: [unclosed\n"))
    with pytest.raises(ConfigError, match="^BEEKEEPER_POLICY: .* must hold a mapping"):
        load_policy(write(tmp_path / "list.yml", "- a\n- b\n"))


def test_policy_overrides_merge_over_the_defaults(tmp_path):
    policy = load_policy(write(tmp_path / "p.yml", "labels:\n  approved: granted\n"))
    assert policy.labels.approved == "granted"
    assert policy.labels.rejected == load_policy().labels.rejected


def test_runtime_refuses_a_bad_policy_at_start(tmp_path, database_url):
    from bot.intake.runtime import Runtime

    bad = write(tmp_path / "p.yml", "labels:\n  colour: red\n")
    with pytest.raises(ConfigError, match="labels.colour"):
        Runtime.from_env({"BEEKEEPER_DATABASE_URL": database_url, "BEEKEEPER_POLICY": str(bad)})


# ---------------------------------------------------------------------------------------------
# the GitHub App manifest
# ---------------------------------------------------------------------------------------------


def test_app_manifest_asks_only_for_what_the_bot_uses():
    manifest = yaml.safe_load((ROOT / "app.yml").read_text())
    assert manifest["public"] is False
    assert manifest["default_permissions"] == {"issues": "write", "metadata": "read", "members": "read",
                                               "contents": "read"}
    assert manifest["default_events"] == ["issues", "issue_comment"]  # GitHub refuses `installation` here
    assert manifest["hook_attributes"]["url"].endswith("/webhook")
    assert manifest["redirect_url"] and manifest["callback_urls"]
    assert manifest["name"] and manifest["url"].startswith("https://")


def test_no_secret_appears_in_the_settings_repr(private_key_pem):
    settings = load_settings({"BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem, "BEEKEEPER_GITHUB_APP_ID": "1",
                              "BEEKEEPER_WEBHOOK_SECRET": "hook-secret-value", "BEEKEEPER_SECRET_KEY": "session-key",
                              "BEEKEEPER_GITHUB_CLIENT_SECRET": "client-secret-value"})
    text = repr(settings) + str(settings)
    for secret in ("hook-secret-value", "session-key", "client-secret-value", private_key_pem.splitlines()[1]):
        assert secret not in text
    assert settings.webhook_secret.get_secret_value() == "hook-secret-value"


def test_log_format_is_text_or_json():
    assert load_settings({}).log_format == "text"
    assert load_settings({"BEEKEEPER_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="^BEEKEEPER_LOG_FORMAT must be one of text, json"):
        load_settings({"BEEKEEPER_LOG_FORMAT": "xml"})


def test_env_example_lists_every_setting_and_loads():
    """.env.example names every variable EnvSettings reads, and copied as-is it is a valid .env."""
    from pathlib import Path

    from dotenv import dotenv_values

    from bot.core.config import ENV_PREFIX, EnvSettings

    example = dotenv_values(Path(__file__).resolve().parents[2] / ".env.example")
    assert set(example) == {ENV_PREFIX + name for name in EnvSettings.model_fields}
    load_settings({k: v or "" for k, v in example.items()})
