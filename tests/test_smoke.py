from sqlmodel import select

from bot.models import Delivery
from tests.conftest import deliver, issue_event


def test_signed_delivery_is_stored_and_processed(client, runtime, worker, fake_github):
    response = deliver(client, "issues", issue_event("opened", body="hello"), delivery_id="d-1")
    assert response.status_code == 202
    assert deliver(client, "issues", issue_event("opened", body="hello"), delivery_id="d-1").status_code == 200
    from sqlmodel import Session

    with Session(runtime.engine) as s:
        assert len(s.exec(select(Delivery)).all()) == 1
    assert worker.run_once() == 1
    with Session(runtime.engine) as s:
        assert s.exec(select(Delivery)).one().status in ("processed", "skipped")
