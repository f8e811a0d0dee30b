"""Switchyard's dispatcher: admission control, routing, and the enqueue API.

    from switchyard.dispatcher import Client
    with Client() as client:
        vectors = client.embed("minilm", "hello").result().vectors
        for delta in client.chat("tiny-llama", [{"role": "user", "content": "hi"}],
                                 max_tokens=32, stream=True):
            print(delta, end="")
"""

from switchyard.dispatcher.client import AsyncClient
from switchyard.dispatcher.errors import (
    AdmissionRejected,
    ClientError,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobExpired,
    JobFailed,
    JobNotFound,
    ResultTimeout,
    UnknownModel,
)
from switchyard.dispatcher.jobs import AsyncJob
from switchyard.dispatcher.sync import Client, Job

__all__ = [
    "AdmissionRejected",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ClientError",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobNotFound",
    "ResultTimeout",
    "UnknownModel",
]
