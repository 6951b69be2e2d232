"""The real entry point: ``python -m llavac.cli serve`` in its own process, spoken to over TCP.

This is the path in-process tests cannot cover: argument parsing, model loading at start-up,
uvicorn's HTTP parsing (chunked bodies, lying headers) and a clean stop on SIGTERM.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket

import httpx
import pytest
from PIL import Image
from serve_process import running_server

from llavac.labels import LABELS

MAX_BODY_MB = 0.5


def picture(seed: int) -> Image.Image:
    noise = Image.effect_noise((40, 32), 25 + 5 * seed).convert("RGB")
    return Image.blend(noise, Image.new("RGB", (40, 32), (40 * seed % 256, 90, 160)), 0.5)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    with running_server("tiny-llava", ["--max-body-mb", str(MAX_BODY_MB)]) as running:
        yield running
    # the context manager sent SIGTERM: a clean drain and stop is exit status 0
    assert running.process.returncode == 0, running.process.returncode


def test_server_process_classifies_like_the_library(server):
    from llavac.predict import Classifier

    assert server.get_json("/health")["status"] == "ok"
    info = server.get_json("/v1/model")
    assert info["model"] == "tiny-llava" and info["labels"] == list(LABELS)

    classifier = Classifier.from_pretrained("tiny-llava")  # same seed, same weights
    items = [(picture(seed), f"test post {seed}") for seed in range(3)]
    expected = classifier.classify(items)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for (image, text), want in zip(items, expected, strict=True):
            response = client.post(
                "/v1/classify",
                files={"image": ("p.png", png_bytes(image), "image/png")},
                data={"text": text},
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["text_label"] == want.text_label
            assert answer["image_label"] == want.image_label
            assert answer["multimodal_label"] == want.multimodal_label
            for slot, probs in want.probabilities.items():
                for label in LABELS:
                    assert answer["probabilities"][slot][label] == pytest.approx(
                        probs[label], abs=1e-5
                    )
        batch = client.post(
            "/v1/classify/batch",
            json=[{"image_base64": base64.b64encode(png_bytes(i)).decode(), "text": t}
                  for i, t in items],
        )
        assert batch.status_code == 200
        labels = [p["multimodal_label"] for p in batch.json()["predictions"]]
        assert labels == [want.multimodal_label for want in expected]


def _port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_chunked_body_over_the_limit_is_refused(server):
    """No Content-Length: the server counts the bytes as they arrive."""
    limit = int(MAX_BODY_MB * 2**20)

    def body():
        yield b'{"image_base64": "'
        for _ in range(limit // 50_000 + 2):
            yield b"A" * 50_000
        yield b'", "text": "x"}'

    connection = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=30)
    try:
        connection.request("POST", "/v1/classify", body=body(), encode_chunked=True,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        status, payload = response.status, json.loads(response.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection instead of answering 413")
    finally:
        connection.close()
    assert status == 413 and payload["field"] == "body"
    assert server.get_json("/health")["status"] == "ok"


def test_declared_length_over_the_limit_is_refused_before_the_body(server):
    """A 100 MB Content-Length is answered at once; the body is never sent."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["field"] == "body"
    assert server.get_json("/health")["status"] == "ok"


def test_garbage_bytes_do_not_hurt_the_server(server):
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=30) as sock:
        sock.sendall(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
        sock.recv(65536)  # uvicorn answers 400 or closes; either way it must survive
    assert server.get_json("/health")["status"] == "ok"
