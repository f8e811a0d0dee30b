"""Engines behind one small protocol; :func:`build_engine` picks one from a pool's config."""

from __future__ import annotations

from broker.config import PoolConfig
from workers.engines.base import Engine, EngineOutput
from workers.engines.echo import EchoEngine

__all__ = ["EchoEngine", "Engine", "EngineOutput", "build_engine"]


def build_engine(pool: PoolConfig, device: str | None = None) -> Engine:
    """Build the pool's engine; torch is imported only for engines that need it."""
    if pool.engine == "echo":
        return EchoEngine(pool.delay_ms)
    if pool.engine == "generate":
        from workers.engines.generate import GenerateEngine

        return GenerateEngine(pool.model, device or pool.device, pool.max_input_tokens)
    from workers.engines.embed import EmbedEngine

    return EmbedEngine(pool.model, device or pool.device, pool.max_input_tokens)
