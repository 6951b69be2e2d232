"""Images open in one place, within limits: five formats, a pixel limit read from the header,
and large pictures shrunk while they are decoded. What a reader refuses is a counted skip
with its reason (``format``, ``image_too_large``), never a crash."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from llavac.data import (
    ImageFormatRefused,
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    UnreadableImage,
    check_images,
    load_split,
    open_rgb,
)
from llavac.data.check import check_path
from llavac.models import image_limits, load_processor

REFUSED_FORMATS = ("TIFF", "EPS", "ICO", "PCX")


def encoded(fmt: str, size=(40, 30), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_the_five_formats_open(fmt):
    image = open_rgb(io.BytesIO(encoded(fmt)))
    assert image.mode == "RGB" and image.size == (40, 30)


@pytest.mark.parametrize("fmt", REFUSED_FORMATS)
def test_other_formats_are_refused_by_name_before_their_reader_runs(fmt, monkeypatch):
    """An EPS is refused without Ghostscript ever being looked for (Pillow's EPS reader
    would run it to decode); the error names the format and the reason is ``format``."""
    from PIL import EpsImagePlugin

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("the EPS reader ran")

    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    with pytest.raises(ImageFormatRefused, match=rf"upload: a file in {fmt} format; the formats "
                                                 r"read are PNG, JPEG, WebP, GIF, BMP") as error:
        open_rgb(io.BytesIO(encoded(fmt)), name="upload")
    assert error.value.reason == "format"


@pytest.mark.parametrize("data", [b"<html>an error page</html>", b"\xc3d", b""])
def test_not_an_image_and_a_broken_one_stay_unreadable(tmp_path, data):
    with pytest.raises(NotAnImage) as error:  # two bytes: too short for some format checks
        open_rgb(io.BytesIO(data), name="x")
    assert error.value.reason == "unreadable_image"
    broken = tmp_path / "b.png"
    broken.write_bytes(encoded("PNG")[:30])
    with pytest.raises(UnreadableImage, match="b.png") as error:
        open_rgb(broken)
    assert error.value.reason == "unreadable_image"


def test_the_pixel_limit_is_checked_from_the_header_and_names_its_key():
    data = encoded("PNG", size=(300, 200))
    limits = ImageLimits(max_pixels=59_999, key="serve.max_image_pixels")
    with pytest.raises(ImageTooLarge, match=r"300x200 is 60000 pixels; the limit is 59999 "
                                            r"\(serve.max_image_pixels\)") as error:
        open_rgb(io.BytesIO(data), limits)
    assert error.value.reason == "image_too_large"
    assert open_rgb(io.BytesIO(data), ImageLimits(max_pixels=60_000)).size == (300, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_shrunk_while_decoded_to_the_short_side(fmt):
    """JPEG decodes at a reduced scale (draft mode), PNG is reduced right after decoding;
    either way only the short side asked for is kept, aspect ratio intact."""
    data = encoded(fmt, size=(2000, 1000))
    image = open_rgb(io.BytesIO(data), ImageLimits(short_side=100))
    assert image.size == (200, 100)
    small = open_rgb(io.BytesIO(encoded(fmt, size=(150, 90))), ImageLimits(short_side=100))
    assert small.size == (150, 90)  # already small enough: every pixel kept


def test_the_early_downscale_follows_the_models_input_size():
    """Twice the largest side the processor makes, never below 768 px."""
    processor = load_processor("tiny-llava-next")  # 32 px tiles, up to 64 x 64
    processor.image_processor.image_grid_pinpoints = [[336, 672], [672, 336]]
    limits = image_limits(processor, 1_000_000, "data.max_image_pixels")
    assert (limits.max_pixels, limits.short_side, limits.key) == (1_000_000, 1344,
                                                                 "data.max_image_pixels")
    small = image_limits(load_processor("tiny-llava"), 1_000_000, "serve.max_image_pixels")
    assert small.short_side == 768  # 2 x 32 px is below the floor


def test_refused_images_are_skipped_and_counted_by_reason(make_release, tmp_path):
    """data check and every command that loads data (export, train, evaluate) skip them."""
    release = make_release([(str(i), "positive,positive") for i in range(1, 7)])
    (release / "data" / "2.jpg").write_bytes(encoded("TIFF"))
    (release / "data" / "3.jpg").write_bytes(encoded("EPS"))
    (release / "data" / "4.jpg").write_bytes(encoded("PNG", size=(120, 100)))
    report = check_path(release)
    assert {(p.id, p.reason) for p in report.problems} == {("2", "format"), ("3", "format")}
    split = load_split(release, procedure="none", limits=ImageLimits(max_pixels=10_000))
    assert split.manifest["skipped"] == {"format": 2, "image_too_large": 1}
    assert sorted(r.id for r in split.all) == ["1", "5", "6"]
    with pytest.raises(ValueError, match=r"format \(id 2\)"):
        load_split(release, procedure="none", strict=True)


def test_check_images_reports_the_reason_of_each_refusal(tmp_path):
    from llavac.data import Record

    paths = {"ok": encoded("PNG"), "tiff": encoded("TIFF"), "big": encoded("PNG", (90, 90))}
    records = []
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
        records.append(Record(name, "t", str(tmp_path / name)))
    readable, problems = check_images(records, limits=ImageLimits(max_pixels=5000))
    assert [r.id for r in readable] == ["ok"]
    assert [(p.id, p.reason) for p in problems] == [("tiff", "format"),
                                                    ("big", "image_too_large")]
