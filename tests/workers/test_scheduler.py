"""Unit tests for priority order with a share for lower priorities."""

from __future__ import annotations

from collections import Counter

import pytest

from switchyard.broker.schemas import Priority
from switchyard.workers.scheduler import PriorityScheduler


def _run(share: float, waiting: dict[Priority, int], slots: int) -> list[Priority]:
    scheduler = PriorityScheduler(share)
    waiting = dict(waiting)
    order: list[Priority] = []
    for _ in range(slots):
        chosen = scheduler.choose(waiting)
        if chosen is None:
            break
        scheduler.commit(chosen, waiting)
        waiting[chosen] -= 1
        order.append(chosen)
    return order


def test_strict_order_without_share() -> None:
    order = _run(0.0, {"interactive": 3, "standard": 3, "batch": 3}, 9)
    assert order == ["interactive"] * 3 + ["standard"] * 3 + ["batch"] * 3


def test_lower_priorities_get_their_share_under_load() -> None:
    counts = Counter(_run(0.2, {"interactive": 1000, "standard": 1000, "batch": 1000}, 500))
    assert counts["standard"] == pytest.approx(100, abs=2)
    assert counts["batch"] == pytest.approx(100, abs=2)
    assert counts["interactive"] == pytest.approx(300, abs=3)


def test_a_lone_priority_gets_every_slot() -> None:
    assert _run(0.2, {"batch": 5}, 10) == ["batch"] * 5


def test_share_bounds() -> None:
    with pytest.raises(ValueError):
        PriorityScheduler(0.9)
