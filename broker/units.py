"""Sizes as people write them ('2GiB', '512MiB') and as Switchyard prints them ('2.0 GiB').

One parser for every boundary that takes a size (config files, CLI flags) and one
formatter for everything that shows one (logs, errors, ``switchyard status``).
"""

from __future__ import annotations

from pydantic import ByteSize, TypeAdapter, ValidationError

from switchyard.broker.errors import ConfigError

__all__ = ["format_size", "parse_size"]


def parse_size(text: str, *, what: str = "size") -> int:
    """Bytes in ``text`` ('2GiB', '512MB', '1048576'); :class:`ConfigError` naming ``what``
    if it is not a size."""
    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise ConfigError(f"{what} {text!r} is not a size (e.g. 2GiB, 512MiB)") from None


def format_size(size: float) -> str:
    """``2147483648`` -> ``'2.0 GiB'``."""
    return ByteSize(int(size)).human_readable(separator=" ")
