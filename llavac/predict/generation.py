"""Greedy generation + the strict parser: the paper's way of reading the model's answer.

The answer is decoded greedily and parsed by :meth:`llavac.prompt.PromptFormat.parse`. An
answer that is not exactly one label per slot is *unparseable*: it is kept verbatim and
counted, never mapped to the nearest label (an untrained model writes arbitrary words, and
hiding that would flatter it).
"""

from __future__ import annotations

import torch

from llavac.labels import LABELS
from llavac.predict.batching import PromptBatch
from llavac.prompt import PromptFormat

# Tokens allowed beyond the longest well-formed answer: its end token and a final period,
# which the parser tolerates. More would only let an untrained model ramble.
_SLACK_TOKENS = 2


def answer_token_budget(tokenizer, fmt: PromptFormat, separator: str) -> int:
    """``max_new_tokens`` for the longest well-formed answer of ``fmt`` in this tokenizer."""
    longest = max(
        len(tokenizer(separator + fmt.answer(dict.fromkeys(fmt.slots, label)),
                      add_special_tokens=False)["input_ids"])
        for label in LABELS
    )
    return longest + _SLACK_TOKENS


@torch.inference_mode()
def generate_answers(model, tokenizer, batch: PromptBatch, max_new_tokens: int) -> list[str]:
    """The greedily generated answer text of every prompt in ``batch`` (special tokens removed)."""
    output = model.generate(
        **batch.inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = output[:, batch.inputs["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
