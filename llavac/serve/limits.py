"""What a request may carry and how often a client may ask: the limits of the server.

``ServeLimits`` bounds one request's content; ``RateLimiter`` bounds each API key's request
rate (a token bucket); ``BodyLimitMiddleware`` enforces the body size before any route or
parser sees the body.

A limit checked only from ``Content-Length`` is bypassed by a chunked upload or a lying
header, and one checked only after parsing lets a client make the server spool gigabytes
first. This ASGI middleware does both: it refuses a declared length over the limit at once,
and otherwise reads the body itself, counting the bytes that actually arrive, and stops with
413 once they pass the limit. The buffered body is then replayed to the app, which is
cheap at the default 10 MB and lets the routes parse multipart and JSON as usual.

Before answering 413 the rest of a moderately oversized body is read and discarded (up to
``drain_factor`` times the limit). The server closes the connection after a refusal, and
closing a socket with unread bytes makes the kernel send a reset, which the client sees as
a broken connection instead of the 413. A declared length beyond that is refused at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass

from llavac.args import ServeArgs

_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry. Defaults suit a public demo on a small machine.

    ``max_body_bytes`` bounds the whole HTTP body (multipart or JSON, base64 included);
    ``max_image_pixels`` bounds the decoded size, because a few kilobytes of PNG can unpack
    into gigabytes (a decompression bomb) long before the body limit is reached.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 2000
    max_batch_items: int = 32
    max_image_pixels: int = 40_000_000

    @classmethod
    def from_args(cls, args: ServeArgs) -> ServeLimits:
        return cls(round(args.max_body_mb * 2**20), args.max_text_chars, args.max_batch_items,
                   args.max_image_pixels)

    def to_dict(self) -> dict:
        return asdict(self)


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts of up to ``burst``.

    ``acquire(client)`` takes one token and returns ``None``, or, when the bucket is empty,
    the seconds until the next token (what ``Retry-After`` tells the client). Buckets refill
    lazily from the clock, so idle clients cost nothing but one small entry.
    """

    def __init__(self, rate: float, burst: int | None = None):
        self.rate = rate
        self.burst = float(burst or max(1.0, rate))
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()  # the routes run on the event loop, tests use threads

    def acquire(self, client: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return None
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate

    @staticmethod
    def retry_after(seconds: float) -> str:
        """``Retry-After`` takes whole seconds: round up, so a client that obeys succeeds."""
        return str(max(1, math.ceil(seconds)))


def _too_large(limit: int) -> bytes:
    return json.dumps(
        {"error": f"request body is larger than the limit of {limit} bytes", "field": "body"}
    ).encode()


class BodyLimitMiddleware:
    """Answers 413 ``{"error", "field": "body"}`` for bodies over ``max_body_bytes``."""

    def __init__(self, app, max_body_bytes: int, drain_factor: int = 4):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain_bytes = drain_factor * max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                declared_length = int(declared)
            except ValueError:
                declared_length = -1
            if declared_length < 0:
                await self._reject(send, 400, b'{"error": "invalid Content-Length", '
                                              b'"field": "body"}')
                return
            if declared_length > self.drain_bytes:
                await self._reject(send, 413, _too_large(self.max_body_bytes))
                return

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                if more and size <= self.drain_bytes:
                    chunks = []  # keep reading (and dropping) so the client sees the 413
                    continue
                await self._reject(send, 413, _too_large(self.max_body_bytes))
                return
            chunks.append(chunk)
            if not more:
                break

        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send, status: int, body: bytes) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        })
        await send({"type": "http.response.body", "body": body})
