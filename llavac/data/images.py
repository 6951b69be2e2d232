"""The one place images are opened: readers, ``data check``, training and prediction all call
``open_rgb``, so every stage sees the same pixels and the same errors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from llavac.data.records import Problem, Record

# The formats any stage opens: what photos on the web come as. Pillow reads dozens more
# (TIFF, EPS through Ghostscript, PSD, ...), each one more parser for untrusted bytes to
# reach; those are refused before any of their code runs. (JPEG includes MPO, the
# multi-picture JPEG of many phone cameras, which Pillow's JPEG reader opens.)
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_SHOWN_FORMATS = "PNG, JPEG, WebP, GIF, BMP"
# 4096 x 4096: every phone photo at its default size, 12 times the 336 px side LLaVA-1.5
# sees. Decoding costs 4 bytes a pixel (64 MB here), whatever the file's size on disk.
MAX_IMAGE_PIXELS = 4096 * 4096


class UnreadableImage(ValueError):
    """The file is missing, not an image, or truncated; the message names the file.

    ``reason`` is what a reader counts the skipped record under.
    """

    reason = "unreadable_image"


class ImageFormatRefused(UnreadableImage):
    """An image in a format outside ``ALLOWED_FORMATS``, named in the message."""

    reason = "format"


class NotAnImage(UnreadableImage):
    """Bytes that no image format starts with (a text file, an error page, noise)."""


class ImageTooLarge(UnreadableImage):
    """An image whose header declares more pixels than the limit; it is never decoded."""

    reason = "image_too_large"


@dataclass(frozen=True)
class ImageLimits:
    """What ``open_rgb`` accepts, and how large it keeps what it accepts.

    ``max_pixels`` (width x height, read from the header) bounds the memory of decoding;
    ``key`` is the config key that sets it, named in the error. ``short_side`` shrinks a
    larger image while it is decoded (JPEG's decoder scales by 1/2, 1/4 or 1/8 itself) until
    its shorter side is ``short_side``: every model's processor resizes far below that
    anyway (``llavac.models.image_limits`` takes it from the processor), and the decoded image
    then holds a few megabytes however large the photo. ``None`` keeps every pixel.
    """

    max_pixels: int = MAX_IMAGE_PIXELS
    short_side: int | None = None
    key: str = "data.max_image_pixels"


DEFAULT_LIMITS = ImageLimits()


def open_rgb(path: str | Path | BinaryIO, limits: ImageLimits = DEFAULT_LIMITS,
             name: str | None = None) -> Image.Image:
    """Open ``path`` (or an open binary file, e.g. an upload) fully and return it as RGB;
    errors start with ``name`` (default: the path).

    The format comes from the bytes, not the name (a PNG saved as ``.jpg`` opens), and must
    be one of ``ALLOWED_FORMATS``; the size is checked against ``limits`` before decoding.
    Every mode Pillow reads (CMYK, L, P, RGBA, 16-bit grey, ...) becomes RGB; transparency
    is laid on white, as a viewer shows it, rather than on the black that a plain ``convert``
    leaves. EXIF rotation is applied so a phone photo is seen upright. Raises
    ``UnreadableImage`` (or its kinds ``ImageFormatRefused``, ``NotAnImage``,
    ``ImageTooLarge``) instead of Pillow's assorted errors so callers can report the file and
    go on.
    """
    with _opened(path, limits, name) as opened:
        _shrink(opened, limits.short_side)
        opened.load()  # decode now: a truncated file fails here, not in a training step
        image = ImageOps.exif_transpose(opened)  # a copy: `opened` closes with the file
    return _as_rgb(image)


def image_pixels(path: str | Path | BinaryIO, limits: ImageLimits = DEFAULT_LIMITS,
                 name: str | None = None) -> int:
    """Width x height of an image, read from its header alone, after the checks ``open_rgb``
    makes before decoding (format, ``limits.max_pixels``)."""
    with _opened(path, limits, name) as opened:
        width, height = opened.size
    return width * height


@contextmanager
def _opened(path, limits: ImageLimits, name: str | None) -> Iterator[Image.Image]:
    """``path`` opened (header read, nothing decoded) by an allowed format's reader, within
    ``limits``; every failure inside, decoding included, becomes an ``UnreadableImage``."""
    name = str(path) if name is None else name
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            _check_size(image, name, limits)
            yield image
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{name}: {error}") from error
    except UnidentifiedImageError as error:
        raise _unidentified(path, name) from error
    except Exception as error:  # Pillow raises many kinds (OSError, SyntaxError, struct.error)
        raise UnreadableImage(f"{name}: {error}") from error


def _check_size(image: Image.Image, name: str, limits: ImageLimits) -> None:
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(f"{name}: {width}x{height} is {width * height} pixels; the limit "
                            f"is {limits.max_pixels} ({limits.key})")


def _shrink(image: Image.Image, short_side: int | None) -> None:
    """Scale ``image`` down in place, before it is decoded, so its shorter side is
    ``short_side``: Pillow's ``thumbnail`` lets the JPEG decoder skip the detail (draft
    mode) and reduces other formats right after decoding, before any copy is made."""
    width, height = image.size
    if short_side is None or min(width, height) <= short_side:
        return
    scale = short_side / min(width, height)
    image.thumbnail((max(1, round(width * scale)), max(1, round(height * scale))))


def _as_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):  # 16-bit grey: scale to 8 bits, do not clip at 255
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _unidentified(path, name: str) -> UnreadableImage:
    """Why no allowed format read ``path``: another format, named by Pillow's own checks of
    its first bytes (nothing of that format is parsed); a broken file of an allowed one; or
    no image at all."""
    if hasattr(path, "seek"):
        path.seek(0)
        prefix = path.read(16)
    else:
        with open(path, "rb") as file:
            prefix = file.read(16)
    Image.init()
    named = [name for name in Image.ID if _accepts(Image.OPEN[name][1], prefix)]
    if not named:
        return NotAnImage(f"{name}: not an image (the formats read are {_SHOWN_FORMATS})")
    if named[0] in ALLOWED_FORMATS:
        return UnreadableImage(f"{name}: a broken {named[0]} file (cannot identify it)")
    return ImageFormatRefused(f"{name}: a file in {named[0]} format; the formats read are "
                              f"{_SHOWN_FORMATS}")


def _accepts(accept, prefix: bytes) -> bool:
    """Whether a Pillow reader's prefix check takes ``prefix``; some fail on a short one, as
    inside ``Image.open``, which counts that as no."""
    try:
        return bool(accept and accept(prefix))
    except (SyntaxError, IndexError, TypeError, struct.error):
        return False


def check_images(
    records: list[Record], desc: str = "opening images", limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[list[Record], list[Problem]]:
    """Open every record's image fully (within ``limits``); split the records into readable
    ones and problems, each counted under its reason (``unreadable_image``, ``format``,
    ``image_too_large``).

    Pillow releases the GIL while decoding, so a few threads make checking a whole release
    noticeably faster than a plain loop.
    """

    def failure(record: Record) -> UnreadableImage | None:
        try:
            open_rgb(record.image, limits)
        except UnreadableImage as error:
            return error
        return None

    readable, problems = [], []
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = tqdm(pool.map(failure, records), total=len(records), desc=desc, disable=None)
        for record, error in zip(records, results, strict=True):
            if error is None:
                readable.append(record)
            else:
                problems.append(Problem(record.id, record.image, error.reason, str(error)))
    return readable, problems
