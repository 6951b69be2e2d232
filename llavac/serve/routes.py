"""The routes: open ones for load balancers and the page, keyed ones for the model.

Every route reads the app's :class:`~llavac.serve.app.ServeState` from ``request.app.state``
and stays short: parsing and validation live in :mod:`llavac.serve.inputs`, queueing in
:mod:`llavac.serve.batcher`; the checks that need no body (origin, key, rate, model loaded,
queue room) ran before the body was read (:mod:`llavac.serve.gate`). What each route takes
and answers is declared for the OpenAPI schema (:mod:`llavac.serve.schema`).
"""

from __future__ import annotations

import json
import time
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from llavac.labels import SLOT_FIELDS
from llavac.serve.errors import ApiError
from llavac.serve.explanations import explain_grid, explain_upload
from llavac.serve.inputs import Upload, check_text, classify_uploads, json_upload
from llavac.serve.limits import ServeLimits
from llavac.serve.schema import (
    BATCH_BODY,
    CLASSIFY_BODY,
    CLASSIFY_ERRORS,
    EXPLAIN_BODY,
    METRICS_ANSWER,
    METRICS_ERRORS,
    MODEL_ERRORS,
    BatchAnswer,
    ClassifyAnswer,
    ExplainAnswer,
    Health,
    ModelInfo,
    Readiness,
)

_USAGE = ("send multipart/form-data with an 'image' file and a 'text' field, or "
          "application/json with 'image_base64' and 'text'")
# The page loads its script and style from this server only, runs nothing inline and may
# not be framed (clickjacking): the browser refuses everything else.
_PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                "form-action 'none'; frame-ancestors 'none'")
_PAGE_FILES = {"/": ("page.html", "text/html; charset=utf-8"),
               "/page.js": ("page.js", "text/javascript; charset=utf-8"),
               "/page.css": ("page.css", "text/css; charset=utf-8")}


def _state(request: Request):
    return request.app.state.serve


open_routes = APIRouter()
metrics_routes = APIRouter()
model_routes = APIRouter(prefix="/v1")


@open_routes.get("/health", response_model=Health)
async def health(request: Request):
    """Alive: the process answers (also while the model loads and while it drains)."""
    state = _state(request)
    return {"status": "ok", "ready": state.ready, "queued": state.batcher.pending,
            "in_flight": state.metrics.in_flight, "batches": state.batcher.batches}


@open_routes.get("/ready", response_model=Readiness,
                 responses={503: {"model": Readiness, "description": "loading or failed"}})
async def ready(request: Request):
    """Ready: the model is loaded and warm, so a request now gets an answer."""
    state = _state(request)
    if not state.ready:
        status = "failed" if state.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503)
    return {"status": "ready", "model": state.info["model"]}


def _page_file(path: str) -> Response:
    name, media_type = _PAGE_FILES[path]
    text = resources.files("llavac.serve").joinpath(name).read_text("utf-8")
    return Response(text, media_type=media_type,
                    headers={"Content-Security-Policy": _PAGE_POLICY})


async def page(request: Request) -> Response:
    """The page to try the classifier by hand, its script and its style (the UI, so they are
    left out of the API's schema)."""
    return _page_file(request.url.path)


for _path in _PAGE_FILES:
    open_routes.add_api_route(_path, page, methods=["GET"], include_in_schema=False)


@metrics_routes.get("/metrics", response_class=Response, responses={
    **METRICS_ANSWER, **METRICS_ERRORS})
async def metrics(request: Request):
    """The server's Prometheus metrics."""
    return Response(generate_latest(_state(request).metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@model_routes.get("/model", response_model=ModelInfo, responses=MODEL_ERRORS)
async def model(request: Request):
    """The model, prompt, labels, calibration and limits the server answers with."""
    return _state(request).info


@model_routes.post("/classify", response_model=ClassifyAnswer, responses=CLASSIFY_ERRORS,
                   openapi_extra=CLASSIFY_BODY)
async def classify(request: Request):
    """One image and text -> the text, image and multimodal labels with probabilities."""
    state, started = _state(request), time.perf_counter()
    min_confidence = _min_confidence(request, state.args.method)
    (prediction,) = await classify_uploads([await _one_upload(request, state.limits)], state)
    return {**prediction_json(prediction.abstain(min_confidence)),
            **_answer_meta(state, started)}


@model_routes.post("/classify/batch", response_model=BatchAnswer, responses=CLASSIFY_ERRORS,
                   openapi_extra=BATCH_BODY)
async def classify_batch(request: Request):
    """A JSON list of ``{image_base64, text}`` -> one prediction per item, in order."""
    state, started = _state(request), time.perf_counter()
    min_confidence = _min_confidence(request, state.args.method)
    payload = _batch_list(await _read_json(request), state.limits)
    uploads = [await run_in_threadpool(json_upload, entry, state.limits, f"[{index}].")
               for index, entry in enumerate(payload)]
    predictions = await classify_uploads(uploads, state)
    return {**_answer_meta(state, started),
            "predictions": [prediction_json(p.abstain(min_confidence)) for p in predictions]}


@model_routes.post("/explain", response_model=ExplainAnswer, responses=CLASSIFY_ERRORS,
                   openapi_extra=EXPLAIN_BODY)
async def explain(request: Request):
    """One image and text (as for ``/classify``) -> what drove each label: the shift from
    blanking the image and from removing the text, each word's and each grid cell's
    weight. Costs ``3 + words + grid**2`` forward passes (:mod:`llavac.serve.explanations`)."""
    state, started = _state(request), time.perf_counter()
    grid = explain_grid(request.query_params.get("grid"), state.limits)
    answer = await explain_upload(await _one_upload(request, state.limits), grid, state)
    return {**answer, **_answer_meta(state, started)}


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


async def _one_upload(request: Request, limits: ServeLimits) -> Upload:
    """The image and text of a multipart form or a JSON object."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _form_upload(request, limits)
    if content_type == "application/json" or content_type.endswith("+json"):
        return await run_in_threadpool(json_upload, await _read_json(request), limits)
    raise ApiError(415, f"unsupported content type {content_type or 'none'!r}: {_USAGE}",
                   "body")


async def _read_json(request: Request):
    body = await request.body()
    try:
        return await run_in_threadpool(json.loads, body)
    except RecursionError:  # e.g. 100,000 nested '[': the parser's depth limit, not a fault
        raise ApiError(400, "body is JSON nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(422, f"body is not valid JSON: {error}", "body") from None


async def _form_upload(request: Request, limits: ServeLimits) -> Upload:
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
        return Upload(await upload.read(), text, "image")
    finally:
        await form.close()
