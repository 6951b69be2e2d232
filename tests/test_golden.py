"""Golden outputs: the untrained tiny LLaVA (model seed 0) on one fixed pair.

The numbers pin the whole inference path at once (tiny model build, tokenizer, chat
template, prompt wording, image preprocessing, cached label scoring, greedy decoding): a
change in any of them moves them. Recorded on x86-64 with torch 2.13 in float32.
"""

from __future__ import annotations

import random

import pytest

from llavac.predict import Classifier
from llavac.synthetic import synthetic_image

GOLDEN_PROBABILITIES = {
    "text": {"negative": 0.411764, "neutral": 0.318380, "positive": 0.269856},
    "image": {"negative": 0.358365, "neutral": 0.276124, "positive": 0.365511},
    "multimodal": {"negative": 0.357355, "neutral": 0.276345, "positive": 0.366300},
}
GOLDEN_ANSWER = "cebeautiful1 ` determinetoday winning"  # untrained: unparseable, and kept


@pytest.fixture(scope="module")
def outputs():
    image = synthetic_image("positive", random.Random(0), 48)
    classifier = Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu")
    pair = [(image, "I love this great day")]
    return classifier.classify(pair, "score")[0], classifier.classify(pair, "generate")[0]


def _flat(probabilities: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"slot.label": p}``: one comparison that reports every value that moved."""
    return {f"{slot}.{label}": p for slot, labels in probabilities.items()
            for label, p in labels.items()}


def test_golden_label_probabilities(outputs):
    scored, _ = outputs
    assert _flat(scored.probabilities) == pytest.approx(_flat(GOLDEN_PROBABILITIES), abs=1e-5)
    assert (scored.text_label, scored.image_label, scored.multimodal_label) == (
        "negative", "positive", "positive")


def test_golden_generated_answer(outputs):
    _, generated = outputs
    assert generated.answer == GOLDEN_ANSWER
    assert generated.unparseable and generated.multimodal_label is None
