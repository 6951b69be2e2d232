"""The one place images are opened: readers, ``data check``, training and prediction all call
``open_rgb``, so every stage sees the same pixels and the same errors.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps
from tqdm import tqdm

from llavac.data.records import Problem, Record


class UnreadableImage(ValueError):
    """The file is missing, not an image, or truncated; the message names the file."""


def open_rgb(path: str | Path | BinaryIO) -> Image.Image:
    """Open ``path`` (or an open binary file, e.g. an upload) fully and return it as RGB.

    The format comes from the bytes, not the name (a PNG saved as ``.jpg`` opens). Every mode
    Pillow reads (CMYK, L, P, RGBA, 16-bit grey, ...) becomes RGB; transparency is laid on
    white, as a viewer shows it, rather than on the black that a plain ``convert`` leaves. EXIF
    rotation is applied so a phone photo is seen upright. Raises ``UnreadableImage`` instead of
    Pillow's assorted errors so callers can report the file and go on.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not in a training step
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16-bit grey: scale to 8 bits, do not clip at 255
                image = image.convert("I").point(lambda value: value / 256).convert("L")
            if image.mode == "P":
                image = image.convert("RGBA")
            if image.mode in ("RGBA", "LA", "PA"):
                background = Image.new("RGB", image.size, "white")
                background.paste(image, mask=image.getchannel("A"))
                return background
            return image.convert("RGB")
    except Exception as error:  # Pillow raises many kinds (OSError, SyntaxError, struct.error)
        raise UnreadableImage(f"{path}: {error}") from error


def check_images(
    records: list[Record], desc: str = "opening images"
) -> tuple[list[Record], list[Problem]]:
    """Open every record's image fully; split the records into readable ones and problems.

    Pillow releases the GIL while decoding, so a few threads make checking a whole release
    noticeably faster than a plain loop.
    """

    def failure(record: Record) -> str | None:
        try:
            open_rgb(record.image)
        except UnreadableImage as error:
            return str(error)
        return None

    readable, problems = [], []
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = tqdm(pool.map(failure, records), total=len(records), desc=desc, disable=None)
        for record, error in zip(records, results, strict=True):
            if error is None:
                readable.append(record)
            else:
                problems.append(Problem(record.id, record.image, "unreadable_image", error))
    return readable, problems
