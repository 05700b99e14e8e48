"""The one error type the judge server answers with (every error body is a
:class:`~lm_runs.judges.protocol.ErrorResponse`)."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """An error answered as ``{"error": message, "request_id": ...}`` with ``status``; ``kind`` labels
    the ``egpo_judge_errors_total`` metric."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
