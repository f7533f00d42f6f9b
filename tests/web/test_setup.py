"""First run: the setup page registers the GitHub App from app.yml and writes its credentials."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import stat
from urllib.parse import parse_qs, urlparse

import pytest
from dotenv import dotenv_values

from bot import create_app
from bot.core.config import load_settings
from bot.intake.runtime import Runtime
from bot.web import setup
from tests.fakegithub import WEB

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}


@pytest.fixture
def unconfigured(db, settings, policy, github, tmp_path):
    """An app with no GitHub App credentials: what `beekeeper serve` runs on first start."""
    bare = dataclasses.replace(settings, github_app_id=None, github_private_key=None, webhook_secret=None,
                               github_client_id=None, github_client_secret=None, secret_key_generated=True,
                               public_url="https://bees.example.org")
    flask_app = create_app(Runtime(settings=bare, policy=policy, engine=db, github=github))
    flask_app.config.update(TESTING=True, BEEKEEPER_DOTENV_PATH=str(tmp_path / "conf" / ".env"))
    (tmp_path / "conf").mkdir()
    return flask_app


@pytest.fixture
def setup_client(unconfigured):
    return unconfigured.test_client()


@pytest.fixture
def new_app(fake_github, private_key_pem):
    """What GitHub hands over for the one-time code `c0de`."""
    app = {"id": 987654, "slug": "bees-example", "name": "Bees Example", "node_id": "A_1",
           "owner": {"login": "acme"}, "html_url": f"{WEB}/apps/bees-example",
           "client_id": "Iv1.0123456789abcdef", "client_secret": "c" * 40,
           "webhook_secret": "whsec-" + "w" * 30, "pem": private_key_pem}
    fake_github.manifest_codes["c0de"] = app
    return app


def _form(page: str) -> tuple[str, dict]:
    """The action of the register form and the manifest it posts."""
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page)[1])
    manifest = json.loads(html.unescape(re.search(r'name="manifest" value="([^"]+)"', page)[1]))
    return action, manifest


def _state(action: str) -> str:
    return parse_qs(urlparse(action).query)["state"][0]


def test_setup_page_posts_the_manifest_with_this_deployments_urls(setup_client):
    response = setup_client.get("/setup/")
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("no-store")
    action, manifest = _form(response.get_data(as_text=True))
    assert action.startswith(f"{WEB}/settings/apps/new?state=")
    assert manifest["hook_attributes"] == {"url": "https://bees.example.org/webhook", "active": True}
    assert manifest["callback_urls"] == ["https://bees.example.org/auth/callback"]
    assert manifest["setup_url"] == "https://bees.example.org/setup/installed"
    # the browser comes back to the host it is on (localhost during a first run)
    assert manifest["redirect_url"] == "http://localhost/setup/callback"
    assert manifest["default_permissions"] == {"issues": "write", "metadata": "read", "members": "read",
                                               "contents": "read"}
    assert manifest["default_events"] == ["issues", "issue_comment"]


def test_organisation_and_name_change_the_target_and_the_manifest(setup_client):
    page = setup_client.get("/setup/?org=acme-labs&name=Acme+Beekeeper").get_data(as_text=True)
    action, manifest = _form(page)
    assert action.startswith(f"{WEB}/organizations/acme-labs/settings/apps/new?state=")
    assert manifest["name"] == "Acme Beekeeper"
    page = setup_client.get("/setup/?org=../evil").get_data(as_text=True)
    assert "is not an organisation login" in page
    assert _form(page)[0].startswith(f"{WEB}/settings/apps/new?")


def test_remote_visitors_need_the_console_token(setup_client):
    assert setup_client.get("/setup/", environ_base=REMOTE).status_code == 403
    assert setup_client.get("/setup/?token=wrong", environ_base=REMOTE).status_code == 403
    response = setup_client.get(f"/setup/?token={setup.setup_token()}", environ_base=REMOTE)
    assert response.status_code == 200
    # the org form keeps the token so the remote visitor can use it
    assert f'name="token" value="{setup.setup_token()}"' in response.get_data(as_text=True)


def test_a_local_proxy_does_not_make_visitors_local(setup_client):
    response = setup_client.get("/setup/", headers={"X-Forwarded-For": "198.51.100.4"})
    assert response.status_code == 403
    assert setup.is_local_request("::1", {}) and setup.is_local_request("::ffff:127.0.0.1", {})
    assert not setup.is_local_request("10.0.0.1", {}) and not setup.is_local_request(None, {})


def test_setup_is_gone_once_credentials_are_configured(client):
    assert client.get("/setup/").status_code == 404
    assert client.get("/setup/callback?code=x&state=y").status_code == 404
    assert client.get("/setup/installed?installation_id=1&setup_action=install").status_code == 200


def test_callback_exchanges_the_code_and_writes_env_0600(setup_client, unconfigured, new_app, fake_github):
    env_path = unconfigured.config["BEEKEEPER_DOTENV_PATH"]
    with open(env_path, "w") as handle:
        handle.write("BEEKEEPER_DATABASE_URL=sqlite:////srv/bk.sqlite3\nBEEKEEPER_GITHUB_APP_ID=1\n")
    state = _state(_form(setup_client.get("/setup/").get_data(as_text=True))[0])

    response = setup_client.get(f"/setup/callback?code=c0de&state={state}")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'href="{WEB}/apps/bees-example/installations/new"' in page
    for secret in (new_app["client_secret"], new_app["webhook_secret"], "PRIVATE KEY"):
        assert secret not in page
    conversion = [c for c in fake_github.calls if c[0] == "POST" and c[1] == "/app-manifests/c0de/conversions"]
    assert len(conversion) == 1
    assert stat.S_IMODE(__import__("os").stat(env_path).st_mode) == 0o600
    values = dotenv_values(env_path)
    assert values["BEEKEEPER_DATABASE_URL"] == "sqlite:////srv/bk.sqlite3"  # other lines kept
    assert values["BEEKEEPER_SECRET_KEY"]  # none was configured: sessions now survive restarts
    loaded = load_settings({k: v for k, v in values.items() if v is not None})
    assert loaded.github_app_id == "987654"  # the stale value was replaced, not duplicated
    assert loaded.github_private_key.get_secret_value().strip() == new_app["pem"].strip()
    assert loaded.webhook_secret.get_secret_value() == new_app["webhook_secret"]
    client_secret = loaded.github_client_secret.get_secret_value()
    assert (loaded.github_client_id, client_secret) == (new_app["client_id"], new_app["client_secret"])


def test_the_conversion_call_is_unauthenticated(setup_client, new_app, fake_github):
    state = _state(_form(setup_client.get("/setup/").get_data(as_text=True))[0])
    setup_client.get(f"/setup/callback?code=c0de&state={state}")
    assert fake_github.manifest_conversion_auth == [None]


def test_the_console_link_without_a_slash_keeps_the_token(setup_client):
    response = setup_client.get(f"/setup?token={setup.setup_token()}", environ_base=REMOTE, follow_redirects=True)
    assert response.status_code == 200


def test_a_state_works_once_and_a_forged_one_never(setup_client, new_app, fake_github):
    assert setup_client.get("/setup/callback?code=c0de&state=forged").status_code == 400
    assert fake_github.count("POST", r"/app-manifests/") == 0
    state = _state(_form(setup_client.get("/setup/").get_data(as_text=True))[0])
    assert setup_client.get(f"/setup/callback?code=c0de&state={state}").status_code == 200
    again = setup_client.get(f"/setup/callback?code=c0de&state={state}")
    assert "Its credentials are not shown" in again.get_data(as_text=True)
    assert fake_github.count("POST", r"/app-manifests/") == 1
    # the setup page itself no longer offers a second registration in this process
    assert 'name="manifest"' not in setup_client.get("/setup/").get_data(as_text=True)


def test_credentials_are_shown_once_when_env_cannot_be_written(setup_client, unconfigured, new_app, tmp_path):
    unconfigured.config["BEEKEEPER_DOTENV_PATH"] = str(tmp_path / "missing-dir" / ".env")
    state = _state(_form(setup_client.get("/setup/").get_data(as_text=True))[0])
    response = setup_client.get(f"/setup/callback?code=c0de&state={state}")
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("no-store")
    assert new_app["webhook_secret"] in page and new_app["client_secret"] in page
    assert "BEGIN PRIVATE KEY" in page
    assert not (tmp_path / "missing-dir").exists()


def test_github_refusing_the_code_is_explained(setup_client, fake_github):
    state = _state(_form(setup_client.get("/setup/").get_data(as_text=True))[0])
    response = setup_client.get(f"/setup/callback?code=expired&state={state}")
    assert response.status_code == 502
    assert "once only" in response.get_data(as_text=True)


def test_dotenv_line_round_trips_awkward_values(tmp_path):
    path = tmp_path / ".env"
    value = 'multi\nline "quoted" back\\slash $HOME'
    setup.write_env_file(path, {"BEEKEEPER_X": value})
    assert dotenv_values(path)["BEEKEEPER_X"] == value
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_console_announcement_carries_the_token(settings):
    text = setup.announce(dataclasses.replace(settings, public_url="https://bees.example.org"), "127.0.0.1", 8000)
    assert "http://localhost:8000/setup" in text
    assert f"https://bees.example.org/setup?token={setup.setup_token()}" in text


def test_first_page_before_registration_leads_the_operator_to_setup(setup_client):
    local = setup_client.get("/")
    assert local.status_code == 302 and local.headers["Location"].endswith("/setup/")
    remote = setup_client.get("/", environ_base=REMOTE)
    page = remote.get_data(as_text=True)
    assert remote.status_code == 503 and "not set up yet" in page
    assert 'href="/setup/"' in page and "beekeeper serve" in page
    assert "/me" not in page  # no loop through the portal's sign-in


def test_console_names_no_unreachable_address(settings):
    on_loopback = dataclasses.replace(settings, public_url="http://localhost:8000")
    text = setup.announce(on_loopback, "127.0.0.1", 8000)
    assert "another machine" not in text and "token=" not in text
    assert "--host 0.0.0.0" in text and "BEEKEEPER_PUBLIC_URL" in text
    everywhere = setup.announce(on_loopback, "0.0.0.0", 8000)
    assert "localhost:8000/setup?token" not in everywhere  # a real address, or no claim at all
    assert setup.announce(on_loopback, "192.0.2.10", 8000).count("http://192.0.2.10:8000/setup?token=") == 1
