"""`beekeeper grants import` / `export` (bot.ops.grants_io): the checks of the issue form row by row,
logins resolved through the (fake) GitHub API, idempotent re-runs, dry runs, and round trips."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from bot.access import grants
from bot.allowlist import versioning
from bot.cli import State, main
from bot.core.models import ApiKey, AuditEvent, Grant, GrantDomain
from tests.conftest import _truncate
from tests.request_helpers import APPLICANT, STRANGER, add_people


@pytest.fixture
def cli(runtime, fake_github):
    add_people(fake_github)
    state = State()
    state._runtime = runtime

    def run(*args: str, code: int = 0):
        result = CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return run


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def all_grants(runtime) -> list[Grant]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(Grant).order_by(Grant.id)).all())


def domains(runtime, app_id: str) -> list[str]:
    with Session(runtime.engine) as s:
        grant = s.exec(select(Grant).where(Grant.app_id == app_id)).one()
        return sorted(s.exec(select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id,
                                                               GrantDomain.active == True)).all())  # noqa: E712


def state_of(runtime) -> tuple:
    """Everything an import may change: the version, the audit trail, grants and domains."""
    with Session(runtime.engine) as s:
        return (versioning.current_version(s), len(s.exec(select(AuditEvent)).all()),
                [(g.app_id, g.tier, g.github_user_id, g.note) for g in s.exec(select(Grant).order_by(Grant.id))],
                sorted((d.grant_id, d.domain, d.active) for d in s.exec(select(GrantDomain))))


GOOD_AND_BAD = """app_id,owner_login,owner_id,tier,domains,referrers,created,note
demo-app,alice-dev,,flower,demo-app.org api.demo-app.org,demo-app,2024-05-01T10:00:00Z,moved from the old KV store
sams-app,,7001,seed,,,2024-06-01,
pages-app,alice-dev,5001,seed,github.io,,,
demo-app,alice-dev,5001,nectar,other.org,,,
ghost-app,nobody-here,,flower,ghost.example.com,,,
"""


def test_import_resolves_logins_and_refuses_bad_rows_by_line(cli, runtime, fake_github, tmp_path):
    path = write(tmp_path, "grants.csv", GOOD_AND_BAD)
    out = cli("grants", "import", path, code=1)

    assert "line 2: created demo-app" in out and "line 3: created sams-app" in out
    assert "line 4: refused pages-app: domain 'github.io': a public suffix" in out
    assert "line 5: refused demo-app: duplicate app id: demo-app is also on line 2" in out
    assert "line 6: refused ghost-app: GitHub has no user nobody-here" in out
    assert "5 rows: 2 created, 0 updated, 0 unchanged, 3 refused" in out
    assert fake_github.count("GET", r"/users/nobody-here$") == 1  # a real 404 from the API

    found = {g.app_id: g for g in all_grants(runtime)}
    assert sorted(found) == ["demo-app", "sams-app"]  # nothing of a refused row
    demo, sams = found["demo-app"], found["sams-app"]
    assert (demo.github_user_id, demo.github_login, demo.tier) == (APPLICANT["id"], "alice-dev", "flower")
    assert (sams.github_user_id, sams.github_login) == (STRANGER["id"], STRANGER["login"])  # id → login
    assert domains(runtime, "demo-app") == ["api.demo-app.org", "demo-app.org"]  # not other.org (line 5)
    assert demo.created_at.year == 2024 and demo.note == "moved from the old KV store"
    assert (demo.source, demo.claimable) == ("import", True)
    with Session(runtime.engine) as s:
        assert s.exec(select(ApiKey)).all() == []  # no keys until the owner claims them
        assert versioning.current_version(s) == 1  # in the allowlist at once: one version for the import
        assert {g.version for g in s.exec(select(Grant))} == {1}


def test_imported_grants_are_in_the_allowlist(cli, runtime, session, client, tmp_path):
    from tests.allowlist_support import add_gateway, bearer

    grants.create_grant(session, None, "seed", "maria", app_id="older", domains=[], source="test",
                        github_user_id=STRANGER["id"], github_login=STRANGER["login"])
    session.commit()
    credential = add_gateway(session, "edge-1")
    before = client.get("/v1/allowlist", headers=bearer(credential)).get_json()["version"]
    cli("grants", "import", write(tmp_path, "g.jsonl", "\n".join(json.dumps(row) for row in (
        {"app_id": "demo-app", "owner_login": "alice-dev", "tier": "flower", "domains": ["demo-app.org"]},
        {"app_id": "sams-app", "owner_id": 7001, "tier": "seed"})) + "\n"))
    document = client.get("/v1/allowlist", headers=bearer(credential)).get_json()
    [entry] = [g for g in document["grants"] if g["app_id"] == "demo-app"]
    assert entry["domains"] == ["demo-app.org"] and entry["referrers"] == ["demo-app"]
    # a gateway polling with ?since= gets every imported grant in the delta of the one new version
    assert document["version"] == before + 1
    delta = client.get(f"/v1/allowlist?since={before}", headers=bearer(credential)).get_json()
    assert sorted(g["app_id"] for g in delta["grants"]) == ["demo-app", "sams-app"]


def test_reimporting_the_same_file_changes_nothing(cli, runtime, tmp_path):
    path = write(tmp_path, "grants.csv", GOOD_AND_BAD)
    cli("grants", "import", path, code=1)
    before = state_of(runtime)
    out = cli("grants", "import", path, code=1)
    assert "line 2: unchanged demo-app" in out and "line 3: unchanged sams-app" in out
    assert "5 rows: 0 created, 0 updated, 2 unchanged, 3 refused" in out
    assert state_of(runtime) == before


def test_dry_run_prints_what_would_change_and_writes_nothing(cli, runtime, tmp_path):
    before = state_of(runtime)
    out = cli("grants", "import", write(tmp_path, "grants.csv", GOOD_AND_BAD), "--dry-run", code=1)
    assert "line 2: created demo-app" in out and "dry run: nothing was written" in out
    assert state_of(runtime) == before


def test_strict_writes_nothing_when_a_row_is_refused(cli, runtime, tmp_path):
    before = state_of(runtime)
    out = cli("grants", "import", write(tmp_path, "grants.csv", GOOD_AND_BAD), "--strict", code=1)
    assert "nothing was written" in out
    assert state_of(runtime) == before


def test_a_row_for_an_existing_grant_updates_it_through_the_upgrade_path(cli, runtime, session, tmp_path):
    grants.create_grant(session, None, "seed", "maria", app_id="demo-app", domains=["demo-app.org"], source="test",
                        github_user_id=APPLICANT["id"], github_login=APPLICANT["login"])
    session.commit()
    version = state_of(runtime)[0]
    out = cli("grants", "import", write(tmp_path, "g.csv", "app_id,owner_id,owner_login,tier,domains\n"
                                        "demo-app,5001,alice-dev,flower,demo-app.org www.demo-app.org\n"))
    assert "line 2: updated demo-app: tier → flower, domains +www.demo-app.org" in out
    [grant] = all_grants(runtime)
    assert grant.tier == "flower" and domains(runtime, "demo-app") == ["demo-app.org", "www.demo-app.org"]
    assert state_of(runtime)[0] == version + 1  # one bump for the tier and the domain


def test_someone_elses_app_id_or_domain_is_refused(cli, runtime, session, tmp_path):
    grants.create_grant(session, None, "seed", "maria", app_id="theirs", domains=["*.their.org"], source="test",
                        github_user_id=STRANGER["id"], github_login=STRANGER["login"])
    session.commit()
    out = cli("grants", "import", write(tmp_path, "g.csv", "app_id,owner_id,owner_login,tier,domains\n"
                                        "theirs,5001,alice-dev,seed,\n"
                                        "mine,5001,alice-dev,seed,api.their.org\n"
                                        "bad-tier,5001,alice-dev,gold,\n"), code=1)
    assert "line 2: refused theirs: app id theirs belongs to grant" in out
    assert "line 3: refused mine: domain api.their.org is covered by *.their.org" in out
    assert "line 4: refused bad-tier: tier 'gold' is not a tier" in out
    assert [g.app_id for g in all_grants(runtime)] == ["theirs"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_is_the_identity(cli, runtime, session, engine, tmp_path, fmt):
    grants.create_grant(session, None, "flower", "maria", app_id="demo-app", domains=["demo-app.org", "*.demo.dev"],
                        source="test", github_user_id=APPLICANT["id"], github_login=APPLICANT["login"])
    other = grants.create_grant(session, None, "seed", "maria", app_id="sams-app", domains=[], source="test",
                                github_user_id=STRANGER["id"], github_login=STRANGER["login"])
    other.note = 'a note, with "quotes"\nand a second line'
    session.commit()
    first = write(tmp_path, f"first.{fmt}", "")
    cli("grants", "export", first)
    exported = open(first).read()
    assert "demo-app" in exported and "sams-app" in exported

    _truncate(engine)
    out = cli("grants", "import", first)
    assert "2 rows: 2 created" in out
    second = write(tmp_path, f"second.{fmt}", "")
    cli("grants", "export", second)
    assert open(second).read() == exported
    # and importing it again over itself changes nothing
    assert "2 rows: 0 created, 0 updated, 2 unchanged" in cli("grants", "import", second)


def test_export_to_standard_output_as_json_lines(cli, session):
    grants.create_grant(session, None, "flower", "maria", app_id="demo-app", domains=["demo-app.org"], source="test",
                        github_user_id=APPLICANT["id"], github_login=APPLICANT["login"])
    session.commit()
    [row] = [json.loads(line) for line in cli("grants", "export", "--format", "jsonl").splitlines()]
    assert row["app_id"] == "demo-app" and row["owner_id"] == APPLICANT["id"] and row["domains"] == ["demo-app.org"]
    assert row["referrers"] == ["demo-app"] and row["created"].endswith("Z")


def test_a_file_without_a_header_is_a_clear_error(cli, tmp_path):
    out = cli("grants", "import", write(tmp_path, "g.csv", "demo-app,alice-dev\n"), code=1)
    assert "the CSV header must name the columns" in out


def test_progress_bar_lists_only_the_refused_rows(cli, tmp_path):
    out = cli("grants", "import", write(tmp_path, "grants.csv", GOOD_AND_BAD), "--progress", code=1)
    assert "Importing 5 rows" in out
    assert "line 2: created" not in out and "line 4: refused pages-app" in out
    assert "5 rows: 2 created, 0 updated, 0 unchanged, 3 refused" in out
