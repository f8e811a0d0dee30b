"""Unit tests for the drain-rate and Retry-After arithmetic."""

from __future__ import annotations

import pytest

from switchyard.dispatcher.admission import (
    Admitted,
    Duplicate,
    Rejected,
    drain_rate,
    parse_admission,
    retry_after,
)

pytestmark = pytest.mark.cluster


def test_drain_rate_prefers_the_last_full_window() -> None:
    assert drain_rate(250.0, 10_000, 3, 10_500) == 250.0


def test_drain_rate_uses_the_current_window_when_no_full_one() -> None:
    assert drain_rate(0.0, 10_000, 50, 10_500) == pytest.approx(100.0)


def test_stalled_or_unknown_stream_has_no_drain() -> None:
    assert drain_rate(300.0, 10_000, 3, 16_000) == 0.0
    assert drain_rate(0.0, 0, 0, 16_000) == 0.0


def test_retry_after_is_time_to_drain_below_the_cap() -> None:
    assert retry_after(depth=120, cap=100, rate=50.0, idle_default=1.0) == pytest.approx(0.42)
    assert retry_after(depth=100, cap=100, rate=0.0, idle_default=2.5) == 2.5


def test_parse_admission_replies() -> None:
    assert parse_admission(["admitted", "j", "1-0", 4]) == Admitted("j", "1-0", 4)
    assert parse_admission(["duplicate", "j0"]) == Duplicate("j0")
    rejected = parse_admission(["rejected", 10, "20.000", 1000, 5, 1200])
    assert rejected == Rejected(10, 20.0)
    with pytest.raises(TypeError):
        parse_admission(["maybe"])
