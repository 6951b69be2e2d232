"""The HTTP API in-process, around a real Classifier on the built-in tiny model.

The answers must be exactly what ``classifier.classify`` returns when called directly: the
server adds transport, validation and batching, never a different prediction.
"""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from llavac.args import ServeArgs
from llavac.labels import LABELS
from llavac.serve import create_app

SLOTS = ("text", "image", "multimodal")


def picture(seed: int, size=(40, 32)) -> Image.Image:
    """A distinct RGB image per seed (colour and noise), so predictions differ between inputs."""
    noise = Image.effect_noise(size, 20 + 7 * seed).convert("RGB")
    tint = Image.new("RGB", size, ((53 * seed) % 256, (101 * seed) % 256, (31 * seed) % 256))
    return Image.blend(noise, tint, 0.6)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")  # lossless: the server decodes exactly these pixels
    return buffer.getvalue()


def b64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode()


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, model_name="tiny-llava")) as test_client:
        yield test_client


def assert_same_prediction(answer: dict, expected) -> None:
    """API answer == direct prediction: labels exactly, probabilities to float precision."""
    assert answer["text_label"] == expected.text_label
    assert answer["image_label"] == expected.image_label
    assert answer["multimodal_label"] == expected.multimodal_label
    assert set(answer["probabilities"]) == set(expected.probabilities)
    for slot, probs in expected.probabilities.items():
        assert list(answer["probabilities"][slot]) == list(LABELS)
        for label in LABELS:
            assert answer["probabilities"][slot][label] == pytest.approx(probs[label], abs=1e-5)


def test_health_and_served_model_card(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["model"] == "tiny-llava"
    assert info["adapter"] is None
    assert info["prompt"] == "full"
    assert info["labels"] == list(LABELS)
    assert info["slots"] == list(SLOTS)
    assert info["limits"]["max_body_bytes"] == 10 * 1024 * 1024
    assert info["family"] == "llava" and info["parameters"] > 0 and info["dtype"]


def test_page_is_self_contained_runs_nothing_inline_and_cannot_be_framed(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    html = response.text
    assert "<script>" not in html and "<style>" not in html and " style=" not in html
    assert 'src="/page.js"' in html and 'href="/page.css"' in html
    script, style = client.get("/page.js"), client.get("/page.css")
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    for text in (html, script.text, style.text):
        for ref in ('src="http', "src='http", 'href="http', "@import", "url(http", "//cdn",
                    ".innerHTML"):
            assert ref not in text
    assert 'fetch("/v1/classify"' in script.text  # the page talks to this server only


def test_classify_multipart_matches_direct_call(client, classifier):
    image, text = picture(1), "What a wonderful day at the beach!"
    response = client.post(
        "/v1/classify",
        files={"image": ("beach.png", png_bytes(image), "image/png")},
        data={"text": text},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    (expected,) = classifier.classify([(image, text)])
    assert_same_prediction(answer, expected)
    assert answer["model"] == "tiny-llava"
    assert answer["latency_ms"] > 0
    for slot in SLOTS:
        assert answer[f"{slot}_label"] in LABELS
        assert sum(answer["probabilities"][slot].values()) == pytest.approx(1.0, abs=1e-4)


def test_classify_json_matches_direct_call(client, classifier):
    image, text = picture(2), "terrible service, never again"
    plain = client.post("/v1/classify", json={"image_base64": b64(image), "text": text})
    data_url = client.post(
        "/v1/classify",
        json={"image_base64": "data:image/png;base64," + b64(image), "text": text},
    )
    assert plain.status_code == data_url.status_code == 200
    (expected,) = classifier.classify([(image, text)])
    assert_same_prediction(plain.json(), expected)
    assert_same_prediction(data_url.json(), expected)


def test_batch_keeps_order_and_matches_direct_call(client, classifier):
    items = [(picture(seed), f"post number {seed} " + "!" * seed) for seed in range(5)]
    response = client.post(
        "/v1/classify/batch", json=[{"image_base64": b64(i), "text": t} for i, t in items]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-llava" and body["latency_ms"] > 0
    assert len(body["predictions"]) == len(items)
    for answer, expected in zip(body["predictions"], classifier.classify(items), strict=True):
        assert_same_prediction(answer, expected)


def test_concurrent_requests_are_batched_and_get_their_own_answers(classifier):
    """Requests that arrive together share model calls, yet each gets its own prediction."""
    items = [(picture(seed), f"message {seed}: " + "so good " * seed) for seed in range(12)]
    expected = [classifier.classify([item])[0] for item in items]  # one by one, no batching
    app = create_app(classifier, ServeArgs(max_batch_size=8, max_wait_ms=300),
                     model_name="tiny-llava")
    answers: dict[int, dict] = {}
    with TestClient(app) as test_client:
        barrier = threading.Barrier(len(items))

        def ask(index: int) -> None:
            image, text = items[index]
            barrier.wait()
            response = test_client.post(
                "/v1/classify", json={"image_base64": b64(image), "text": text}
            )
            answers[index] = response.json() if response.status_code == 200 else response.text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(items))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    batcher = app.state.batcher
    assert batcher.largest_batch > 1, "concurrent requests were not grouped"
    assert batcher.batches < len(items)
    for index, want in enumerate(expected):
        assert_same_prediction(answers[index], want)


class BlockedClassifier:
    """A real classifier whose model calls wait until the test releases them."""

    def __init__(self, inner):
        self.inner, self.fmt = inner, inner.fmt
        self.started, self.release = threading.Event(), threading.Event()

    def classify(self, items, method="score"):
        self.started.set()
        self.release.wait(timeout=60)
        return self.inner.classify(items, method=method)


def test_health_answers_while_the_model_is_busy(classifier):
    blocked = BlockedClassifier(classifier)
    app = create_app(blocked, model_name="tiny-llava")
    with TestClient(app) as test_client:
        worker = threading.Thread(
            target=test_client.post,
            args=("/v1/classify",),
            kwargs={"json": {"image_base64": b64(picture(3)), "text": "slow"}},
        )
        worker.start()
        assert blocked.started.wait(timeout=60)  # the model thread is now inside classify
        started = time.perf_counter()
        health = test_client.get("/health")
        elapsed = time.perf_counter() - started
        blocked.release.set()
        worker.join(timeout=60)
    assert health.status_code == 200 and health.json()["in_flight"] == 1
    assert elapsed < 0.5, f"/health took {elapsed:.2f} s while the model was busy"


def test_only_loopback_counts_as_local():
    from llavac.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
