"""The FastAPI app around one :class:`~llavac.predict.Classifier`, and the state it serves from.

``create_app`` takes an already-loaded classifier (what tests and notebooks use) or a
``load`` function that the app runs in its model thread after it starts (what ``serve()``
uses, so ``/health`` answers while a large model loads and ``/ready`` says when it is done).
Every answer, including every error, is JSON of a fixed shape; a client never sees a
traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llavac.args import ServeArgs
from llavac.data import ImageLimits
from llavac.labels import LABELS
from llavac.models import image_limits
from llavac.serve.auth import api_keys, bearer_token, key_matches
from llavac.serve.batcher import MicroBatcher, QueueFull
from llavac.serve.errors import ApiError
from llavac.serve.gate import GateMiddleware
from llavac.serve.limits import BodyLimitMiddleware, RateLimiter, ServeLimits
from llavac.serve.observe import ObserveMiddleware, ServerMetrics
from llavac.serve.routes import metrics_routes, model_routes, open_routes
from llavac.serve.schema import install_openapi

log = logging.getLogger(__name__)
QUEUE_RETRY_AFTER = "1"  # a full queue drains in about a second at the default sizes


def served_model_card(classifier, model_name: str | None = None,
                      adapter: str | None = None) -> dict:
    """What ``/v1/model`` reports, from the classifier's ``source`` manifest.

    ``model_name`` / ``adapter`` override it (for a classifier built by hand without one).
    """
    source = getattr(classifier, "source", None) or {}
    fmt = getattr(classifier, "fmt", None)
    return {
        "model": model_name or source.get("model") or source.get("name_or_path"),
        "adapter": adapter if adapter is not None else source.get("adapter"),
        "prompt": getattr(fmt, "name", None),
        "slots": list(getattr(fmt, "slots", ())),
        "labels": list(LABELS),
        # The calibration.json temperatures applied to the probabilities; None: raw.
        "temperatures": getattr(classifier, "temperatures", None),
        **{key: source.get(key) for key in ("family", "dtype", "device", "parameters")},
    }


class ServeState:
    """Everything the routes share: the model, its queue, the keys, the limits, the metrics."""

    def __init__(self, classifier, args: ServeArgs, model_name: str | None,
                 adapter: str | None):
        self.classifier, self.args = classifier, args
        self.names = (model_name, adapter)
        self.limits = ServeLimits.from_args(args)
        self.keys = api_keys(args)
        self.limiter = RateLimiter(args.rate_limit, args.rate_burst) if args.rate_limit else None
        # Wrong keys, per client address: a key cannot be guessed at the request rate.
        self.failed_auth = RateLimiter(args.failed_auth_rate, args.failed_auth_burst)
        self.load_error: BaseException | None = None
        self.metrics = ServerMetrics(lambda: self.batcher.pending)
        self.batcher = MicroBatcher(self._classify, args.max_batch_size, args.max_wait_ms,
                                    args.max_queue, self.metrics.observe_batch)
        self._decoding: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._image_limits: ImageLimits | None = None

    def _classify(self, items: list) -> list:
        return self.classifier.classify(items, method=self.args.method)

    @property
    def ready(self) -> bool:
        return self.classifier is not None

    @property
    def info(self) -> dict:
        return {**served_model_card(self.classifier, *self.names), "method": self.args.method,
                "limits": self.limits.to_dict(), "auth": bool(self.keys)}

    @property
    def image_limits(self) -> ImageLimits:
        """``serve.max_image_pixels`` and the early downscale to the model's input size."""
        if self._image_limits is None:
            processor = getattr(self.classifier, "processor", None)
            self._image_limits = image_limits(processor, self.args.max_image_pixels,
                                              "serve.max_image_pixels")
        return self._image_limits

    def decoding(self) -> asyncio.Semaphore:
        """At most ``serve.max_decoding`` images decode at once (one per event loop: tests
        drive one app from several)."""
        loop = asyncio.get_running_loop()
        if self._decoding is None or self._decoding[0] is not loop:
            self._decoding = (loop, asyncio.Semaphore(self.args.max_decoding))
        return self._decoding[1]

    async def load(self, load: Callable[[], object]) -> None:
        """Run ``load`` in the model thread; a failure is kept for ``/ready`` and ``serve``."""
        try:
            self.classifier = await self.batcher.in_model_thread(load)
        except Exception as error:  # reported by /ready and re-raised by serve()
            log.error("the model failed to load: %s", error)  # serve() raises it in full
            self.load_error = error

    def authorize(self, authorization: str, client: str) -> str | None:
        """The digest the access log names the key by (``None`` without keys), or an error:
        401 for a missing or wrong key; 429 for a client address over its budget of wrong
        keys, checked before the key so that a guess cannot succeed while it is refused. A
        request without any key guesses nothing and costs no budget, so keyless clients
        cannot lock a keyed one out of a shared address."""
        if not self.keys:
            return None
        token = bearer_token(authorization)
        wait = self.failed_auth.wait(client) if token is not None else None
        if wait is not None:
            raise ApiError(429, "too many wrong API keys from this address", "authorization",
                           {"Retry-After": RateLimiter.retry_after(wait)})
        if not key_matches(token, self.keys):
            if token is not None:
                self.failed_auth.acquire(client)
            raise ApiError(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                           "authorization", {"WWW-Authenticate": "Bearer"})
        return hashlib.sha256(token.encode()).hexdigest()[:8]  # never the key itself

    def within_rate(self, client: str) -> None:
        """429 when this key (or address, without keys) has used up its bucket."""
        if self.limiter is None:
            return
        wait = self.limiter.acquire(client)
        if wait is not None:
            raise ApiError(429, f"rate limit of {self.limiter.rate:g} requests per second "
                           "exceeded", None, {"Retry-After": RateLimiter.retry_after(wait)})

    def require_ready(self) -> None:
        if not self.ready:
            raise ApiError(503, "the model is still loading", None, {"Retry-After": "5"})

    def require_room(self) -> None:
        """503 once ``serve.max_queue`` classify requests are admitted: requests still being
        read or decoded wait ahead of the queue, so an overload is refused before its bodies
        are parsed, not after."""
        if self.metrics.in_flight >= self.args.max_queue:
            raise ApiError(503, f"the server is busy ({self.metrics.in_flight} requests are "
                           f"being answered; the limit is {self.args.max_queue}); retry later",
                           None, {"Retry-After": QUEUE_RETRY_AFTER})


def _error(status: int, error: str, field: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.error, exc.field, exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return _error(503, f"the server is busy ({exc}); retry later", None,
                      {"Retry-After": QUEUE_RETRY_AFTER})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        status = 422 if exc.status_code == 400 else exc.status_code  # 400: malformed multipart
        return _error(status, str(exc.detail), "body" if status == 422 else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return _error(422, first.get("msg", "invalid request"), field)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error")


def create_app(classifier=None, args: ServeArgs | None = None, *,
               load: Callable[[], object] | None = None, model_name: str | None = None,
               adapter: str | None = None) -> FastAPI:
    """The HTTP app around ``classifier``, or around what ``load()`` returns once it ran.

    ``args`` (a :class:`~llavac.args.ServeArgs`) sets the method, limits, keys, queue and
    rate limit; host, port and shutdown belong to :func:`llavac.serve.serve`.
    """
    if (classifier is None) == (load is None):
        raise ValueError("give a loaded classifier or a load function, not both or neither")
    state = ServeState(classifier, args or ServeArgs(), model_name, adapter)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(state.load(load)) if load is not None else None
        yield
        if loading is not None:
            await loading  # a load still running when the server stops is waited for
        await state.batcher.aclose()

    app = FastAPI(title="llavac", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.serve, app.state.batcher = state, state.batcher
    # Outermost last: the access log and metrics see every answer; the gate answers from the
    # headers before the body limit reads a byte; the routes see a whole, bounded body.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=state.limits.max_body_bytes,
                       timeout=state.args.body_timeout)
    app.add_middleware(GateMiddleware, state=state)
    app.add_middleware(ObserveMiddleware, metrics=state.metrics)
    _install_error_handlers(app)
    for router in (open_routes, metrics_routes, model_routes):
        app.include_router(router)
    install_openapi(app, keyed=bool(state.keys))
    return app
