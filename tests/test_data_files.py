"""Text decoding and image opening: the two places raw release files become Python values."""

from __future__ import annotations

import pytest
from PIL import Image

from llavac.data import Record, UnreadableImage, check_images, decode_bytes, open_rgb, read_text


def test_utf8_with_and_without_bom():
    assert decode_bytes("caf\u00e9 \u2764".encode()) == ("caf\u00e9 \u2764", "utf-8")
    assert decode_bytes(b"\xef\xbb\xbfhello") == ("hello", "utf-8")


def test_gbk_punctuation_decodes_as_gb18030():
    raw = "RT @a: \u201c@b: hi\u201d \u2026".encode("gbk")
    assert decode_bytes(raw) == ("RT @a: \u201c@b: hi\u201d \u2026", "gb18030")


def test_undecodable_bytes_are_replaced_keeping_everything_else():
    text, encoding = decode_bytes(b"ok \xff tail")
    assert encoding == "replaced"
    assert text == "ok \ufffd tail"
    # Mostly GBK with one bad byte: the GB 18030 reading keeps the quotes that UTF-8 would lose.
    text, encoding = decode_bytes("\u201cquote\u201d".encode("gbk") + b" \xff")
    assert encoding == "replaced"
    assert text.startswith("\u201cquote\u201d") and text.count("\ufffd") == 1


def test_read_text_strips_surrounding_whitespace(tmp_path):
    path = tmp_path / "1.txt"
    path.write_bytes(b"\r\n  hello world \r\n\n")
    assert read_text(path) == ("hello world", "utf-8")


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "L", "P", "RGBA", "LA"])
def test_every_mode_opens_as_rgb(tmp_path, image_file, mode):
    fmt = "PNG" if mode in ("P", "RGBA", "LA") else "JPEG"
    image = open_rgb(image_file(tmp_path / f"x.{fmt.lower()}", mode, fmt))
    assert image.mode == "RGB" and image.size == (8, 6)


def test_transparency_is_laid_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert open_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (2, 2), 40000).save(path)
    assert open_rgb(path).getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256


def test_png_bytes_under_a_jpg_name_open(tmp_path, image_file):
    path = image_file(tmp_path / "really_png.jpg", "RGBA", "PNG")
    assert open_rgb(path).getpixel((0, 0)) == (200, 30, 30)


def test_truncated_non_image_and_missing_files_raise_unreadable(tmp_path, image_file):
    truncated = image_file(tmp_path / "t.jpg", size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:200])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        with pytest.raises(UnreadableImage, match=path.name):
            open_rgb(path)


def test_check_images_splits_readable_records_from_problems(tmp_path, image_file):
    good = image_file(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    records = [Record("1", "a", str(good)), Record("2", "b", str(bad))]
    readable, problems = check_images(records)
    assert [r.id for r in readable] == ["1"]
    assert [(p.id, p.file, p.reason) for p in problems] == [("2", str(bad), "unreadable_image")]
