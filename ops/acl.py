"""Redis ACL users per role (`switchyard acl`): the commands and keys each role needs.

Anyone holding Redis credentials is trusted (see the README's trust model); ACL users
limit what a stolen or misused credential of one role can do. Each role's commands are
the ones it sends itself plus every command inside the scripts it runs (Redis checks
those against the caller's user too), read from the ``.lua`` files, so this list cannot
drift from the code. Every role is confined to the key prefix (``~<prefix>:*``) and no
pub/sub channels; none may run ``FLUSHALL``, ``CONFIG SET``, ``KEYS`` or other admin
commands.
"""

from __future__ import annotations

import argparse
import re
import secrets
from dataclasses import dataclass

from switchyard.broker.config import load_config
from switchyard.broker.scripts import ScriptName, source

__all__ = ["ROLES", "Role", "acl_rules", "add_parser", "script_commands"]

_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?")
_SUBCOMMANDS = {"xgroup", "xinfo", "script", "client", "config"}


@dataclass(frozen=True)
class Role:
    name: str
    scripts: tuple[ScriptName, ...]
    commands: tuple[str, ...]
    """Sent directly (``cmd`` or ``cmd|subcommand``)."""
    purpose: str


_COMMON = ("ping", "info", "evalsha", "script|load", "time")
ROLES = (
    Role("client", ("enqueue", "reserve", "settle", "cancel"),
         (*_COMMON, "hmget", "zcount", "xread", "del", "config|get", "hget", "hlen"),
         "the enqueue API and the gateway: admit, read results and job records, cancel, "
         "look up API keys"),
    Role("worker", ("groups", "beat", "hold", "start", "complete", "requeue", "release",
                    "spill_forward", "enqueue", "cancel", "forget", "breaker_allow",
                    "breaker_record", "ratelimit_take", "ratelimit_observe"),
         (*_COMMON, "xreadgroup", "xpending", "xrange", "hincrbyfloat", "zrem", "del",
          "hmget", "hgetall", "xinfo|groups"),
         "GPU and bridge workers: read their pool's streams, run, finish, heartbeat"),
    Role("watchdog", ("requeue", "expire", "forget"),
         (*_COMMON, "xinfo|consumers", "xinfo|groups", "exists", "xautoclaim", "xrange",
          "xpending", "xtrim"),
         "re-queue the work of dead or hung workers, expire what waited past its deadline"),
    Role("ops", ("replay",),
         (*_COMMON, "xinfo|groups", "xinfo|consumers", "xinfo|stream", "xlen", "xrange",
          "xrevrange", "zrangebyscore", "hgetall", "hmget", "xdel", "xpending", "hset",
          "hscan", "hdel", "hget"),
         "`switchyard status`, `switchyard dlq` and `switchyard keys`"),
)


def script_commands(name: ScriptName) -> set[str]:
    """The commands a script calls (``cmd`` or ``cmd|subcommand``)."""
    found = set()
    for command, second in _CALL.findall(source(name, shebang=False)):
        command = command.lower()
        found.add(f"{command}|{second.lower()}" if command in _SUBCOMMANDS and second
                  else command)
    return found


def acl_rules(role: Role, prefix: str) -> list[str]:
    """The ``ACL SETUSER`` arguments of a role, after the user name (its password goes
    after them: ``reset`` clears any given before)."""
    commands = set(role.commands).union(*(script_commands(s) for s in role.scripts))
    return ["reset", "on", f"~{prefix}:*", "resetchannels", "-@all",
            *sorted(f"+{c}" for c in commands)]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("acl", help="print ACL SETUSER commands: one Redis user per role")
    p.add_argument("--config", help="TOML config file (its [redis] prefix is used)")
    p.set_defaults(handler=lambda ns: _print(ns.config))


def _print(config_path: str | None) -> int:
    prefix = load_config(config_path).redis.prefix
    for role in ROLES:
        print(f"# {role.name}: {role.purpose}")
        print(f"ACL SETUSER sy-{role.name} " + " ".join(acl_rules(role, prefix))
              + f" >{secrets.token_urlsafe(24)}")
    return 0
