"""Errors of background batches and their files.

    SwitchyardError                      (broker.errors)
    └── BatchError
        ├── FileRejected                 an upload over a limit (its size, its lines, the
        │                                tenant's quota: ``too_large``) or not usable
        ├── FileNotFound                 no such file for this tenant (or it expired)
        ├── BatchNotFound                no such batch for this tenant
        └── BatchConflict                the batch cannot do that now (cancel one that
                                         ended, say)
"""

from __future__ import annotations

from switchyard.broker.errors import SwitchyardError

__all__ = ["BatchConflict", "BatchError", "BatchNotFound", "FileNotFound", "FileRejected"]


class BatchError(SwitchyardError):
    """Raised by the batch API (files and batches)."""


class FileRejected(BatchError):
    def __init__(self, message: str, *, too_large: bool = False,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.too_large = too_large
        self.param = param


class FileNotFound(BatchError):
    pass


class BatchNotFound(BatchError):
    pass


class BatchConflict(BatchError):
    pass
