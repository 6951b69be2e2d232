"""The one error shape of the API, ``{"error": ..., "field": ...}``, and the ways to send it.

Routes raise :class:`ApiError` (the app's exception handlers render it); the ASGI middleware
that answers before any route runs (the gate, the body limit) sends the same shape with
:func:`send_error`.
"""

from __future__ import annotations

import json


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a human ``error`` and the ``field``."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers  # e.g. Retry-After on 429 / 503, WWW-Authenticate on 401


def error_body(error: str, field: str | None = None) -> bytes:
    return json.dumps({"error": error, "field": field}).encode()


async def send_error(send, error: ApiError, close: bool = False) -> None:
    """Answer ``error`` as a whole response on an ASGI ``send``; ``close`` ends the connection
    after it (for a client that will not finish its body)."""
    body = error_body(error.error, error.field)
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode())
                for name, value in (error.headers or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
