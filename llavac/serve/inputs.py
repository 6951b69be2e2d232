"""Turning untrusted request fields into ``(image, text)`` pairs, or a clean client error.

Everything a client can get wrong is checked here and raised as :class:`ApiError`, which the
app renders as ``{"error": ..., "field": ...}`` with a 4xx status. Nothing in this module
touches the model, so every rejection is cheap and happens before a request joins the queue.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image

from llavac.data.images import UnreadableImage, open_rgb
from llavac.serve.limits import ServeLimits


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a human ``error`` and the ``field``."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers  # e.g. Retry-After on 429 / 503, WWW-Authenticate on 401


_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


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


def decode_image(data: bytes, field: str, limits: ServeLimits) -> Image.Image:
    """An RGB image from uploaded bytes, through the project's one image opener.

    Three distinct refusals so a client knows what to fix: bytes Pillow does not recognise as
    any image format -> 415; an image larger than ``max_image_pixels`` -> 413 (checked from
    the header, before decoding); a recognised but broken or truncated image -> 422.
    """
    if not data:
        raise ApiError(422, f"{field} is empty", field)
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{field} has too many pixels", field) from None
    except Exception:  # Pillow raises several kinds for unknown bytes
        raise ApiError(
            415, f"{field} is not an image in a format the server reads (PNG, JPEG, ...)", field
        ) from None
    if width * height > limits.max_image_pixels:
        raise ApiError(
            413,
            f"{field} is {width}x{height} pixels; the limit is {limits.max_image_pixels} pixels",
            field,
        )
    try:
        return open_rgb(io.BytesIO(data))
    except UnreadableImage as error:
        cause = error.__cause__ or error
        raise ApiError(422, f"{field} could not be decoded (truncated or corrupt): {cause}",
                       field) from None


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


def json_item(item: object, limits: ServeLimits, prefix: str = "") -> tuple[Image.Image, str]:
    """``{"image_base64": ..., "text": ...}`` -> ``(image, text)``; ``prefix`` names the item."""
    if not isinstance(item, dict):
        where = prefix.rstrip(".") or "body"
        raise ApiError(422, f"{where} must be a JSON object with image_base64 and text", where)
    if "image_base64" not in item:
        raise ApiError(422, f"{prefix}image_base64 is missing", f"{prefix}image_base64")
    text = check_text(item.get("text"), f"{prefix}text", limits)
    data = decode_base64(item["image_base64"], f"{prefix}image_base64")
    return decode_image(data, f"{prefix}image_base64", limits), text
