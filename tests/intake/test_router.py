"""The router: `@router.on(event, *actions)` registration, dispatch order, Event and Context."""

from __future__ import annotations

import json

import pytest

from bot.core.models import Delivery
from bot.github.client import InstallationClient
from bot.intake.router import Context, Event, Router


def event(name: str = "issues", action: str | None = "opened", **payload) -> Event:
    return Event(name=name, action=action, payload={"action": action, **payload}, delivery_id="d-1")


def test_handlers_run_for_their_event_and_actions_only():
    router, calls = Router(), []
    router.on("issues", "opened", "edited")(lambda e, c: calls.append(("review", e.action)))
    router.on("issues", "closed")(lambda e, c: calls.append(("closed", e.action)))
    router.on("issue_comment", "created")(lambda e, c: calls.append(("comment", e.action)))

    assert router.dispatch(event("issues", "opened"), None) == 1
    assert router.dispatch(event("issues", "edited"), None) == 1
    assert router.dispatch(event("issues", "labeled"), None) == 0
    assert router.dispatch(event("issue_comment", "created"), None) == 1
    assert router.dispatch(event("issue_comment", "deleted"), None) == 0
    assert calls == [("review", "opened"), ("review", "edited"), ("comment", "created")]


def test_a_handler_without_actions_gets_every_action_after_the_specific_ones():
    router, calls = Router(), []
    router.on("installation")(lambda e, c: calls.append("any"))
    router.on("installation", "deleted")(lambda e, c: calls.append("deleted"))
    router.dispatch(event("installation", "deleted"), None)
    router.dispatch(event("installation", "created"), None)
    router.dispatch(event("installation", None), None)
    assert calls == ["deleted", "any", "any", "any"]


def test_several_handlers_run_in_registration_order_once_each():
    router, calls = Router(), []

    def first(e, c):
        calls.append("first")

    def second(e, c):
        calls.append("second")

    router.on("issues", "opened")(first)
    router.on("issues", "opened")(second)
    router.on("issues", "opened")(first)  # registering twice (a module imported twice) is harmless
    router.on("issues")(first)  # a generic registration of a specific handler runs it once too
    assert router.dispatch(event(), None) == 2
    assert calls == ["first", "second"]


def test_decorator_returns_the_function():
    router = Router()

    @router.on("issues", "opened")
    def handler(e, c):
        return "called"

    assert handler(None, None) == "called"


def test_an_exception_stops_dispatch_and_propagates_for_the_inbox_to_retry():
    router, calls = Router(), []
    router.on("issues")(lambda e, c: (_ for _ in ()).throw(RuntimeError("boom")))
    router.on("issues")(lambda e, c: calls.append("never"))
    with pytest.raises(RuntimeError, match="boom"):
        router.dispatch(event(), None)
    assert calls == []


def test_event_from_a_stored_delivery():
    payload = {"action": "opened", "sender": {"login": "octocat", "type": "User"},
               "repository": {"full_name": "acme/access"}}
    delivery = Delivery(hook_id=5, delivery_id="guid", event="issues", action="opened", installation_id=9,
                        payload=json.dumps(payload))
    parsed = Event.from_delivery(delivery)
    assert (parsed.name, parsed.action, parsed.delivery_id, parsed.hook_id, parsed.installation_id) == (
        "issues", "opened", "guid", 5, 9)
    assert parsed.sender == {"login": "octocat", "type": "User"}
    assert parsed.repo == "acme/access"
    assert event().sender == {} and event().repo is None


def test_context_github_is_the_installation_client_made_on_first_use(runtime, session):
    ctx = runtime.make_context(session, Event("issues", "opened", {}, "d", installation_id=1))
    assert ctx.installation_id == 1
    client = ctx.github
    assert isinstance(client, InstallationClient) and client.installation_id == 1
    assert ctx.github is client  # cached


def test_context_without_installation_cannot_reach_github(runtime, session):
    ctx = Context(session=session, settings=runtime.settings, policy=runtime.policy, app=runtime.github)
    with pytest.raises(LookupError, match="installation"):
        ctx.github  # noqa: B018 - the property is what is tested
