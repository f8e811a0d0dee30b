"""`switchyard gateway` (serve the HTTP gateway) and `switchyard keys` (its run-time API
keys). Importing this module imports no web framework: the gateway's own modules load only
when it is started, so the core install's CLI works without the ``gateway`` extra."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time

from switchyard.broker import logs
from switchyard.broker.apikeys import ApiKey, ApiKeyStore
from switchyard.broker.config import SwitchyardConfig, load_config
from switchyard.broker.errors import ConfigError, SwitchyardError
from switchyard.broker.keys import Keys
from switchyard.broker.locate import redis_url as resolve_redis_url
from switchyard.broker.settings import RedisSettings

__all__ = ["add_parser", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser("gateway", help="serve the OpenAI- and Anthropic-compatible HTTP API")
    g.add_argument("--config", help="TOML config file ([gateway], [tenants], models)")
    g.add_argument("--host", help="overrides [gateway] host (default 127.0.0.1)")
    g.add_argument("--port", type=int, help="overrides [gateway] port (default 8080)")
    g.add_argument("--workers", type=int, help="overrides [gateway] workers (processes)")
    g.add_argument("--redis-url", help="overrides [redis] url")
    logs.add_argument(g)
    g.set_defaults(handler=serve)
    k = sub.add_parser("keys", help="the gateway's API keys (stored as SHA-256 digests)")
    kinds = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = kinds.add_parser("create", help="make a key for a tenant; printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--expires", type=parse_duration,
                        help="lifetime: 3600s, 90m, 12h, 30d (default: never)")
    listed = kinds.add_parser("list", help="the stored keys (ids, tenants, expiry)")
    revoke = kinds.add_parser("revoke", help="delete a key by its id (from `keys list`)")
    revoke.add_argument("key_id")
    for p in (create, listed, revoke):
        p.add_argument("--config", help="TOML config file")
        p.add_argument("--redis-url", help="overrides [redis] url")
        p.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=lambda ns: _keys(ns, "create"))
    listed.set_defaults(handler=lambda ns: _keys(ns, "list"))
    revoke.set_defaults(handler=lambda ns: _keys(ns, "revoke"))


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"a duration such as 3600s, 90m, 12h or 30d: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def serve(ns: argparse.Namespace) -> int:
    """Run the gateway on uvicorn (uvloop, httptools), ``--workers`` processes."""
    if ns.config:
        os.environ["SWITCHYARD_CONFIG"] = os.path.abspath(ns.config)
    for flag, name in ((ns.host, "HOST"), (ns.port, "PORT"), (ns.workers, "WORKERS")):
        if flag is not None:
            os.environ[f"SWITCHYARD_GATEWAY__{name}"] = str(flag)
    config = load_config()
    url = resolve_redis_url(config, ns.redis_url)
    try:
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        from switchyard.dispatcher.gateway.app import REDIS_URL_ENV
    except ImportError as exc:
        raise ConfigError("the gateway needs its extra: pip install 'switchyard[gateway]' "
                          f"({exc.name} is missing)") from None
    os.environ[REDIS_URL_ENV] = url
    json_logs = logs.configure(ns.log_format) == "json"  # (exported to uvicorn's processes)
    asyncio.run(_check_keys(config, url))
    settings = config.gateway
    uvicorn.run("switchyard.dispatcher.gateway.app:from_environment", factory=True,
                host=settings.host, port=settings.port, workers=settings.workers,
                loop="uvloop", http="httptools", access_log=False, log_level="info",
                # JSON: uvicorn's own lines go through the root logger's JSON handler
                log_config=None if json_logs else LOGGING_CONFIG,
                timeout_graceful_shutdown=int(settings.shutdown_grace_s))
    return 0


async def _check_keys(config: SwitchyardConfig, url: str) -> None:
    from switchyard.dispatcher.gateway.auth import Authenticator

    redis = RedisSettings.from_url(url).connect()
    try:
        await Authenticator(config, ApiKeyStore(redis, Keys(config.redis.prefix))
                            ).check_startable()
    finally:
        await redis.aclose()


def _keys(ns: argparse.Namespace, action: str) -> int:
    config = load_config(ns.config)
    url = resolve_redis_url(config, ns.redis_url)
    print(asyncio.run(_key_action(ns, action, url, Keys(config.redis.prefix))))
    return 0


async def _key_action(ns: argparse.Namespace, action: str, url: str, keys: Keys) -> str:
    redis = RedisSettings.from_url(url).connect()
    store = ApiKeyStore(redis, keys)
    try:
        if action == "create":
            key, record = await store.create(ns.tenant, ns.expires)
            if ns.json:
                return json.dumps({"key": key, **_row(record)})
            return (f"{key}\n(key {record.id} for tenant {record.tenant}: shown once, only its "
                    "SHA-256 digest is stored)")
        if action == "list":
            rows = [_row(k) for k in await store.all()]
            if ns.json:
                return json.dumps(rows)
            return "\n".join(f"{r['id']}  {r['tenant']:<24} created {r['created']}  expires "
                             f"{r['expires'] or 'never'}" for r in rows) or "(no keys)"
        gone = await store.revoke(ns.key_id)
        if not gone:
            raise SwitchyardError(f"no key with id {ns.key_id!r}")
        return json.dumps([_row(k) for k in gone]) if ns.json else "\n".join(
            f"revoked {k.id} ({k.tenant})" for k in gone)
    finally:
        await redis.aclose()


def _row(key: ApiKey) -> dict[str, str | None]:
    def when(ms: int | None) -> str | None:
        return None if ms is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                     time.gmtime(ms / 1000))
    return {"id": key.id, "tenant": key.tenant, "created": when(key.created_ms),
            "expires": when(key.expires_ms)}
