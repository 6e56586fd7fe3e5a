"""Per-visitor limits: answers at once, and requests a minute (a token bucket), with Retry-After."""

from __future__ import annotations

import pytest

from functions.chat.limits import SWEEP_EVERY, VisitorLimits
from studio.runtime.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_minutes_allowance_may_be_used_at_once_then_it_refills_evenly() -> None:
    clock = Clock()
    limits = VisitorLimits(concurrent=10, per_minute=6, clock=clock)  # one regained every 10 s
    for _ in range(6):
        with limits.admit("v1"):
            pass

    with pytest.raises(TooManyRequests) as caught, limits.admit("v1"):
        pass
    assert caught.value.code == "rate_limited" and caught.value.headers["Retry-After"] == "10"

    clock.now += 4
    with pytest.raises(TooManyRequests) as caught, limits.admit("v1"):
        pass
    assert caught.value.headers["Retry-After"] == "6"
    clock.now += 6
    with limits.admit("v1"):
        pass
    with limits.admit("v2"):
        pass  # another visitor has their own allowance


def test_answers_at_once_are_limited_and_a_slot_frees_when_the_answer_ends() -> None:
    limits = VisitorLimits(concurrent=2, per_minute=100, clock=Clock())

    with limits.admit("v1"), limits.admit("v1"):
        assert limits.generating("v1") == 2
        with pytest.raises(TooManyRequests) as caught, limits.admit("v1"):
            pass
        assert caught.value.code == "too_many_generations" and caught.value.headers["Retry-After"] == "1"
    assert limits.generating("v1") == 0
    with pytest.raises(RuntimeError), limits.admit("v1"):
        raise RuntimeError("the answer failed")
    assert limits.generating("v1") == 0, "a failed answer frees its slot too"


def test_idle_visitors_are_forgotten() -> None:
    clock = Clock()
    limits = VisitorLimits(concurrent=1, per_minute=60, clock=clock)
    for i in range(SWEEP_EVERY - 1):
        with limits.admit(f"v{i}"):
            pass
    clock.now += 61

    with limits.admit("last"):
        pass

    assert len(limits) == 1
