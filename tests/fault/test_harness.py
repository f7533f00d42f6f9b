"""The fault harness itself: a bug in a wait condition shows as itself, not as a long timeout."""

from __future__ import annotations

import pytest

from tests.fault.harness import wait_until


def test_wait_until_reports_the_error_its_condition_kept_raising():
    def broken() -> bool:
        raise KeyError("status_comments")

    with pytest.raises(AssertionError, match="KeyError") as raised:
        wait_until(broken, 0.05, interval=0.01, what="a broken condition")
    assert isinstance(raised.value.__cause__, KeyError)


def test_wait_until_forgets_an_error_once_the_condition_answers_again():
    calls = iter([ValueError("database down"), False, False])

    def flaky() -> bool:
        value = next(calls, False)
        if isinstance(value, Exception):
            raise value
        return value

    with pytest.raises(AssertionError) as raised:
        wait_until(flaky, 0.05, interval=0.01, what="never")
    assert raised.value.__cause__ is None and "raised" not in str(raised.value)


def test_wait_until_returns_when_the_condition_holds():
    answers = iter([False, True])
    assert wait_until(lambda: next(answers), 5, interval=0.01) >= 0
