"""Unit tests for priority order with a share for lower priorities."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _pulled(keys: Any, priority: str, deadline_ms: int, n: int) -> Any:
    from switchyard.broker.schemas import EmbedRequest, JobEnvelope
    from switchyard.broker.streams import StreamEntry
    from switchyard.workers.puller import Pulled
    job_id = f"echo.0.{n:024x}"
    envelope = JobEnvelope(id=job_id, model="echo", priority=priority,  # type: ignore[arg-type]
                           created_ms=0, deadline_ms=deadline_ms,
                           request=EmbedRequest(input=["x"]))
    entry = StreamEntry(keys.stream(priority), f"{n}-0",
                        {"id": job_id, "r": keys.reply("c"), "d": "{}"})
    return Pulled(entry, keys, priority, envelope)  # type: ignore[arg-type]


def test_urgent_lower_priority_jobs_go_first_unless_a_higher_one_is_urgent() -> None:
    """Issue 14, point 7: a batch job near its start deadline takes a slot ahead of
    interactive jobs that can spare the time, never ahead of urgent interactive ones."""
    from switchyard.broker.keys import Keys
    from switchyard.broker.schemas import now_ms
    from switchyard.workers.puller import Puller
    keys = Keys("t").partition("echo", 0)
    puller = Puller(None, [keys], "w", max_batch=4, max_batch_tokens=1_000,  # type: ignore[arg-type]
                    lower_share=0.0, block_ms=10)
    now = now_ms()
    puller.buffers["interactive"].extend(_pulled(keys, "interactive", now + 1_900, i)
                                         for i in range(8))
    puller.buffers["batch"].extend([_pulled(keys, "batch", now + 400, 100),
                                    _pulled(keys, "batch", now + 60_000, 101)])
    assert puller._slots() == {"interactive": 3, "batch": 1}
    puller.buffers["interactive"].appendleft(_pulled(keys, "interactive", now + 300, 50))
    assert puller._slots() == {"interactive": 4}  # strict priority again


def _slots_by_turns(puller: Any, max_batch: int) -> dict[str, int]:
    """The slots as the scheduler hands them out one at a time (what ``Puller._slots``
    shortcuts when only one priority waits), urgent jobs aside."""
    waiting = {p: len(b) for p, b in puller.buffers.items()}
    slots: dict[str, int] = {}
    for _ in range(max_batch):
        chosen = puller._scheduler.choose(waiting)
        if chosen is None:
            break
        puller._scheduler.commit(chosen, waiting)
        waiting[chosen] -= 1
        slots[chosen] = slots.get(chosen, 0) + 1
    return slots


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40)),
                min_size=1, max_size=6),
       st.sampled_from([0.0, 0.1, 0.25, 0.5]), st.integers(1, 32))
def test_slots_match_the_scheduler_turn_by_turn(rounds: list[tuple[int, int, int]],
                                                share: float, max_batch: int) -> None:
    """Issue 15: the one-priority shortcut hands out what the turns would, and leaves the
    credits as they would, over a sequence of batches."""
    from switchyard.broker.keys import Keys
    from switchyard.workers.puller import Puller
    keys = Keys("t").partition("echo", 0)
    fast, slow = (Puller(None, [keys], "w", max_batch=max_batch,  # type: ignore[arg-type]
                         max_batch_tokens=10**6, lower_share=share, block_ms=10)
                  for _ in range(2))
    n = 0
    for counts in rounds:
        for puller in (fast, slow):
            for priority, count in zip(("interactive", "standard", "batch"), counts,
                                       strict=True):
                puller.buffers[priority].clear()  # type: ignore[index]
                puller.buffers[priority].extend(  # type: ignore[index]
                    _pulled(keys, priority, 0, n + i) for i in range(count))
        n += sum(counts)
        assert fast._slots() == _slots_by_turns(slow, max_batch)
        assert fast._scheduler.credit == slow._scheduler.credit


def _puller(max_batch: int, share: float = 0.0, backfill: int = 0) -> Any:
    from switchyard.broker.keys import Keys
    from switchyard.workers.puller import Puller
    keys = Keys("t").partition("echo", 0)
    puller = Puller(None, [keys], "w", max_batch=max_batch,  # type: ignore[arg-type]
                    max_batch_tokens=10**6, lower_share=share, block_ms=10, backfill=backfill)
    return puller, keys


def test_background_work_backfills_and_never_rides_with_foreground_work() -> None:
    """Issue 18: a batch holds no ``batch`` priority job beside foreground ones, and while
    foreground work comes, background batches are small (``backfill``); alone, they are
    whole; a ``lower_share`` the operator set still holds."""
    import time
    puller, keys = _puller(16, backfill=4)
    puller.buffers["interactive"].extend(_pulled(keys, "interactive", 0, i) for i in range(3))
    puller.buffers["batch"].extend(_pulled(keys, "batch", 0, 100 + i) for i in range(40))
    assert puller._slots() == {"interactive": 3}
    puller.buffers["interactive"].clear()
    assert puller._slots() == {"batch": 16}  # no foreground lately: a whole batch
    puller._foreground_at = time.monotonic()  # foreground work was just read
    assert puller._slots() == {"batch": 4}
    shared, keys = _puller(10, share=0.2)
    shared.buffers["interactive"].extend(_pulled(keys, "interactive", 0, i) for i in range(30))
    shared.buffers["batch"].extend(_pulled(keys, "batch", 0, 100 + i) for i in range(30))
    assert shared._slots().get("batch", 0) >= 1
