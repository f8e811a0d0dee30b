"""Secrets out of provider texts: a provider may echo our request (its ``Authorization``
or ``x-api-key`` header, the key itself) in an error body. Every provider error is
scrubbed before it is stored, logged or returned: by pattern (bearer tokens, ``sk-...``
style keys, ``api_key=...``), and by value (the configured keys themselves)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "Scrubber", "scrub_patterns"]

REDACTED = "[redacted]"

_PATTERNS = re.compile(
    r"(?P<bearer>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}"
    r"|(?P<named>\b(?:x-api-key|api[_-]?key|authorization|access[_-]?token|secret)"
    r"[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"',;}]{6,}"
    r"|\b(?:sk|pk|rk|sess)-[A-Za-z0-9_-]{8,}",
    re.IGNORECASE,
)


def scrub_patterns(text: str) -> str:
    """``text`` with anything shaped like a credential replaced."""
    return _PATTERNS.sub(lambda m: (m.group("bearer") or m.group("named") or "") + REDACTED,
                         text)


class Scrubber:
    """Scrubs the given secret values (keys read from the environment) and the patterns."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a key that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return scrub_patterns(text)
