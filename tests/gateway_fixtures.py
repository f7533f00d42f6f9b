"""Fixtures shared by the gateway client's test modules (loaded by tests/conftest.py through
`pytest_plugins`): the bot's app behind `responses`, a gateway credential and a client factory.
A module that defines a fixture of the same name keeps its own."""

from __future__ import annotations

import pytest
import responses

from beekeeper_gateway import AllowlistClient
from tests.allowlist_support import ALLOWLIST_URL, AppBridge, add_gateway


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def bridge(app, rsps):
    return AppBridge(app, rsps)


@pytest.fixture
def credential(session):
    return add_gateway(session, "edge-1")


@pytest.fixture
def make_client(credential, frozen_clock, bridge):
    def make(**kwargs):
        return AllowlistClient(ALLOWLIST_URL, credential, clock=lambda: frozen_clock.now().timestamp(), **kwargs)
    return make
