"""First run names the repository Beekeeper was set up for (issue 14, item 4): requests are served
only from repositories the policy names, so the setup page writes that one into a policy file."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlencode

from dotenv import dotenv_values

from bot import create_app
from bot.core.config import load_policy
from bot.intake.runtime import Runtime
from tests.web.test_setup import _form, _state, new_app, setup_client, unconfigured  # noqa: F401 - fixtures


def _register(client, **params) -> str:
    page = client.get("/setup/?" + urlencode(params)).get_data(as_text=True)
    state = _state(_form(page)[0])
    response = client.get(f"/setup/callback?code=c0de&state={state}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_repository_set_up_for_is_named_in_a_policy_file(setup_client, unconfigured, new_app):  # noqa: F811
    page = _register(setup_client, repo="acme/api-access")
    env = dotenv_values(unconfigured.config["BEEKEEPER_DOTENV_PATH"])
    policy = load_policy(env["BEEKEEPER_POLICY"])
    assert policy.repositories == ["acme/api-access"]
    assert "acme/api-access" in page


def test_without_a_repository_nothing_is_written(setup_client, unconfigured, new_app):  # noqa: F811
    _register(setup_client)
    assert "BEEKEEPER_POLICY" not in dotenv_values(unconfigured.config["BEEKEEPER_DOTENV_PATH"])


def test_a_malformed_repository_is_refused(setup_client):  # noqa: F811
    page = setup_client.get("/setup/?repo=" + "acme/../etc").get_data(as_text=True)
    assert "is not a repository" in page
    for bad in ("not-a-repo", "acme/..", "-acme/x"):
        assert "is not a repository" in setup_client.get("/setup/?repo=" + bad).get_data(as_text=True), bad


def test_an_operators_policy_file_is_not_edited(db, settings, policy, github, tmp_path, new_app):  # noqa: F811
    own = tmp_path / "mine.yml"
    own.write_text("repositories: []\n")
    bare = dataclasses.replace(settings, github_app_id=None, github_private_key=None, webhook_secret=None,
                               github_client_id=None, github_client_secret=None, policy_path=str(own))
    flask_app = create_app(Runtime(settings=bare, policy=policy, engine=db, github=github))
    (tmp_path / "conf").mkdir()
    flask_app.config.update(TESTING=True, BEEKEEPER_DOTENV_PATH=str(tmp_path / "conf" / ".env"))
    page = _register(flask_app.test_client(), repo="acme/api-access")
    assert own.read_text() == "repositories: []\n"
    assert "Add `repositories: [acme/api-access]` to your policy file" in page.replace("&#96;", "`")
