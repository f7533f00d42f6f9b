"""The allowlist change log is pruned to `allowlist.delta_history` versions by the worker, and
deltas older than what is kept answer "pull the full list" instead of a wrong, partial delta."""

import pytest
from sqlmodel import Session, func, select

from bot.allowlist import serving as allowlist
from bot.allowlist import versioning
from bot.core.config import load_policy
from bot.core.models import AllowlistChange
from bot.intake.worker import PRUNE_INTERVAL_SECONDS, Worker, prune_allowlist_changes
from tests.allowlist_support import make_grant, set_tier


def _change_rows(engine) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(AllowlistChange)).one()


def _history(tmp_path, versions: int):
    path = tmp_path / "policy.yml"
    path.write_text(f"allowlist:\n  delta_history: {versions}\n")
    return load_policy(path)


def test_prune_keeps_the_last_versions_and_old_since_answers_410(session, tmp_path):
    grant = make_grant(session, "chatty", domains=["chatty.example"]).grant
    for tier in ("flower", "nectar", "seed", "flower", "nectar"):
        set_tier(session, grant, tier)
    session.commit()
    version = versioning.current_version(session)
    policy = _history(tmp_path, 2)

    removed = versioning.prune_changes(session, 2)
    session.commit()

    assert removed == version - 2
    kept = session.exec(select(AllowlistChange.version)).all()
    assert min(kept) == version - 1 and max(kept) == version
    _, body = allowlist.build_delta(session, policy, version - 2)  # answerable: both later versions kept
    assert b"chatty" in body
    with pytest.raises(allowlist.DeltaUnavailable):
        allowlist.build_delta(session, policy, version - 3)


def test_prune_with_a_short_history_removes_nothing(session):
    make_grant(session, "chatty", domains=["chatty.example"])
    session.commit()
    assert versioning.prune_changes(session, 100) == 0


def test_the_worker_runs_the_pruning_job(runtime, session, tmp_path):
    grant = make_grant(session, "chatty", domains=["chatty.example"]).grant
    for tier in ("flower", "nectar", "seed"):
        set_tier(session, grant, tier)
    session.commit()
    before = _change_rows(runtime.engine)
    runtime.policy = _history(tmp_path, 1)

    worker = Worker(runtime, name="prune-test")
    assert (PRUNE_INTERVAL_SECONDS, prune_allowlist_changes) in runtime.periodic
    worker.run_periodic()

    assert _change_rows(runtime.engine) == 1 < before
