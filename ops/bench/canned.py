"""The gateway benchmark's baseline: a bare ASGI endpoint on uvicorn (uvloop, httptools,
as the gateway runs) that answers every request with one canned chat completion, and
nothing else: what the HTTP stack alone costs on this machine.

    python -m switchyard.ops.bench.canned PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["app"]

_BODY = json.dumps({
    "id": "chatcmpl-canned", "object": "chat.completion", "created": 0, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "canned"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the body, as any endpoint must
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _BODY})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop",
                http="httptools", access_log=False, log_level="warning")
