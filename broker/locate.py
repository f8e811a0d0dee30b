"""Where a role finds Redis when nobody says: the URL `switchyard up` writes to its state
folder while it runs (with the password it generated), read when the configuration names
no Redis, so a second shell's CLI or Python client finds the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from switchyard.broker.config import SwitchyardConfig

__all__ = ["DEFAULT_STATE_DIR", "STACK_URL_FILE", "STATE_DIR_ENV", "redis_url", "stack_url_file"]

STATE_DIR_ENV = "SWITCHYARD_STATE_DIR"
DEFAULT_STATE_DIR = ".switchyard"
"""`switchyard up`'s state folder (relative to the working directory) unless
``$SWITCHYARD_STATE_DIR`` says otherwise."""
STACK_URL_FILE = "redis.url"
"""In the state folder: the URL (with its generated password) of the Redis `switchyard up`
runs, mode 0600, while it runs."""


def stack_url_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where `switchyard up` writes its Redis URL."""
    env = os.environ if environ is None else environ
    return Path(env.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR) / STACK_URL_FILE


def redis_url(config: SwitchyardConfig, override: str | None = None,
              environ: Mapping[str, str] | None = None) -> str:
    """Where to reach Redis: ``override`` (``--redis-url``); else the configured ``[redis]
    url`` (file or ``SWITCHYARD_REDIS__URL``); else, where the configuration names none,
    the URL a running `switchyard up` wrote to its state folder; else the default."""
    if override:
        return override
    if "url" in config.redis.model_fields_set:
        return config.redis.url
    try:
        written = stack_url_file(environ).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return config.redis.url
    return written or config.redis.url
