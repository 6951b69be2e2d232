"""The routes: open ones for load balancers and the page, keyed ones for the model.

Every route reads the app's :class:`~llavac.serve.app.ServeState` from ``request.app.state``
and stays short: parsing and validation live in :mod:`llavac.serve.inputs`, queueing in
:mod:`llavac.serve.batcher`, and the checks that run before a body is looked at (key, rate,
model loaded) are dependencies, so a refused request costs no decoding.
"""

from __future__ import annotations

import json
import time
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from llavac.labels import SLOT_FIELDS
from llavac.serve.inputs import ApiError, check_text, decode_image, json_item
from llavac.serve.limits import ServeLimits

_USAGE = ("send multipart/form-data with an 'image' file and a 'text' field, or "
          "application/json with 'image_base64' and 'text'")
# The page is self-contained; the policy makes the browser refuse anything from elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


def _state(request: Request):
    return request.app.state.serve


async def require_key(request: Request) -> None:
    """401 unless the request carries one of the server's keys (when it has any)."""
    _state(request).authorize(request)


async def within_rate(request: Request) -> None:
    """503 past the request bound, 429 when this key (or address) has used up its bucket."""
    _state(request).admit(request)


async def model_ready(request: Request) -> None:
    """503 while the model is still loading: the process is up, it cannot answer yet."""
    _state(request).require_ready()


open_routes = APIRouter()
metrics_routes = APIRouter(dependencies=[Depends(require_key)])
model_routes = APIRouter(prefix="/v1", dependencies=[Depends(require_key),
                                                     Depends(within_rate),
                                                     Depends(model_ready)])


@open_routes.get("/health")
async def health(request: Request):
    """Alive: the process answers (also while the model loads and while it drains)."""
    state = _state(request)
    return {"status": "ok", "ready": state.ready, "queued": state.batcher.pending,
            "in_flight": state.metrics.in_flight, "batches": state.batcher.batches}


@open_routes.get("/ready")
async def ready(request: Request):
    """Ready: the model is loaded and warm, so a request now gets an answer."""
    state = _state(request)
    if not state.ready:
        status = "failed" if state.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503)
    return {"status": "ready", "model": state.info["model"]}


@open_routes.get("/", response_class=HTMLResponse)
async def page():
    html = resources.files("llavac.serve").joinpath("page.html").read_text("utf-8")
    return HTMLResponse(html, headers=_PAGE_HEADERS)


@metrics_routes.get("/metrics")
async def metrics(request: Request):
    return Response(generate_latest(_state(request).metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@model_routes.get("/model")
async def model(request: Request):
    return _state(request).info


@model_routes.post("/classify")
async def classify(request: Request):
    """One image and text -> the text, image and multimodal labels with probabilities."""
    state, started = _state(request), time.perf_counter()
    min_confidence = _min_confidence(request, state.args.method)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        item = await _form_item(request, state.limits)
    elif content_type == "application/json" or content_type.endswith("+json"):
        item = await run_in_threadpool(json_item, await _read_json(request), state.limits)
    else:
        raise ApiError(415, f"unsupported content type {content_type or 'none'!r}: {_USAGE}",
                       "body")
    (prediction,) = await state.batcher.submit([item])
    return {**prediction_json(prediction.abstain(min_confidence)),
            **_answer_meta(state, started)}


@model_routes.post("/classify/batch")
async def classify_batch(request: Request):
    """A JSON list of ``{image_base64, text}`` -> one prediction per item, in order."""
    state, started = _state(request), time.perf_counter()
    min_confidence = _min_confidence(request, state.args.method)
    payload = _batch_list(await _read_json(request), state.limits)
    items = [await run_in_threadpool(json_item, entry, state.limits, f"[{index}].")
             for index, entry in enumerate(payload)]
    predictions = await state.batcher.submit(items)
    return {**_answer_meta(state, started),
            "predictions": [prediction_json(p.abstain(min_confidence)) for p in predictions]}


def prediction_json(prediction) -> dict:
    """One prediction as JSON: the three labels (``None`` where the prompt has no such slot or
    a generated answer did not parse), the class probabilities per slot (``method="score"``)
    and the generated answer (``method="generate"``)."""
    return {
        **{field: prediction.label(slot) for slot, field in SLOT_FIELDS.items()},
        "probabilities": prediction.probabilities or {},
        "answer": getattr(prediction, "answer", None),
    }


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


def _answer_meta(state, started: float) -> dict:
    return {"model": state.info["model"],
            "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _batch_list(payload, limits: ServeLimits) -> list:
    if isinstance(payload, dict) and isinstance(payload.get("items"), list):
        payload = payload["items"]
    if not isinstance(payload, list):
        raise ApiError(422, "body must be a JSON list of {image_base64, text} objects", "body")
    if not payload:
        raise ApiError(422, "the batch is empty", "body")
    if len(payload) > limits.max_batch_items:
        raise ApiError(413, f"the batch has {len(payload)} items; the limit is "
                       f"{limits.max_batch_items}", "body")
    return payload


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
