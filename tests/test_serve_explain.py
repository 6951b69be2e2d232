"""``POST /v1/explain`` in-process, around a real Classifier on the built-in tiny model.

The answer must be the occlusion explanation ``llavac explain`` computes for the same pair,
its variants scored through the server's batcher; its cost is bounded before the model runs,
and it takes its place in the queue like any other request.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from fastapi.testclient import TestClient
from test_serve_api import b64, picture
from test_serve_schema import assert_documented

from llavac.args import ServeArgs
from llavac.explain import explain
from llavac.serve import create_app

TEXT = "sunny walk by the sea"
GRID = 3


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


def item(image=None, text: str = TEXT) -> dict:
    return {"image_base64": b64(image or picture(1)), "text": text}


def test_the_answer_is_the_explanation_scored_in_batches_through_the_queue(classifier):
    app = create_app(classifier, ServeArgs(max_batch_size=8), model_name="tiny-llava")
    with TestClient(app) as client:
        image = picture(1)  # its noise is drawn afresh on each call
        response = client.post(f"/v1/explain?grid={GRID}", json=item(image))
        schema = client.get("/openapi.json").json()
        metrics = client.get("/metrics").text
    assert response.status_code == 200, response.text
    assert_documented(schema, response)
    answer = response.json()
    # the same batches as the server makes: left padding moves the last digits otherwise
    direct = explain(classifier, image, TEXT, grid=GRID, batch_size=8).to_dict()
    variants = 3 + len(TEXT.split()) + GRID * GRID
    assert answer["variants"] == variants and answer["model"] == "tiny-llava"
    assert answer["labels"] == direct["labels"]
    assert [w["word"] for w in answer["words"]] == TEXT.split()
    for slot in direct["labels"]:
        for got, want in zip(answer["words"], direct["words"], strict=True):
            assert got["drop"][slot] == pytest.approx(want["drop"][slot], abs=1e-5)
        assert answer["regions"]["drop"][slot] == [
            pytest.approx(row, abs=1e-5) for row in direct["regions"]["drop"][slot]]
        for occlusion in ("image_blanked", "text_removed"):
            assert answer["modality"][slot][occlusion]["shift"] == pytest.approx(
                direct["modality"][slot][occlusion]["shift"], abs=1e-5)
    batcher = app.state.batcher
    assert batcher.largest_batch == 8 and batcher.batches == math.ceil(variants / 8)
    assert 'llavac_requests_total{route="/v1/explain",status="200"} 1.0' in metrics


def test_the_cost_is_bounded_before_the_model_runs(classifier):
    args = ServeArgs(max_explain_grid=4, max_explain_variants=32, max_batch_items=8,
                     max_queue=32)
    with TestClient(create_app(classifier, args)) as client:
        refused = {grid: client.post(f"/v1/explain?grid={grid}", json=item())
                   for grid in ("0", "5", "two")}
        too_long = client.post("/v1/explain?grid=4", json=item(text="word " * 14))
        batches = client.app.state.batcher.batches
    for response in refused.values():
        assert response.status_code == 422 and response.json()["field"] == "grid"
    # 3 + 14 words + 16 cells = 33 forward passes, one over the limit
    assert too_long.status_code == 413 and too_long.json()["field"] == "text"
    assert "33 forward passes" in too_long.json()["error"]
    assert batches == 0
    with TestClient(create_app(classifier, ServeArgs(method="generate"))) as client:
        generating = client.post("/v1/explain", json=item())
    assert generating.status_code == 422 and "probabilities" in generating.json()["error"]


class HeldClassifier:
    """A real classifier whose model calls wait until the test releases them."""

    def __init__(self, inner):
        self.inner = inner
        self.fmt, self.processor, self.source = inner.fmt, inner.processor, inner.source
        self.started, self.release = threading.Event(), threading.Event()

    def classify(self, items, method="score"):
        self.started.set()
        self.release.wait(timeout=60)
        return self.inner.classify(items, method=method)


def test_an_explanation_takes_its_place_in_the_queue_and_a_second_one_is_answered_too(
        classifier):
    held = HeldClassifier(classifier)
    # 3 + 5 words + 4 cells = 12 variants: the model holds 4, 8 wait; a batch request of 5
    # more would make 13 waiting, past max_queue
    args = ServeArgs(max_batch_size=4, max_queue=12, max_batch_items=8)
    app = create_app(held, args)
    answers: dict = {}

    def explain_in_background(name: str, image) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.update(
            {name: client.post("/v1/explain?grid=2", json=item(image))}))
        thread.start()
        return thread

    with TestClient(app) as client:
        first = explain_in_background("first", picture(1))
        assert held.started.wait(timeout=60)
        deadline = time.monotonic() + 30
        while app.state.batcher.pending < 8:
            assert time.monotonic() < deadline, "the explanation's variants never queued"
            time.sleep(0.01)
        crowded = client.post("/v1/classify/batch", json=[item(picture(3))] * 5)
        second = explain_in_background("second", picture(2))
        held.release.set()
        for thread in (first, second):
            thread.join(timeout=60)
    assert crowded.status_code == 503 and crowded.headers["retry-after"]
    assert [answers[name].status_code for name in ("first", "second")] == [200, 200]
    assert answers["first"].json()["variants"] == 12


def test_a_wide_image_is_explained_on_a_canvas_no_larger_than_the_early_downscale(classifier):
    """LLaVA pads to a square of the longer side: unbounded, every occluded copy of a
    panorama would be that square. The longer side is shrunk to the early downscale's."""
    wide = picture(4, size=(1600, 100))
    with TestClient(create_app(classifier)) as client:
        side = client.app.state.serve.image_limits.short_side
        response = client.post("/v1/explain?grid=1", json=item(wide, "wide"))
    assert response.status_code == 200, response.text
    assert response.json()["regions"]["canvas_size"] == [side, side] and side < 1600
