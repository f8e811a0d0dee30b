"""Every error the gateway answers with, mapped in one place, in each API's own shape.

    SwitchyardError                      (broker.errors)
    └── GatewayError                     an HTTP answer: status, type, message, headers
        ├── BadRequest                   400, naming the parameter (``param``)
        ├── Unauthorized                 401, no key or a key that is not (or no longer) valid
        └── PayloadTooLarge              413, the body is over ``[limits] max_request_bytes``

:func:`http_error` turns anything the enqueue API raises into a :class:`GatewayError`;
:func:`openai_body` and :func:`anthropic_body` write it as each API does, so each SDK
raises its own typed exception (``openai.RateLimitError``, ``anthropic.APIStatusError``
with status 529, ...) and its retry loop acts on ``Retry-After`` and ``x-should-retry``.
"""

from __future__ import annotations

import math
from typing import Any

from switchyard.broker.errors import BrokerUnavailable, DurabilityUnavailable, SwitchyardError
from switchyard.dispatcher.batches.errors import (
    BatchError,
    BatchNotFound,
    FileNotFound,
    FileRejected,
)
from switchyard.dispatcher.errors import (
    AdmissionRejected,
    InvalidRequest,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    UnknownModel,
)

__all__ = ["BadRequest", "GatewayError", "PayloadTooLarge", "Unauthorized", "anthropic_body",
           "http_error", "openai_body"]


class GatewayError(SwitchyardError):
    def __init__(self, status: int, kind: str, message: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        """OpenAI's ``type`` (``invalid_request_error``, ``server_error``, ...)."""
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


class BadRequest(GatewayError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, "invalid_request_error", message, param=param, code=code)


class Unauthorized(GatewayError):
    def __init__(self, message: str = "a valid API key is required (Authorization: Bearer "
                                      "KEY, or x-api-key: KEY)") -> None:
        super().__init__(401, "invalid_request_error", message, code="invalid_api_key",
                         headers={"www-authenticate": 'Bearer realm="switchyard"'})


class PayloadTooLarge(GatewayError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "invalid_request_error",
                         f"the request body is over {limit} bytes ([limits] max_request_bytes)",
                         code="request_too_large")


_FAILED_STATUS = {"context_length_exceeded": 400, "invalid_request": 400,
                  "providers_failed": 502, "provider_error": 502, "out_of_memory": 503,
                  "too_large": 400}
_QUOTA_KIND = {"tpm": "tokens"}


def http_error(exc: Exception, max_retry_after_s: float) -> GatewayError:
    """The HTTP answer to an exception of the enqueue API (anything else is a 500 that
    names only its type: its text may hold what a caller must not see)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, UnknownModel):
        return GatewayError(404, "invalid_request_error", str(exc), code="model_not_found",
                            param="model")
    if isinstance(exc, InvalidRequest):
        return BadRequest(str(exc))
    if isinstance(exc, AdmissionRejected):
        return _rejected(exc, max_retry_after_s)
    if isinstance(exc, JobNotFound):
        return GatewayError(404, "invalid_request_error", str(exc), code="not_found")
    if isinstance(exc, JobExpired):
        return GatewayError(504, "timeout_error", str(exc), code="job_expired",
                            headers={"x-should-retry": "false"})
    if isinstance(exc, ResultTimeout):
        return GatewayError(504, "timeout_error", str(exc), code="timeout",
                            headers={"x-should-retry": "false"})
    if isinstance(exc, JobCancelled):
        return GatewayError(409, "invalid_request_error", str(exc), code="cancelled",
                            headers={"x-should-retry": "false"})
    if isinstance(exc, JobFailed):
        status = _FAILED_STATUS.get(exc.code, 500)
        return GatewayError(status, "invalid_request_error" if status < 500 else "server_error",
                            exc.message, code=exc.code)
    if isinstance(exc, BatchError):
        return _batch_error(exc)
    if isinstance(exc, BrokerUnavailable | DurabilityUnavailable):
        return GatewayError(503, "server_error", str(exc), code="broker_unavailable",
                            headers=_retry_headers(1.0, max_retry_after_s))
    return GatewayError(500, "server_error", f"internal error ({type(exc).__name__})",
                        code="internal_error")


def _batch_error(exc: BatchError) -> GatewayError:
    if isinstance(exc, FileRejected):
        if exc.too_large:
            return GatewayError(413, "invalid_request_error", str(exc), code="file_too_large")
        return GatewayError(400, "invalid_request_error", str(exc), param=exc.param)
    if isinstance(exc, FileNotFound | BatchNotFound):
        return GatewayError(404, "invalid_request_error", str(exc), code="not_found")
    return GatewayError(409, "invalid_request_error", str(exc), code="conflict")


def _rejected(exc: AdmissionRejected, max_retry_after_s: float) -> GatewayError:
    headers = _retry_headers(exc.retry_after, max_retry_after_s)
    if exc.reason == "tenant_quota":
        kind = _QUOTA_KIND.get(exc.detail, "requests")
        return GatewayError(429, kind, str(exc), code="rate_limit_exceeded", headers=headers)
    return GatewayError(503, "server_error", str(exc), code=exc.reason, headers=headers)


def _retry_headers(retry_after: float, cap: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``; past ``cap``,
    the cap with ``x-should-retry: false`` (see ``GatewayConfig.max_retry_after_s``)."""
    wait = retry_after if math.isfinite(retry_after) and retry_after > 0 else 1.0
    headers = {}
    if wait > cap:
        wait = cap
        headers["x-should-retry"] = "false"
    headers["retry-after"] = str(max(1, math.ceil(wait)))
    headers["retry-after-ms"] = str(max(1, round(wait * 1000)))
    return headers


def openai_body(error: GatewayError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param,
                      "code": error.code}}


_ANTHROPIC_KIND = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 409: "invalid_request_error",
                   413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
                   504: "timeout_error"}


def anthropic_status(error: GatewayError) -> int:
    """Anthropic says 529 for an overloaded API (its SDK retries it); the rest as is."""
    if error.status == 503:
        return 529
    return error.status


def anthropic_body(error: GatewayError) -> dict[str, Any]:
    kind = _ANTHROPIC_KIND.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}
