"""What the server tells its operators: Prometheus metrics and one access-log line per request.

``ServerMetrics`` holds the app's own ``CollectorRegistry`` (two apps in one process, as in
the tests, never share counters) and is rendered at ``/metrics`` by prometheus-client.
``ObserveMiddleware`` sits outside everything else, so it also sees the requests that the body
limit refuses before any route runs: it assigns the request id (the client's ``X-Request-ID``
when it sends a sane one), returns it in the response, counts and times the request and logs
one JSON line on ``llavac.access``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

access_log = logging.getLogger("llavac.access")

# Labelled by route, not by raw path: a scanner probing random URLs must not create a time
# series per URL. Everything else is "other".
ROUTES = ("/", "/page.js", "/page.css", "/health", "/ready", "/metrics", "/openapi.json",
          "/v1/model", "/v1/classify", "/v1/classify/batch", "/v1/explain")
# Why a request was turned away, by status; the rest of 4xx is a malformed request.
REJECT_REASONS = {401: "unauthorized", 403: "cross_origin", 408: "too_slow", 413: "too_large",
                  429: "rate_limited", 503: "overloaded"}
# A client that left before its answer started (nginx's code): counted apart, neither a
# refusal nor a server error.
CLIENT_CLOSED = 499
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # safe to echo and to log


class ServerMetrics:
    """The server's metrics; ``queue_depth`` / ``in_flight`` are read when scraped."""

    def __init__(self, queue_depth: Callable[[], int]):
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)  # RSS, CPU seconds, open files of this process
        self.requests = Counter("llavac_requests", "HTTP requests answered",
                                ["route", "status"], registry=reg)
        self.latency = Histogram("llavac_request_seconds", "time to answer a request",
                                 ["route"], registry=reg,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.rejected = Counter("llavac_rejected", "requests turned away, by reason",
                                ["reason"], registry=reg)
        self.batch_size = Histogram("llavac_batch_size", "examples per model call",
                                    registry=reg, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.model_seconds = Histogram("llavac_model_seconds", "time of one model call",
                                       registry=reg,
                                       buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.in_flight = 0  # classify requests admitted (llavac.serve.gate), not yet answered
        Gauge("llavac_queue_depth", "examples waiting for the model",
              registry=reg).set_function(queue_depth)
        Gauge("llavac_in_flight", "classify requests accepted and not yet answered",
              registry=reg).set_function(lambda: self.in_flight)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.model_seconds.observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status in REJECT_REASONS or (400 <= status < 500 and status != CLIENT_CLOSED):
            self.rejected.labels(REJECT_REASONS.get(status, "invalid")).inc()


def request_id(headers: dict[bytes, bytes]) -> str:
    """The client's ``X-Request-ID`` when it is short and plain, else a fresh one."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


class ObserveMiddleware:
    """Request id, metrics and the access log for every HTTP request (pure ASGI)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(dict(scope.get("headers") or []))
        scope.setdefault("state", {})["request_id"] = rid
        started, status, left = time.perf_counter(), None, False

        async def receive_watched():
            nonlocal left
            message = await receive()
            left = left or message["type"] == "http.disconnect"
            return message

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive_watched, send_with_id)
        finally:
            if status is None:  # no answer started: the client left, or the server failed
                status = CLIENT_CLOSED if left else 500
            self._record(scope, rid, status, time.perf_counter() - started)

    def _record(self, scope, rid: str, status: int, seconds: float) -> None:
        path = scope["path"]
        route = path if path in ROUTES else "other"
        self.metrics.observe_request(route, status, seconds)
        client = scope.get("client") or ("", 0)
        access_log.info(json.dumps({
            "request_id": rid, "method": scope["method"], "path": path, "status": status,
            "ms": round(seconds * 1000, 2), "client": client[0],
            "key": scope["state"].get("key_id"),
        }))
