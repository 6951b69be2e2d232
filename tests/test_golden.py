"""Golden outputs: the untrained tiny LLaVA (model seed 0) on one fixed pair.

The numbers pin the whole inference path at once (tiny model build, tokenizer, chat
template, prompt wording, image preprocessing, cached label scoring, greedy decoding): a
change in any of them moves them. Recorded on x86-64 with torch 2.13 in float32.

``default`` is LLaVA-1.5's default inputs (LLaVA's ``conv_vicuna_v1`` system sentence,
padded images). The other choices keep the numbers recorded when they were the defaults, so
nothing else moved: ``llava_v1`` (``conv_llava_v1``'s "curious human" sentence, llavac 0.2's
default) and ``plain`` (the processor's images without a system sentence, llavac 0.1's
inputs). The pair's image is square, so padding leaves it as it is; the three differ by the
system sentence alone.
"""

from __future__ import annotations

import random

import pytest

from llavac.data.synthetic import synthetic_image
from llavac.predict import Classifier

GOLDEN = {
    "default": {
        "inputs": {},
        "probabilities": {
            "text": {"negative": 0.409457, "neutral": 0.330603, "positive": 0.259940},
            "image": {"negative": 0.352833, "neutral": 0.294344, "positive": 0.352823},
            "multimodal": {"negative": 0.352355, "neutral": 0.294037, "positive": 0.353609},
        },
        "labels": ("negative", "negative", "positive"),
        "answer": "SYSTEM1 `\x0bsmileourar",  # untrained: unparseable, and kept
    },
    "llava_v1": {
        "inputs": {"system": "llava_v1"},
        "probabilities": {
            "text": {"negative": 0.411102, "neutral": 0.326868, "positive": 0.262030},
            "image": {"negative": 0.353488, "neutral": 0.294809, "positive": 0.351703},
            "multimodal": {"negative": 0.353003, "neutral": 0.294497, "positive": 0.352500},
        },
        "labels": ("negative", "negative", "negative"),
        "answer": "SYSTEM1\ufffdtim:SYSTEM1",
    },
    "plain": {
        "inputs": {"image_mode": "processor", "system": "none"},
        "probabilities": {
            "text": {"negative": 0.411764, "neutral": 0.318380, "positive": 0.269856},
            "image": {"negative": 0.358365, "neutral": 0.276124, "positive": 0.365511},
            "multimodal": {"negative": 0.357355, "neutral": 0.276345, "positive": 0.366300},
        },
        "labels": ("negative", "positive", "positive"),
        "answer": "cebeautiful1 ` determinetoday winning",
    },
}


@pytest.fixture(scope="module", params=list(GOLDEN))
def outputs(request):
    golden = GOLDEN[request.param]
    image = synthetic_image("positive", random.Random(0), 48)
    classifier = Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu",
                                            **golden["inputs"])
    pair = [(image, "I love this great day")]
    return golden, classifier.classify(pair, "score")[0], classifier.classify(pair, "generate")[0]


def _flat(probabilities: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"slot.label": p}``: one comparison that reports every value that moved."""
    return {f"{slot}.{label}": p for slot, labels in probabilities.items()
            for label, p in labels.items()}


def test_golden_label_probabilities(outputs):
    golden, scored, _ = outputs
    assert _flat(scored.probabilities) == pytest.approx(_flat(golden["probabilities"]), abs=1e-5)
    assert (scored.text_label, scored.image_label, scored.multimodal_label) == golden["labels"]


def test_golden_generated_answer(outputs):
    golden, _, generated = outputs
    assert generated.answer == golden["answer"]
    assert generated.unparseable and generated.multimodal_label is None
