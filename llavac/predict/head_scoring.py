"""Prediction with a head run's classification heads: one forward pass per prompt batch,
then a softmax per slot (:mod:`llavac.models.heads`).

The batch is the one label scoring starts from (left-padded, real-token positions), which
is exactly what the heads were trained on (``llavac.train.head``).
"""

from __future__ import annotations

import torch

from llavac.labels import LABELS
from llavac.models import is_prefix_lm
from llavac.models.heads import SlotHeads, head_logits
from llavac.predict.batching import PromptBatch


@torch.inference_mode()
def head_probabilities(model, heads: SlotHeads, batch: PromptBatch
                       ) -> list[dict[str, dict[str, float]]]:
    """Per row, ``{slot: {label: probability}}`` for every slot the heads were trained on."""
    positions = batch.position_ids + int(is_prefix_lm(model))  # PaliGemma's start at 1
    probs = head_logits(model, heads, batch.inputs, positions).float().softmax(-1).cpu()
    return [{slot: dict(zip(LABELS, map(float, row[k]), strict=True))
             for k, slot in enumerate(heads.slots)} for row in probs]


def check_generates(heads: SlotHeads | None, method: str) -> None:
    """A head run has no answer to generate: refuse ``generate`` in one line."""
    if heads is not None and method == "generate":
        raise ValueError("method 'generate': this model was trained with train.objective=head "
                         "and answers through its classification heads, not in text; use "
                         "method 'score'")
