"""What a request may carry and how often a client may ask: the limits of the server.

``ServeLimits`` bounds one request's content; ``RateLimiter`` bounds each client's request
rate (a token bucket per API key or address, the least recently seen forgotten first);
``BodyLimitMiddleware`` enforces the body size and the time to send it before any route or
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

uvicorn has no timeout for a body that stops arriving, so a client could hold a request (and
its place in the queue) open for ever by sending one byte: the whole body must arrive within
``body_timeout`` seconds, or the answer is 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass

from llavac.args import ServeArgs
from llavac.serve.errors import ApiError, send_error

_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry. Defaults suit a public demo on a small machine.

    ``max_body_bytes`` bounds the whole HTTP body (multipart or JSON, base64 included);
    ``max_image_pixels`` bounds each image's decoded size and ``max_request_pixels`` all the
    images of one request together, because a few kilobytes of PNG can unpack into hundreds
    of megabytes (a decompression bomb) long before the body limit is reached. Both are read
    from the images' headers before anything is decoded.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 2000
    max_batch_items: int = 32
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 4 * 4096 * 4096
    max_explain_grid: int = 8  # /v1/explain's cells per side
    max_explain_variants: int = 128  # /v1/explain's forward passes per request

    @classmethod
    def from_args(cls, args: ServeArgs) -> ServeLimits:
        return cls(round(args.max_body_mb * 2**20), args.max_text_chars, args.max_batch_items,
                   args.max_image_pixels, args.max_request_pixels, args.max_explain_grid,
                   # an explanation's variants queue together: more than the queue holds
                   # could never be queued
                   min(args.max_explain_variants, args.max_queue))

    def to_dict(self) -> dict:
        return asdict(self)


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts of up to ``burst``.

    ``acquire(client)`` takes one token and returns ``None``, or, when the bucket is empty,
    the seconds until the next token (what ``Retry-After`` tells the client); ``wait(client)``
    says the same without taking one. Buckets refill lazily from the clock. At most
    ``max_clients`` are kept, the least recently seen forgotten first (a forgotten client
    starts again with a full bucket), so a scan from many addresses costs bounded memory.
    """

    def __init__(self, rate: float, burst: int | None = None, max_clients: int = 10_000):
        self.rate = rate
        self.burst = float(burst or max(1.0, rate))
        self.max_clients = max_clients
        # client -> (tokens, last time), least recently seen first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()  # the routes run on the event loop, tests use threads

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def _store(self, client: str, tokens: float, now: float) -> None:
        self._buckets[client] = (tokens, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def acquire(self, client: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(client, now)
            if tokens >= 1:
                self._store(client, tokens - 1, now)
                return None
            self._store(client, tokens, now)
            return (1 - tokens) / self.rate

    def wait(self, client: str) -> float | None:
        """``None`` if ``client`` has a token now, else the seconds until it has one."""
        with self._lock:
            tokens = self._tokens(client, time.monotonic())
        return None if tokens >= 1 else (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def retry_after(seconds: float) -> str:
        """``Retry-After`` takes whole seconds: round up, so a client that obeys succeeds."""
        return str(max(1, math.ceil(seconds)))


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the limit of {limit} bytes", "body")


class BodyLimitMiddleware:
    """Answers 413 for bodies over ``max_body_bytes`` and 408 for one that has not arrived
    within ``timeout`` seconds, both as ``{"error", "field": "body"}``."""

    def __init__(self, app, max_body_bytes: int, timeout: float, drain_factor: int = 4):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain_bytes = drain_factor * max_body_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            declared_length = int(declared) if declared.isdigit() else -1
            if declared_length < 0:
                await send_error(send, ApiError(400, "invalid Content-Length", "body"), True)
                return
            if declared_length > self.drain_bytes:
                await send_error(send, _too_large(self.max_body_bytes), close=True)
                return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout)
        except asyncio.TimeoutError:
            await send_error(send, ApiError(408, f"the request body did not arrive within "
                                                 f"{self.timeout:g} s", "body"), close=True)
            return
        except ApiError as error:
            await send_error(send, error, close=True)
            return
        if body is None:
            return  # the client left; nobody to answer
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)

    async def _read(self, receive) -> bytes | None:
        """The whole body, counting the bytes that arrive; ``None`` if the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                if more and size <= self.drain_bytes:
                    chunks = []  # keep reading (and dropping) so the client sees the 413
                    continue
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)
