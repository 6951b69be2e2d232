"""Turning untrusted request fields into ``(image, text)`` pairs, or a clean client error.

Everything a client can get wrong is checked here and raised as :class:`ApiError`, which the
app renders as ``{"error": ..., "field": ...}`` with a 4xx status. Nothing in this module
touches the model, so every rejection is cheap and happens before a request joins the queue.

Images cost memory when decoded, not when sent: a 100 kB PNG can declare 40 megapixels. So a
request's images are first read as headers only (format and size, :func:`image_pixels`), and
the request is refused if one image or all of them together have too many pixels; only then
are they decoded, a few at a time across the server (``serve.max_decoding``), each shrunk
while it is decoded to what the model can use (``open_rgb`` with the server's limits), and
the memory of large ones is handed back once they are done with.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image
from starlette.concurrency import run_in_threadpool

from llavac.data.images import (
    ImageFormatRefused,
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    UnreadableImage,
    image_pixels,
    open_rgb,
)
from llavac.predict.loader import release_memory
from llavac.serve.errors import ApiError
from llavac.serve.limits import ServeLimits

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
# Pillow decodes into 16 MB blocks that glibc keeps for reuse after they are freed, in one
# heap per thread: without handing them back, a request of large images left the server
# hundreds of MB larger for good. From this many decoded pixels (16 MB) on, a request
# returns them (malloc_trim) once its images are decoded and again once it is answered.
RELEASE_AFTER_PIXELS = 4 * 2**20


@dataclass
class Upload:
    """One item of a request, read but not decoded: the image's bytes and its text."""

    data: bytes
    text: str
    field: str  # where the image came from, e.g. "image" or "[3].image_base64"


def decode_base64(value: object, field: str) -> bytes:
    """The bytes of a base64 string; a ``data:image/...;base64,`` prefix is accepted.

    Strict (``validate=True``): a string with characters outside the alphabet is refused
    rather than silently decoded to different bytes.
    """
    if not isinstance(value, str):
        raise ApiError(422, f"{field} must be a base64 string", field)
    value = _DATA_URL.sub("", value.strip(), count=1)
    value = "".join(value.split())  # line-wrapped base64 (MIME style) is still base64
    if not value:
        raise ApiError(422, f"{field} is empty", field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(422, f"{field} is not valid base64: {error}", field) from None


def _refusal(error: UnreadableImage, field: str) -> ApiError:
    """The status a client can act on: 415 not an image (or a format not read here), 413 too
    many pixels, 422 a recognised but broken or truncated image."""
    if isinstance(error, (ImageFormatRefused, NotAnImage)):
        return ApiError(415, str(error), field)
    if isinstance(error, ImageTooLarge):
        return ApiError(413, str(error), field)
    return ApiError(422, f"{error} (truncated or corrupt)", field)


def upload_pixels(upload: Upload, limits: ImageLimits) -> int:
    """Width x height from the image's header, after the format and size checks."""
    if not upload.data:
        raise ApiError(422, f"{upload.field} is empty", upload.field)
    try:
        return image_pixels(io.BytesIO(upload.data), limits, upload.field)
    except UnreadableImage as error:
        raise _refusal(error, upload.field) from None


def decode_upload(upload: Upload, limits: ImageLimits) -> Image.Image:
    try:
        return open_rgb(io.BytesIO(upload.data), limits, upload.field)
    except UnreadableImage as error:
        raise _refusal(error, upload.field) from None


async def classify_uploads(uploads: list[Upload], state) -> list:
    """The predictions of one request's uploads: decoded, queued and classified. Once they
    are answered, the memory that large images took is handed back to the system."""
    pairs, pixels = await decode_uploads(uploads, state)
    try:
        return await state.batcher.submit(pairs)
    finally:
        pairs.clear()
        if pixels >= RELEASE_AFTER_PIXELS:
            await run_in_threadpool(release_memory)


async def decode_uploads(uploads: list[Upload], state) -> tuple[list[tuple], int]:
    """The ``(image, text)`` pairs of one request and its images' pixels: every header
    checked first (one image, then all together against ``serve.max_request_pixels``), then
    each image decoded under the server's decoding semaphore."""
    limits, total = state.image_limits, 0
    for upload in uploads:
        total += await run_in_threadpool(upload_pixels, upload, limits)
    budget = state.limits.max_request_pixels
    if total > budget:
        raise ApiError(413, f"the request's images have {total} pixels together; the limit is "
                       f"{budget} (serve.max_request_pixels)", "body")
    pairs = []
    for upload in uploads:
        async with state.decoding():
            image = await run_in_threadpool(decode_upload, upload, limits)
        pairs.append((image, upload.text))
    if total >= RELEASE_AFTER_PIXELS:  # the full-size decodes are gone: give their pages back
        await run_in_threadpool(release_memory)
    return pairs, total


def check_text(value: object, field: str, limits: ServeLimits) -> str:
    """The text field as a string within the length limit (empty text is allowed)."""
    if value is None:
        raise ApiError(422, f"{field} is missing", field)
    if not isinstance(value, str):
        raise ApiError(422, f"{field} must be a string", field)
    if len(value) > limits.max_text_chars:
        raise ApiError(
            422,
            f"{field} has {len(value)} characters; the limit is {limits.max_text_chars}",
            field,
        )
    return value


def json_upload(item: object, limits: ServeLimits, prefix: str = "") -> Upload:
    """``{"image_base64": ..., "text": ...}`` -> an :class:`Upload`; ``prefix`` names the item."""
    if not isinstance(item, dict):
        where = prefix.rstrip(".") or "body"
        raise ApiError(422, f"{where} must be a JSON object with image_base64 and text", where)
    if "image_base64" not in item:
        raise ApiError(422, f"{prefix}image_base64 is missing", f"{prefix}image_base64")
    text = check_text(item.get("text"), f"{prefix}text", limits)
    field = f"{prefix}image_base64"
    return Upload(decode_base64(item["image_base64"], field), text, field)
