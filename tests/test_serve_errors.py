"""Bad input: every refusal is a JSON ``{"error", "field"}`` with the right status, never a
traceback, and documented in the OpenAPI schema (status, content type and body); one failing
request never fails the requests batched with it."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_serve_schema import assert_documented

from llavac.args import ServeArgs
from llavac.serve import create_app

LIMITS = ServeArgs(max_body_mb=200_000 / 2**20, max_text_chars=50, max_batch_items=4,
                   max_image_pixels=1_000_000)


def png_bytes(size=(24, 16), noise=True) -> bytes:
    image = Image.effect_noise(size, 40).convert("RGB") if noise else Image.new("RGB", size)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (90, 40, 200)).save(buffer, fmt)
    return buffer.getvalue()


GOOD = png_bytes()
TRUNCATED = png_bytes((64, 64))[:2000]  # a PNG header and the first part of its pixels


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, LIMITS, model_name="tiny-llava")) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def schema(client) -> dict:
    return client.get("/openapi.json").json()


@pytest.fixture
def assert_error(schema):
    """``assert_error(response, status, field)``: the refusal has that status and field, the
    one error shape, no internals, and is what the schema documents."""

    def check(response, status: int, field: str | None) -> dict:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "field"}
        assert body["field"] == field
        assert isinstance(body["error"], str) and body["error"]
        assert "Traceback" not in response.text and 'File "' not in response.text
        assert_documented(schema, response)
        return body

    return check


def form(image=GOOD, text="hello", name="x.png"):
    files = {} if image is None else {"image": (name, image, "image/png")}
    if text is not None:
        files["text"] = (None, text)  # a plain form field, still sent as multipart
    return files


@pytest.mark.parametrize(
    ("files", "status", "field"),
    [
        (form(image=b"this is not an image at all"), 415, "image"),
        (form(image=TRUNCATED), 422, "image"),
        (form(image=b""), 422, "image"),
        (form(image=png_bytes((1500, 1000), noise=False)), 413, "image"),  # 1.5 M pixels
        (form(image=encoded("TIFF")), 415, "image"),
        (form(image=encoded("EPS")), 415, "image"),  # Ghostscript is never reached
        (form(image=None), 422, "image"),
        (form(text=None), 422, "text"),
        (form(text="x" * 51), 422, "text"),
        ({"image": (None, "not a file"), "text": (None, "hi")}, 422, "image"),
    ],
    ids=["not-image", "truncated", "empty", "too-many-pixels", "tiff", "eps", "no-image",
         "no-text", "text-too-long", "image-as-text-field"],
)
def test_multipart_errors(client, files, status, field, assert_error):
    assert_error(client.post("/v1/classify", files=files), status, field)


def test_text_at_the_limit_is_accepted(client):
    assert client.post("/v1/classify", files=form(text="x" * 50)).status_code == 200
    assert client.post("/v1/classify", files=form(text="")).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"image_base64": "@@not base64@@", "text": "hi"}, 422, "image_base64"),
        ({"image_base64": b64(GOOD)[:-3], "text": "hi"}, 422, "image_base64"),  # bad padding
        ({"image_base64": b64(b"plain text"), "text": "hi"}, 415, "image_base64"),
        ({"image_base64": b64(TRUNCATED), "text": "hi"}, 422, "image_base64"),
        ({"image_base64": 12345, "text": "hi"}, 422, "image_base64"),
        ({"text": "hi"}, 422, "image_base64"),
        ({"image_base64": b64(GOOD)}, 422, "text"),
        ({"image_base64": b64(GOOD), "text": ["a", "list"]}, 422, "text"),
        ({"image_base64": b64(GOOD), "text": "y" * 51}, 422, "text"),
        ([{"image_base64": b64(GOOD), "text": "hi"}], 422, "body"),
    ],
    ids=["alphabet", "padding", "not-image", "truncated", "not-string", "no-image", "no-text",
         "text-not-string", "text-too-long", "not-an-object"],
)
def test_json_errors(client, payload, status, field, assert_error):
    assert_error(client.post("/v1/classify", json=payload), status, field)


def test_body_errors(client, assert_error):
    headers = {"content-type": "application/json"}
    assert_error(client.post("/v1/classify", content=b"{not json", headers=headers), 422, "body")
    assert_error(client.post("/v1/classify", content=b"\xff\xfe", headers=headers), 422, "body")
    assert_error(
        client.post("/v1/classify", content=b"hello", headers={"content-type": "text/plain"}),
        415, "body",
    )
    assert_error(client.post("/v1/classify", content=b"hello"), 415, "body")
    no_boundary = {"content-type": "multipart/form-data"}
    assert_error(client.post("/v1/classify", content=b"--x\r\n", headers=no_boundary),
                 422, "body")
    deep = b"[" * 100_000  # the JSON parser's depth limit: a 400, never a 500
    assert_error(client.post("/v1/classify", content=deep, headers=headers), 400, "body")
    assert_error(client.post("/v1/classify/batch", content=deep, headers=headers), 400, "body")
    assert client.get("/health").status_code == 200


def test_the_pixels_of_a_whole_request_are_bounded(classifier, assert_error):
    """Four 800 x 600 images are each within 1 M pixels, together over 1.5 M: refused from
    their headers before any is decoded."""
    args = ServeArgs(max_image_pixels=1_000_000, max_request_pixels=1_500_000)
    item = {"image_base64": b64(png_bytes((800, 600), noise=False)), "text": "x"}
    with TestClient(create_app(classifier, args)) as test_client:
        body = assert_error(test_client.post("/v1/classify/batch", json=[item] * 4), 413,
                            "body")
        assert "serve.max_request_pixels" in body["error"]
        assert test_client.post("/v1/classify/batch", json=[item] * 3).status_code == 200


def test_body_over_the_limit_declared(client, assert_error):
    big = form(image=b"\x89PNG" + b"\0" * 250_000)
    body = assert_error(client.post("/v1/classify", files=big), 413, "body")
    assert "200000" in body["error"]


def test_body_over_the_limit_streamed_without_content_length(client, assert_error):
    """A chunked body carries no Content-Length: the bytes actually read are counted."""

    def chunks():
        yield b'{"image_base64": "'
        for _ in range(30):
            yield b"A" * 10_000
        yield b'", "text": "hi"}'

    response = client.post("/v1/classify", content=chunks(),
                           headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_error(response, 413, "body")
    assert client.get("/health").status_code == 200


def test_batch_errors(client, assert_error):
    item = {"image_base64": b64(GOOD), "text": "fine"}
    assert_error(client.post("/v1/classify/batch", json=[item] * 5), 413, "body")
    assert_error(client.post("/v1/classify/batch", json=[]), 422, "body")
    assert_error(client.post("/v1/classify/batch", json=item), 422, "body")
    bad = [item, {"image_base64": "%%%", "text": "x"}]
    assert_error(client.post("/v1/classify/batch", json=bad), 422, "[1].image_base64")
    assert_error(client.post("/v1/classify/batch", json=[item, "str"]), 422, "[1]")
    assert_error(client.post("/v1/classify/batch", json=[{"image_base64": b64(GOOD)}]),
                 422, "[0].text")
    assert client.post("/v1/classify/batch", json=[item] * 4).status_code == 200
    assert client.post("/v1/classify/batch", json={"items": [item]}).status_code == 200


def test_unknown_route_and_method(client, assert_error):
    assert_error(client.get("/v1/nothing"), 404, None)
    assert_error(client.get("/v1/classify"), 405, None)


class FailingClassifier:
    """Raises, with internals in the message, for any batch holding the text ``boom``."""

    def __init__(self, inner):
        self.inner, self.fmt = inner, inner.fmt

    def classify(self, items, method="score"):
        if any(text == "boom" for _, text in items):
            raise RuntimeError("secret internal state /home/model/weights.bin")
        return self.inner.classify(items, method=method)


def test_internal_error_is_json_without_internals(classifier, assert_error):
    app = create_app(FailingClassifier(classifier), model_name="tiny-llava")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/v1/classify", files=form(text="boom"))
        assert_error(response, 500, None)
        assert "secret" not in response.text and "weights" not in response.text
        assert test_client.get("/health").status_code == 200


def test_a_failing_request_does_not_fail_its_batch_neighbours(classifier):
    app = create_app(FailingClassifier(classifier), ServeArgs(max_batch_size=8, max_wait_ms=300),
                     model_name="tiny-llava")
    texts = ["one", "boom", "three", "four"]
    statuses: dict[str, int] = {}
    with TestClient(app, raise_server_exceptions=False) as test_client:
        barrier = threading.Barrier(len(texts))

        def ask(text: str) -> None:
            barrier.wait()
            statuses[text] = test_client.post("/v1/classify", files=form(text=text)).status_code

        threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert app.state.batcher.largest_batch > 1
    assert statuses == {"one": 200, "boom": 500, "three": 200, "four": 200}
