"""The sentiment label set, its order, and the Xu & Mao (2017) multimodal label rule.

Every module imports labels from here: the order of ``LABELS`` is the order of every
probability vector, confusion matrix and metric table the project writes.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")

# The three answer slots, and the one place that maps a slot to the field holding its label
# on records (``Record``), predictions (``Prediction``), JSONL files and the HTTP API alike.
SLOTS: tuple[str, ...] = ("text", "image", "multimodal")
SLOT_FIELDS: dict[str, str] = {slot: f"{slot}_label" for slot in SLOTS}


def slot_labels(item) -> dict[str, str | None]:
    """``{slot: label}`` of anything with ``text_label`` / ``image_label`` /
    ``multimodal_label`` attributes (a record or a prediction)."""
    return {slot: getattr(item, field) for slot, field in SLOT_FIELDS.items()}


def normalize_label(word: str) -> str:
    """Return the canonical label for ``word`` (case and surrounding space ignored).

    Raises ``ValueError`` naming the word when it is not one of ``LABELS``.
    """
    label = word.strip().lower()
    if label not in LABELS:
        raise ValueError(f"unknown label word {word!r} (expected one of {', '.join(LABELS)})")
    return label


def xu_mao_rule(text_label: str, image_label: str) -> str | None:
    """Multimodal label from the two unimodal ones (Xu & Mao 2017, MultiSentiNet).

    Equal labels -> that label; one neutral and one polar -> the polar one;
    positive with negative -> ``None`` (the pair is dropped as a conflict).
    """
    if text_label == image_label:
        return text_label
    if text_label == "neutral":
        return image_label
    if image_label == "neutral":
        return text_label
    return None
