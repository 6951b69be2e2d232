"""The head objective (``train.objective=head``): cross-entropy on the three labels of each
trained slot, from one linear layer per slot on the last prompt token's final hidden state
(:mod:`llavac.models.heads`).

The input is exactly what prediction feeds the model: the prompt alone, with its generation
prompt, left-padded, with the positions prediction gives it, so the hidden state a head is
trained on is the one it reads when predicting. The answer is never in the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llavac.data import Record, open_rgb
from llavac.labels import LABELS, slot_labels
from llavac.models import is_prefix_lm, prompt_positions
from llavac.models.answer_labels import IGNORE_INDEX
from llavac.models.heads import HEADS_ATTR, head_logits
from llavac.prompt import render
from llavac.train.collator import TrainCollator

TARGETS = "slot_targets"  # the batch key of the label indices, (batch, slots)


@dataclass
class HeadCollator(TrainCollator):
    """Records -> prompt-only batches with each slot's label index: one column per head
    (the prompt's slots), ``IGNORE_INDEX`` in the columns of slots not trained
    (``train.slots``), whose heads then stay as initialised."""

    trained: tuple[str, ...] = ()  # train.slots, or every slot of the prompt

    def __post_init__(self):
        unasked = [slot for slot in self.trained if slot not in self.fmt.slots]
        if unasked:
            raise ValueError(f"train.slots: the '{self.fmt.name}' prompt does not ask "
                             f"{', '.join(unasked)}, so it has no head for it")

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor | bool]:
        prompts = [render(self.processor, self.format_for(record), record.text)
                   for record in records]
        images = [[open_rgb(record.image, self.image_limits)] for record in records]
        self.processor.tokenizer.padding_side = "left"  # every prompt ends in the last column
        batch = dict(self.processor(images=images, text=prompts, padding=True,
                                    return_tensors="pt"))
        batch.pop("labels", None)  # PaliGemma's processor adds them
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            raise ValueError(f"a prompt of records {[r.id for r in records]} needs more than "
                             f"max_length={self.max_length} tokens: raise max_length")
        batch[TARGETS] = torch.tensor([
            [LABELS.index(slot_labels(record)[slot]) if slot in self.trained else IGNORE_INDEX
             for slot in self.fmt.slots] for record in records])
        return {**batch, "use_cache": False}


class HeadLoss:
    """A Trainer mixin: the loss is the heads' mean cross-entropy over the batch's trained
    slots, a per-batch mean that the Trainer divides by the accumulation steps."""

    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        targets = inputs.pop(TARGETS)
        inputs.pop("use_cache", None)
        unwrapped = self.accelerator.unwrap_model(model)
        positions = prompt_positions(unwrapped, inputs) + int(is_prefix_lm(unwrapped))
        heads = getattr(unwrapped.get_base_model(), HEADS_ATTR)
        logits = head_logits(model, heads, inputs, positions)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE_INDEX)
        return (loss, {"logits": logits}) if return_outputs else loss
