"""Errors the server answers with, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error for the client: status, one-sentence message, OpenAI's type, the field at fault, a code."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_field(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unavailable(message: str = "the server is shutting down and admits no new requests; retry on another server") \
        -> ApiError:
    return ApiError(503, message, type="service_unavailable", code="shutting_down")


def queue_full(retry_after: int) -> ApiError:
    return ApiError(429, f"the model's request queue is full; retry after {retry_after} s",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": str(retry_after)})
