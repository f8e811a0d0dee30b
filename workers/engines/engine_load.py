"""What a local serving engine is doing, read from its Prometheus metrics, and how much
more it can take (the ``served`` engine's room).

vLLM exports ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` before 0.10); SGLang
``sglang:num_running_reqs``, ``sglang:num_queue_reqs`` and ``sglang:token_usage``. Counts
are summed over label sets (one per model), cache use is their maximum, as a fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from switchyard.broker.config import ServedConfig

__all__ = ["NAMES", "EngineLoad", "parse_metrics", "room"]

NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "vllm": (("vllm:num_requests_running",), ("vllm:num_requests_waiting",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": (("sglang:num_running_reqs",), ("sglang:num_queue_reqs",),
               ("sglang:token_usage",)),
}
"""Per engine: the names of (running, waiting, KV-cache use)."""


@dataclass(frozen=True)
class EngineLoad:
    running: int
    waiting: int
    kv: float
    """KV-cache use, 0-1."""
    kind: str
    """Which engine's metric names these were: vllm or sglang."""
    capacity: int = 0
    """Tokens the KV cache holds (vLLM's ``cache_config_info``: blocks x block size;
    SGLang's ``max_total_num_tokens``); 0: not exported."""


def parse_metrics(text: str, kind: str = "auto") -> EngineLoad | None:
    """The load in a Prometheus text exposition; None if it has none of the names."""
    values: dict[str, list[float]] = {}
    capacity = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("vllm:cache_config_info{"):
            capacity = _vllm_capacity(line[line.index("{") + 1:line.rindex("}")])
        if "{" in line:  # name{labels} value [timestamp]
            name, rest = line[:line.index("{")], line[line.rindex("}") + 1:].split()
        else:
            name, *rest = line.split()
        try:
            values.setdefault(name, []).append(float(rest[0]))
        except (IndexError, ValueError):
            continue
    for engine in ([kind] if kind in NAMES else list(NAMES)):
        running, waiting, kv = (_first(values, names) for names in NAMES[engine])
        if running is not None and waiting is not None:
            total = capacity or int(sum(values.get("sglang:max_total_num_tokens", [0])))
            return EngineLoad(int(sum(running)), int(sum(waiting)),
                              max(kv) if kv else 0.0, engine, total)
    return None


def _vllm_capacity(labels: str) -> int:
    """Blocks x block size from ``cache_config_info``'s labels."""
    pairs = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
    try:
        return int(pairs["num_gpu_blocks"].strip('"')) * int(pairs["block_size"].strip('"'))
    except (KeyError, ValueError):
        return 0


def _first(values: dict[str, list[float]], names: tuple[str, ...]) -> list[float] | None:
    return next((values[n] for n in names if n in values), None)


def room(settings: ServedConfig, load: EngineLoad | None, inflight: int, sent_since: int,
         job_tokens: float = 0.0, done_since: int = 0) -> int:
    """Requests to send now. Never more in flight than ``max_running`` + ``max_waiting``;
    nothing while the engine queues more than ``max_waiting`` or its cache is past
    ``kv_high``; and no more than its cache has room for: at the cache use per running
    request, or, with nothing running yet, at ``job_tokens`` a request (prompt and max
    tokens: an upper bound) of the cache's capacity, or else one at a time until a
    reading shows one running. Jobs the reading cannot show yet are counted against the
    room: those sent since it, or (what covers a request still on its way when the engine
    was read) all those in flight beyond what it shows running and waiting. Requests
    answered since it (``done_since``) no longer run, nor hold their share of the cache:
    without that, a worker whose batch ended just after a reading sent the next one as
    if the engine were still busy, and kept it a request short of full."""
    slots = settings.max_running + settings.max_waiting
    free = slots - inflight
    if load is None:
        return max(0, free)
    if load.waiting > settings.max_waiting or load.kv >= settings.kv_high:
        return 0
    running = max(0, load.running - done_since)
    queue = settings.max_waiting - load.waiting
    engine = slots - running - load.waiting
    unseen = max(sent_since, inflight - running - load.waiting)
    if load.running and load.kv > 0:  # at the reading's cache use per running request
        per = load.kv / load.running
        by_cache = math.floor((settings.kv_high - per * running) / per + 1e-9)
    elif load.capacity and job_tokens > 0:
        by_cache = math.floor((settings.kv_high - load.kv) * load.capacity / job_tokens)
    else:
        by_cache = 1
    return max(0, min(free, min(engine, by_cache + queue) - unseen))
