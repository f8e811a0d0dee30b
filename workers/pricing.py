"""What a result served on the pool's own devices cost: its share of its batch's device
time, at the pool's ``cost_per_hour`` (the price of one worker's device), shared by the
jobs' token counts (the engine's own cost estimate). Bridged results carry what their
provider charged instead (``engines/bridge.py``). A batch that runs beside others (an
engine that joins batches) is charged its own wall time, so there the figure is an upper
bound."""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.broker.schemas import ChatResult, EmbedResult
from switchyard.workers.engines.base import EngineOutput

__all__ = ["priced"]


def priced(outputs: Sequence[EngineOutput], tokens: Sequence[int], seconds: float,
           per_hour: float) -> list[EngineOutput]:
    """The outputs, each result with its ``cost_usd`` (results that have one keep it)."""
    usd = per_hour * seconds / 3_600
    weight = sum(tokens) or len(tokens)
    return [output.model_copy(update={"cost_usd": usd * (n or 1) / weight})
            if isinstance(output, ChatResult | EmbedResult) and output.cost_usd is None
            else output for output, n in zip(outputs, tokens, strict=True)]
