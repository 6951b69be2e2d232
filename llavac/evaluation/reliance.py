"""Modality reliance over a test set: how much each slot's label leans on the image and on
the text.

The paper's point is that unimodal labels help the multimodal one; this asks how a trained
model uses each modality. Every pair is scored twice more, with its image blanked and with
its text removed (:mod:`llavac.explain.occlusion`), and per slot ``metrics.json`` gets:

- ``image_shift`` / ``text_shift``: the mean total variation distance each occlusion causes
  (0: the probabilities do not move, 1: all of them move to other labels);
- ``follows_text`` / ``follows_image``: the share of pairs whose probabilities move more
  when the text is removed than when the image is blanked (and the reverse), by over
  ``FOLLOWS_MARGIN`` (0.01); the rest move about as much either way, usually not at all.
  "The multimodal label follows the text in 71 % of pairs" is ``follows_text`` 0.71;
- ``text_flips`` / ``image_flips``: the share of pairs whose label changes.

Occlusion measures against a baseline: an empty text and a blank image tend to read as
neutral, so a pair whose label is neutral moves little under either, and falls in neither
share.

So a run trained on all three slots can be set beside a multimodal-only run (the paper's
ablation) on how much each uses the image. Cost: two more scoring passes per pair, so the
figures come from at most ``eval.reliance_pairs`` pairs (a seeded sample beyond; 0: off);
``generate`` gives no probabilities and gets none. ``reliance.jsonl`` holds every measured
pair's occluded probabilities and shifts, which ``report.html`` shows per pair.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llavac.console import Progress
from llavac.data import open_rgb
from llavac.explain.occlusion import (
    Probabilities,
    follows,
    modality_variants,
    score_pairs,
    top_label,
    total_variation,
)
from llavac.models.inputs import pad_fill

SAMPLE_SEED = 0  # which pairs a sample keeps: the same pairs on every run
RELIANCE_FILE = "reliance.jsonl"
OCCLUSIONS = {"image": "image_blanked", "text": "text_removed"}


@dataclass
class PairReliance:
    """One pair's probabilities with its image blanked and its text removed, and the shifts."""

    id: str
    probabilities: Probabilities  # the whole pair's, as predicted
    image_blanked: Probabilities
    text_removed: Probabilities

    def shift(self, modality: str, slot: str) -> float:
        """Total variation distance when ``modality`` (image | text) is taken away."""
        return total_variation(self.probabilities[slot], getattr(self, OCCLUSIONS[modality])[slot])

    def flips(self, modality: str, slot: str) -> bool:
        occluded = getattr(self, OCCLUSIONS[modality])[slot]
        return top_label(self.probabilities[slot]) != top_label(occluded)

    def to_json(self) -> str:
        slots = list(self.probabilities)
        return json.dumps({
            "id": self.id,
            "shift": {modality: {slot: self.shift(modality, slot) for slot in slots}
                      for modality in OCCLUSIONS},
            "image_blanked": self.image_blanked,
            "text_removed": self.text_removed,
        }, ensure_ascii=False)


def sample_indices(n: int, max_pairs: int) -> list[int]:
    """All of ``range(n)``, or ``max_pairs`` of them drawn with ``SAMPLE_SEED``, in order."""
    if n <= max_pairs:
        return list(range(n))
    return sorted(random.Random(SAMPLE_SEED).sample(range(n), max_pairs))


def measure(classifier, records: Sequence, predictions: Sequence, batch_size: int,
            progress: bool = True) -> list[PairReliance]:
    """Score each record with its image blanked and with its text removed, ``batch_size``
    records (twice as many variants) at a time."""
    fill = pad_fill(classifier.processor)
    measured = []
    with Progress(len(records), "modality reliance", enabled=progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            variants = [variant for record in chunk
                        for variant in modality_variants(open_rgb(record.image), record.text,
                                                         fill)]
            scored = score_pairs(classifier, variants, batch_size)
            for k, record in enumerate(chunk):
                prediction = predictions[start + k]
                measured.append(PairReliance(record.id, prediction.probabilities,
                                             scored[2 * k], scored[2 * k + 1]))
            bar.update(len(chunk))
    return measured


def slot_reliance(pairs: Sequence[PairReliance], slot: str) -> dict:
    """The means and shares of one slot over ``pairs`` (see the module's docstring)."""
    image = np.array([pair.shift("image", slot) for pair in pairs])
    text = np.array([pair.shift("text", slot) for pair in pairs])
    leads = [follows(t, i) for t, i in zip(text, image, strict=True)]
    return {
        "image_shift": float(image.mean()),
        "text_shift": float(text.mean()),
        "follows_text": leads.count("text") / len(pairs),
        "follows_image": leads.count("image") / len(pairs),
        "image_flips": float(np.mean([pair.flips("image", slot) for pair in pairs])),
        "text_flips": float(np.mean([pair.flips("text", slot) for pair in pairs])),
    }


def modality_reliance(classifier, records: Sequence, predictions: Sequence, max_pairs: int,
                      batch_size: int, progress: bool = True
                      ) -> tuple[dict | None, list[PairReliance]]:
    """``(summary for metrics.json, per-pair results)``; ``(None, [])`` when switched off
    (``max_pairs`` 0) or without probabilities (``generate``)."""
    if not max_pairs or any(p.probabilities is None for p in predictions):
        return None, []
    keep = sample_indices(len(records), max_pairs)
    start = time.perf_counter()
    pairs = measure(classifier, [records[i] for i in keep], [predictions[i] for i in keep],
                    batch_size, progress)
    summary = {
        "pairs": len(keep),
        "of": len(records),
        "sample_seed": SAMPLE_SEED if len(keep) < len(records) else None,
        "seconds": round(time.perf_counter() - start, 3),  # its cost, beside metrics' own
        "slots": {slot: slot_reliance(pairs, slot) for slot in classifier.fmt.slots},
    }
    return summary, pairs


def reliance_lines(reliance: dict | None) -> list[str]:
    """The summary's modality table (nothing when reliance was not measured)."""
    if reliance is None:
        return []
    measured = (f"{reliance['pairs']} pairs" if reliance["sample_seed"] is None else
                f"a sample of {reliance['pairs']} of {reliance['of']} pairs, seed "
                f"{reliance['sample_seed']}")
    lines = ["", f"Modality reliance ({measured}): mean shift of the probabilities with the "
             "image blanked / the text removed, and which moves the label more:", "",
             "| label | image blanked | text removed | follows image | follows text |",
             "|---|---:|---:|---:|---:|"]
    for slot, v in reliance["slots"].items():
        lines.append(f"| {slot} | {v['image_shift']:.3f} | {v['text_shift']:.3f} | "
                     f"{100 * v['follows_image']:.0f} % | {100 * v['follows_text']:.0f} % |")
    return lines
