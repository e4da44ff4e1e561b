"""Handle response codes and the one error type every layer raises.

Codes and HTTP statuses follow the Handle.Net REST API (Handle Technical Manual, ch. 14) and
the answers recorded from a real 9.3.1 server in ``shared/reference``.
"""
from __future__ import annotations

SUCCESS = 1
ERROR = 2
SERVER_TOO_BUSY = 3
PROTOCOL_ERROR = 4
HANDLE_NOT_FOUND = 100
HANDLE_ALREADY_EXISTS = 101
INVALID_HANDLE = 102
VALUES_NOT_FOUND = 200
VALUE_ALREADY_EXISTS = 201
INVALID_VALUE = 202
SERVER_NOT_RESP = 301
INSUFFICIENT_PERMISSIONS = 400
UNAUTHORIZED = 401
AUTHENTICATION_NEEDED = 402
AUTHENTICATION_FAILED = 403

# The HTTP status Handle.Net's REST API pairs with each response code.
HTTP_STATUS = {
    SUCCESS: 200,
    ERROR: 500,
    SERVER_TOO_BUSY: 503,
    PROTOCOL_ERROR: 400,
    HANDLE_NOT_FOUND: 404,
    HANDLE_ALREADY_EXISTS: 409,
    INVALID_HANDLE: 400,
    VALUES_NOT_FOUND: 200,
    VALUE_ALREADY_EXISTS: 409,
    INVALID_VALUE: 400,
    SERVER_NOT_RESP: 400,
    INSUFFICIENT_PERMISSIONS: 403,
    UNAUTHORIZED: 403,
    AUTHENTICATION_NEEDED: 401,
    AUTHENTICATION_FAILED: 401,
}


class HandleError(Exception):
    """An answer that is not a success, in the protocol's own terms.

    ``code`` is the Handle responseCode, ``status`` the HTTP status (derived from the code
    unless given), ``handle`` the identifier the answer is about, when known.
    """

    def __init__(self, code: int, message: str | None = None, *, handle: str | None = None,
                 status: int | None = None):
        super().__init__(message or f"responseCode {code}")
        self.code = code
        self.message = message
        self.handle = handle
        self.status = status if status is not None else HTTP_STATUS.get(code, 400)

    def body(self) -> dict:
        """The Handle-shaped JSON body: responseCode, then message and handle when known."""
        out: dict = {"responseCode": self.code}
        if self.message is not None:
            out["message"] = self.message
        if self.handle is not None:
            out["handle"] = self.handle
        return out

    def with_handle(self, handle: str) -> "HandleError":
        if self.handle is None:
            self.handle = handle
        return self

    def __reduce__(self):  # picklable across processes
        return (_rebuild, (self.code, self.message, self.handle, self.status))


def _rebuild(code, message, handle, status):
    return HandleError(code, message, handle=handle, status=status)


class PeerUnavailable(HandleError):
    """A node this one depends on did not answer in time or refused the connection."""

    def __init__(self, message: str, *, handle: str | None = None):
        super().__init__(SERVER_TOO_BUSY, message, handle=handle, status=503)
