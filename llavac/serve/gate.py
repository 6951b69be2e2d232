"""What is decided from the request line and headers alone, before one byte of the body is read.

Everything here runs as pure ASGI middleware in front of the body limit and the routes, so a
refused request costs no body read, no parsing and no decoding, and an unauthenticated client
cannot hold a place in the queue. In order:

1. a cross-origin write (a browser's ``Origin`` naming another host than ``Host``, or
   ``Sec-Fetch-Site: cross-site``) gets 403: a web page elsewhere cannot post forms or
   fetches to this server, loopback ones included; a server on loopback also refuses an
   ``Origin`` whose host is not a loopback name (DNS rebinding);
2. on ``/v1/*``, ``/metrics`` and ``/openapi.json``, when the server has keys: an address
   that sent too many wrong keys gets 429 (``serve.failed_auth_rate``), a missing or wrong
   key 401;
3. on ``/v1/*``: a key (or address) over its rate gets 429, a model still loading 503, and a
   classify or explain request past ``serve.max_queue`` admitted ones 503.

Only a request that passed all three counts as in flight (``llavac_in_flight``). Every
response leaves with headers that forbid framing and content sniffing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from llavac.serve.auth import is_loopback
from llavac.serve.errors import ApiError, send_error

KEYED_PATHS = ("/v1/", "/metrics", "/openapi.json")
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


def cross_origin(method: str, headers: dict[bytes, bytes], loopback: bool) -> str | None:
    """Why a write from a browser page of another origin is refused, else ``None``.

    Clients that are not browsers send no ``Origin`` and are not affected.
    """
    if method in _SAFE_METHODS:
        return None
    if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
        return "cross-site requests are refused (Sec-Fetch-Site: cross-site)"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    origin_text = origin.decode("latin-1")
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if urlsplit(origin_text).netloc.lower() != host or not host:
        return f"cross-origin requests are refused (Origin {origin_text!r}, Host {host!r})"
    hostname = urlsplit(f"//{host}").hostname or ""
    if loopback and not is_loopback(hostname):
        return f"this server listens on loopback and refuses the Origin {origin_text!r}"
    return None


class GateMiddleware:
    """Origin, key and admission checks on the headers (see the module docstring)."""

    def __init__(self, app, state):
        self.app = app
        self.state = state  # llavac.serve.app.ServeState

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  *SECURITY_HEADERS]}
            await send(message)

        try:
            counted = self.admit(scope)
        except ApiError as error:
            # No 'Connection: close': the client may still be sending its body, which uvicorn
            # reads and drops after this answer, so the client sees the answer, not a reset.
            await send_error(send_secured, error)
            return
        metrics = self.state.metrics
        metrics.in_flight += counted
        try:
            await self.app(scope, receive, send_secured)
        finally:
            metrics.in_flight -= counted

    def admit(self, scope) -> bool:
        """Raise the ``ApiError`` that refuses ``scope``; else whether it counts toward
        ``serve.max_queue`` (a classify or explain request)."""
        state, path = self.state, scope["path"]
        headers = dict(scope.get("headers") or [])
        refusal = cross_origin(scope["method"], headers, is_loopback(state.args.host))
        if refusal is not None:
            raise ApiError(403, refusal, "origin")
        if not path.startswith(KEYED_PATHS):
            return False
        client = (scope.get("client") or ("?",))[0]
        key_id = state.authorize(headers.get(b"authorization", b"").decode("latin-1"), client)
        scope.setdefault("state", {})["key_id"] = key_id
        if not path.startswith("/v1/"):
            return False
        state.within_rate(key_id or client)
        state.require_ready()
        if not path.startswith(("/v1/classify", "/v1/explain")):
            return False
        state.require_room()
        return True
