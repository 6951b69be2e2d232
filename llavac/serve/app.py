"""The FastAPI app around one already-loaded :class:`~llavac.predict.Classifier`.

``create_app`` takes the classifier rather than a model name so tests, notebooks and
``serve()`` share one code path and a model is loaded exactly once per process. Every
answer, including every error, is JSON of a fixed shape; a client never sees a traceback.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from llavac.labels import LABELS, SLOT_FIELDS
from llavac.serve.batcher import MicroBatcher
from llavac.serve.inputs import (
    ApiError,
    ServeLimits,
    check_text,
    decode_image,
    json_item,
)
from llavac.serve.limits import BodyLimitMiddleware

log = logging.getLogger(__name__)

_USAGE = ("send multipart/form-data with an 'image' file and a 'text' field, or "
          "application/json with 'image_base64' and 'text'")
# The page is self-contained; the policy makes the browser refuse anything from elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


def model_info(classifier, model_name: str | None = None, adapter: str | None = None) -> dict:
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


def prediction_json(prediction) -> dict:
    """One prediction as JSON: the three labels (``None`` where the prompt has no such slot or
    a generated answer did not parse), the class probabilities per slot (``method="score"``)
    and the generated answer (``method="generate"``)."""
    return {
        **{field: prediction.label(slot) for slot, field in SLOT_FIELDS.items()},
        "probabilities": prediction.probabilities or {},
        "answer": getattr(prediction, "answer", None),
    }


def _error(status: int, error: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "field": field}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.error, exc.field)

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


def _min_confidence(request: Request, method: str) -> float | None:
    """The optional ``?min_confidence=P`` query parameter: a slot whose (calibrated) top
    probability is below P comes back labelled ``"uncertain"``, probabilities kept."""
    value = request.query_params.get("min_confidence")
    if value is None:
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0 <= threshold <= 1:  # also NaN
        raise ApiError(422, f"min_confidence must be a probability in [0, 1], got {value!r}",
                       "min_confidence")
    if method != "score":
        raise ApiError(422, "min_confidence needs probabilities: the server runs method "
                       f"{method!r}", "min_confidence")
    return threshold


async def _read_json(request: Request):
    body = await request.body()
    try:
        return await run_in_threadpool(json.loads, body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(422, f"body is not valid JSON: {error}", "body") from None


async def _form_item(request: Request, limits: ServeLimits):
    form = await request.form(max_files=4, max_fields=16, max_part_size=limits.max_body_bytes)
    try:
        upload, text = form.get("image"), form.get("text")
        if upload is None:
            raise ApiError(422, "image is missing (a file field named 'image')", "image")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "image must be a file upload, not a text field", "image")
        if isinstance(text, UploadFile):
            raise ApiError(422, "text must be a text field, not a file", "text")
        text = check_text(text, "text", limits)
        data = await upload.read()
    finally:
        await form.close()
    return await run_in_threadpool(decode_image, data, "image", limits), text


def create_app(
    classifier,
    limits: ServeLimits | None = None,
    *,
    model_name: str | None = None,
    adapter: str | None = None,
    method: str = "score",
    max_batch_size: int = 8,
    max_wait_ms: float = 2.0,
) -> FastAPI:
    """The HTTP app around ``classifier``; nothing is loaded here.

    ``method`` is passed to ``classifier.classify``; ``max_batch_size`` / ``max_wait_ms``
    shape the micro-batching queue (see :mod:`llavac.serve.batcher`).
    """
    limits = limits or ServeLimits()
    batcher = MicroBatcher(
        lambda items: classifier.classify(items, method=method), max_batch_size, max_wait_ms
    )
    info = {**model_info(classifier, model_name, adapter), "method": method,
            "limits": limits.to_dict()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.aclose()

    app = FastAPI(title="llavac", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.classifier, app.state.batcher, app.state.limits = classifier, batcher, limits
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes)
    _install_error_handlers(app)

    def answer(predictions: list, started: float, min_confidence: float | None) -> dict:
        return {"model": info["model"], "latency_ms": round((time.perf_counter() - started)
                                                            * 1000, 2),
                "predictions": [prediction_json(p.abstain(min_confidence))
                                for p in predictions]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": info["model"], "queued": batcher.pending,
                "batches": batcher.batches}

    @app.get("/v1/model")
    async def model():
        return info

    @app.post("/v1/classify")
    async def classify(request: Request):
        """One image and text -> the text, image and multimodal labels with probabilities."""
        started = time.perf_counter()
        min_confidence = _min_confidence(request, method)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            item = await _form_item(request, limits)
        elif content_type == "application/json" or content_type.endswith("+json"):
            item = await run_in_threadpool(json_item, await _read_json(request), limits)
        else:
            raise ApiError(415, f"unsupported content type {content_type or 'none'!r}: {_USAGE}",
                           "body")
        result = answer(await batcher.submit([item]), started, min_confidence)
        return {**result.pop("predictions")[0], **result}

    @app.post("/v1/classify/batch")
    async def classify_batch(request: Request):
        """A JSON list of ``{image_base64, text}`` -> one prediction per item, in order."""
        started = time.perf_counter()
        min_confidence = _min_confidence(request, method)
        payload = await _read_json(request)
        if isinstance(payload, dict) and isinstance(payload.get("items"), list):
            payload = payload["items"]
        if not isinstance(payload, list):
            raise ApiError(422, "body must be a JSON list of {image_base64, text} objects", "body")
        if not payload:
            raise ApiError(422, "the batch is empty", "body")
        if len(payload) > limits.max_batch_items:
            raise ApiError(413, f"the batch has {len(payload)} items; the limit is "
                           f"{limits.max_batch_items}", "body")
        items = [await run_in_threadpool(json_item, entry, limits, f"[{index}].")
                 for index, entry in enumerate(payload)]
        return answer(await batcher.submit(items), started, min_confidence)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        html = resources.files("llavac.serve").joinpath("page.html").read_text("utf-8")
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    return app
