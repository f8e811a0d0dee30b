"""The HTTP gateway: OpenAI- and Anthropic-compatible endpoints in front of the queue.

It needs the ``gateway`` extra (FastAPI, uvicorn with uvloop and httptools); nothing else
in Switchyard imports it. ``switchyard gateway`` serves it; :func:`create_app` builds the
ASGI app for a config (one async client per process)."""

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from switchyard.dispatcher.gateway.app import create_app

        return create_app
    raise AttributeError(name)
