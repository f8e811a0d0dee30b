"""Engines behind one small protocol; :func:`build_engine` picks one from a pool's config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchyard.broker.config import PoolConfig, SwitchyardConfig
from switchyard.workers.engines.base import Engine, EngineOutput
from switchyard.workers.engines.echo import EchoEngine
from switchyard.workers.errors import EngineUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["EchoEngine", "Engine", "EngineOutput", "build_engine"]


def build_engine(pool: PoolConfig, device: str | None = None, *,
                 config: SwitchyardConfig | None = None,
                 redis: aioredis.Redis | None = None) -> Engine:
    """Build the pool's engine; torch is imported only for engines that need it. A bridge
    needs the whole ``config`` (its providers) and ``redis`` (its circuit breakers)."""
    if pool.engine == "echo":
        return EchoEngine(pool.delay_ms, pool.job_delay_ms)
    if pool.engine == "bridge":
        if config is None or redis is None:
            raise EngineUnavailable("a bridge engine needs the configuration and Redis")
        from switchyard.broker.keys import Keys
        from switchyard.broker.scripts import Scripts
        from switchyard.workers.engines.bridge import BridgeEngine

        return BridgeEngine(pool, config.providers, Scripts(redis), Keys(config.redis.prefix))
    if pool.engine == "served":
        from switchyard.workers.engines.served import ServedEngine

        return ServedEngine(pool)
    if pool.engine == "generate":
        from switchyard.workers.engines.generate import GenerateEngine

        return GenerateEngine(pool.model, device or pool.device, pool.max_input_tokens,
                              pool.dtype)
    from switchyard.workers.engines.embed import EmbedEngine

    return EmbedEngine(pool.model, device or pool.device, pool.max_input_tokens, pool.dtype)
