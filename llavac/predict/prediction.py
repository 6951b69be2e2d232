"""``Prediction``: one pair's predicted labels, as every stage after the model passes them on
and as ``--output`` files hold them (one JSON object per line)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from llavac.jsonl import write_jsonl
from llavac.labels import SLOT_FIELDS

# The label of a slot whose top probability is below ``min_confidence``: a deliberate
# non-answer. Metrics count it as wrong, as an unparseable answer; only the selective
# (accuracy-at-coverage) figures treat it as "not answered".
UNCERTAIN = "uncertain"


@dataclass
class Prediction:
    """One pair's predicted labels.

    ``score`` fills ``probabilities`` (``{slot: {label: p}}``, each slot summing to 1) and
    always gives a label for every slot the prompt asks. ``generate`` keeps the raw
    ``answer``; when it does not parse, all labels are ``None``. Slots the prompt does not ask
    (text and image for the multimodal-only prompt) are ``None`` as well. A slot abstained
    from (``min_confidence``) has the label ``"uncertain"`` and keeps its probabilities.
    """

    id: str
    text_label: str | None = None
    image_label: str | None = None
    multimodal_label: str | None = None
    probabilities: dict[str, dict[str, float]] | None = None
    answer: str | None = None
    gold: dict[str, str] | None = None  # the record's labels, set by evaluate

    def label(self, slot: str) -> str | None:
        return getattr(self, SLOT_FIELDS[slot])

    @property
    def unparseable(self) -> bool:
        """A generated answer that is not one label per slot (never true for ``score``)."""
        return self.answer is not None and self.multimodal_label is None

    @classmethod
    def from_labels(cls, id: str, labels: dict[str, str] | None, **extra) -> Prediction:
        labels = labels or {}
        return cls(id, **{field: labels.get(slot) for slot, field in SLOT_FIELDS.items()},
                   **extra)

    def abstain(self, min_confidence: float | None) -> Prediction:
        """Label ``"uncertain"`` every slot whose top probability is below ``min_confidence``
        (in place; returns ``self``). Needs probabilities, i.e. ``method="score"``."""
        if min_confidence is None:
            return self
        if self.probabilities is None:
            raise ValueError("min_confidence needs probabilities: predict with method "
                             "'score' (generate gives none)")
        for slot, probs in self.probabilities.items():
            if max(probs.values()) < min_confidence:
                setattr(self, SLOT_FIELDS[slot], UNCERTAIN)
        return self

    def to_json(self) -> str:
        """The labels always; ``probabilities`` or ``answer``, whichever the method gave, and
        ``gold`` when evaluation set it."""
        fields = asdict(self)
        for optional in ("probabilities", "answer", "gold"):
            if fields[optional] is None:
                del fields[optional]
        return json.dumps(fields, ensure_ascii=False)


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> Path:
    """One JSON object per line, in the order given."""
    return write_jsonl(predictions, path)
