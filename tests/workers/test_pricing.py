"""A result's share of its batch's device time (issue 18, point 6)."""

from __future__ import annotations

import pytest

from switchyard.broker.schemas import EmbedResult, ErrorInfo, Usage
from switchyard.workers.pricing import priced


def _result(cost: float | None = None) -> EmbedResult:
    return EmbedResult(vectors=[[]], dimensions=0, usage=Usage(), cost_usd=cost)


def test_each_result_pays_its_tokens_share_of_the_device_time() -> None:
    out = priced([_result(), _result(), ErrorInfo(code="x", message="y"), _result(0.5)],
                 [10, 30, 40, 20], seconds=36.0, per_hour=10.0)  # 0.1 USD in all
    assert [getattr(o, "cost_usd", None) for o in out] == pytest.approx(
        [0.01, 0.03, None, 0.5])  # an error costs nothing; a priced result keeps its price
