"""The API's contract as OpenAPI: request bodies, answers and every error status, one shape.

The routes read their bodies themselves (the multipart and JSON forms of one operation, with
errors that name the field), so FastAPI cannot infer the request bodies; they are declared
here, as are the answers (pydantic models, documentation only: the routes build them) and
every status an operation can answer with, each with the one error shape ``ErrorBody``.
``/openapi.json`` is served behind the key like the API it describes.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from llavac.explain import DEFAULT_GRID
from llavac.labels import LABELS

Label = Literal[LABELS + ("uncertain",)]  # "uncertain": below ?min_confidence


class ErrorBody(BaseModel):
    """Every error answer: what is wrong, and the request field it is about."""

    error: str
    field: str | None = Field(description="the request field at fault (image, text, "
                                          "[2].image_base64, body, authorization, origin, ...)")


class Prediction(BaseModel):
    text_label: Label | None
    image_label: Label | None
    multimodal_label: Label | None
    probabilities: dict[str, dict[str, float]] = Field(
        description="per slot asked, the probability of each label (method score)")
    answer: str | None = Field(description="the generated answer (method generate)")


class ClassifyAnswer(Prediction):
    model: str | None
    latency_ms: float


class BatchAnswer(BaseModel):
    model: str | None
    latency_ms: float
    predictions: list[Prediction]


class Occluded(BaseModel):
    probabilities: dict[str, float]
    shift: float = Field(description="total variation distance from the whole pair's "
                                     "probabilities: 0 nothing moved, 1 all of it")


class Reliance(BaseModel):
    image_blanked: Occluded
    text_removed: Occluded
    follows: Literal["text", "image", "neither"]


class WordDrop(BaseModel):
    word: str
    position: int
    drop: dict[str, float] = Field(description="per slot, how much the predicted label's "
                                               "probability falls without this word")


class RegionDrops(BaseModel):
    grid: int
    canvas_size: list[int] = Field(description="width, height of the image the grid lies "
                                               "over (padded to a square for image_mode pad)")
    drop: dict[str, list[list[float]]] = Field(
        description="per slot, grid rows of grid cells: the predicted label's probability "
                    "drop with that cell occluded (positive: the cell supported the label)")


class ExplainAnswer(BaseModel):
    model: str | None
    latency_ms: float
    variants: int = Field(description="occluded variants scored: 3 + words + grid**2")
    text: str
    labels: dict[str, Literal[LABELS]]
    probabilities: dict[str, dict[str, float]]
    modality: dict[str, Reliance]
    words: list[WordDrop]
    regions: RegionDrops


class ModelInfo(BaseModel):
    model: str | None
    adapter: str | None
    prompt: str | None
    slots: list[str]
    labels: list[str]
    temperatures: dict[str, float] | None = Field(
        description="per slot, the calibration.json temperature applied; null: raw")
    family: str | None
    dtype: str | None
    device: str | None
    parameters: int | None
    method: str
    limits: dict[str, int]
    auth: bool


class Health(BaseModel):
    status: Literal["ok"]
    ready: bool
    queued: int
    in_flight: int
    batches: int


class Readiness(BaseModel):
    status: Literal["ready", "loading", "failed"]
    model: str | None = None


class JsonItem(BaseModel):
    image_base64: str = Field(description="the image's bytes (PNG, JPEG, WebP, GIF or BMP) in "
                                          "base64, optionally as a data: URL")
    text: str


_ERROR_WHY = {
    400: "malformed request: JSON nested too deeply, an invalid Content-Length",
    401: "missing or wrong API key (WWW-Authenticate: Bearer)",
    403: "a cross-origin request from a web page elsewhere",
    408: "the body did not arrive within serve.body_timeout",
    413: "the body, an image's pixels, the request's pixels, the batch or an explanation's "
         "variants are over their limit",
    415: "not an image in a format read here, or an unsupported content type",
    422: "a missing or invalid field, a truncated image, text too long, bad base64, a grid "
         "out of range",
    429: "over the key's rate, or too many wrong keys from this address (Retry-After)",
    500: "the model failed on this request",
    503: "the model is still loading, or the queue is full (Retry-After)",
}


def errors(*statuses: int) -> dict:
    """The ``responses`` entries of these error statuses, all with ``ErrorBody``."""
    return {status: {"model": ErrorBody, "description": _ERROR_WHY[status]}
            for status in statuses}


_KEYED = (401, 429)
CLASSIFY_ERRORS = errors(400, *_KEYED, 403, 408, 413, 415, 422, 500, 503)
MODEL_ERRORS = errors(*_KEYED, 503)
METRICS_ERRORS = errors(*_KEYED)
_MIN_CONFIDENCE = {"name": "min_confidence", "in": "query", "required": False,
                   "schema": {"type": "number", "minimum": 0, "maximum": 1},
                   "description": "label slots whose top probability is below this "
                                  "'uncertain' (method score)"}
_JSON_ITEM = JsonItem.model_json_schema()
CLASSIFY_BODY = {"parameters": [_MIN_CONFIDENCE], "requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image", "text"],
        "properties": {"image": {"type": "string", "format": "binary"},
                       "text": {"type": "string"}}}},
    "application/json": {"schema": _JSON_ITEM},
}}}
BATCH_BODY = {"parameters": [_MIN_CONFIDENCE], "requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [
        {"type": "array", "items": _JSON_ITEM, "minItems": 1},
        {"type": "object", "required": ["items"],
         "properties": {"items": {"type": "array", "items": _JSON_ITEM, "minItems": 1}}},
    ]}},
}}}
_GRID = {"name": "grid", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "default": DEFAULT_GRID},
         "description": "cells per side of the image's occlusion grid, at most "
                        "serve.max_explain_grid (limits in /v1/model)"}
EXPLAIN_BODY = {"parameters": [_GRID], "requestBody": CLASSIFY_BODY["requestBody"]}
METRICS_ANSWER = {200: {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}


def install_openapi(app: FastAPI, keyed: bool) -> None:
    """Make ``app.openapi()`` the schema above; with keys, every keyed operation (``/v1/*``,
    ``/metrics``) names the bearer scheme."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description="LLaVAC multimodal sentiment classifier")
            if keyed:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}}
                for path, operations in schema["paths"].items():
                    if path.startswith(("/v1/", "/metrics")):
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
