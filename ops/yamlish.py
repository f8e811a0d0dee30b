"""A small YAML writer for the files Switchyard generates (Prometheus rules and
configs, their unit tests): block mappings and sequences, every string double-quoted
(JSON's escapes are YAML's), so no value is ever read back as another type."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = ["dump"]

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def dump(value: object) -> str:
    return "\n".join(_lines(value, 0)) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    return json.dumps(str(value), ensure_ascii=False)


def _key(key: object) -> str:
    """A plain key where it is an identifier, else quoted."""
    text = str(key)
    return text if _PLAIN.match(text) else _scalar(text)


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _nested(item):
                out.append(f"{pad}{_key(key)}:")
                out.extend(_lines(item, indent + 2))
            else:
                out.append(f"{pad}{_key(key)}: {_inline(item)}")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if _nested(item):
                inner = _lines(item, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {_inline(item)}")
    else:
        out.append(pad + _scalar(value))
    return out


def _nested(item: object) -> bool:
    return bool(item) and isinstance(item, Mapping | list | tuple)


def _inline(item: object) -> str:
    if isinstance(item, Mapping):
        return "{}"
    if isinstance(item, list | tuple):
        return "[]"
    return _scalar(item)
