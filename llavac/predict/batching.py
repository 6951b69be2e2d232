"""Prompt batches for prediction: rendered, left-padded and moved to the model once.

Label scoring and greedy generation both start from the same batch, so they see exactly the
same tokens. Left padding puts every prompt's last token in the last column, where the next
token is predicted for all rows at once; the position ids count real tokens only, so a
padded row gets the positions it would have alone (predictions do not depend on the batch
size or on the other prompts in the batch).

Models with multimodal rotary positions (Qwen2-VL, Qwen2.5-VL: M-RoPE) give an image token a
time, a row and a column position, and the text after an image continues from the image's
largest position rather than from its token count. Their positions come from the model's own
``get_rope_index``, as ``generate`` computes them, so scoring and generating agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llavac.models import prompt_positions
from llavac.prompt import PromptFormat, render


@dataclass
class PromptBatch:
    """One batch of prompts, ready for ``model(**inputs)`` or ``model.generate(**inputs)``."""

    prompts: list[str]  # the rendered prompt strings (chat template + generation prompt)
    inputs: dict[str, torch.Tensor]  # processor output on the model's device, left-padded
    # (batch, length): real-token positions, 0 on padding; with M-RoPE (3, batch, length)
    position_ids: torch.Tensor

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    @property
    def next_positions(self) -> torch.Tensor:
        """``(batch,)``: the position of the first token after each prompt, one past its
        largest (the real-token count, unless M-RoPE positions ran ahead of it)."""
        largest = self.position_ids.amax(-1).reshape(-1, len(self.prompts)).amax(0)
        return largest + 1


def encode_prompts(processor, fmt: PromptFormat, images, texts: list[str], model) -> PromptBatch:
    """Render the prompt for each (image, text) pair and tokenise the batch with left padding.

    Floating-point inputs (pixel values) are cast to the model's dtype, so a bfloat16 model
    gets bfloat16 pixels.
    """
    return to_model(*processor_inputs(processor, fmt, images, texts), model)


def processor_inputs(processor, fmt: PromptFormat, images, texts: list[str]) -> tuple[list, dict]:
    """``(prompts, tensors)``: the CPU half of :func:`encode_prompts` (rendering, pixel
    preprocessing, tokenisation). Corpus prediction runs it in DataLoader workers."""
    prompts = [render(processor, fmt, text) for text in texts]
    processor.tokenizer.padding_side = "left"
    encoded = processor(images=[[image] for image in images], text=prompts, padding=True,
                        return_tensors="pt")
    encoded.pop("labels", None)  # PaliGemma's processor adds them (all ignored without a suffix)
    return prompts, dict(encoded)


def encode_pair(processor, fmt: PromptFormat, image, text: str) -> tuple[str, dict]:
    """``(prompt, tensors)`` of one pair, batch dimension 1. Corpus prediction encodes each pair
    as soon as its image is decoded, so that only one full-size image is ever held, and
    :func:`collate` joins the pairs of a batch."""
    prompts, encoded = processor_inputs(processor, fmt, [image], [text])
    return prompts[0], encoded


def collate(encoded: list[dict], pad_token_id: int) -> dict:
    """One batch from :func:`encode_pair` outputs: exactly what the processor gives for the
    whole batch at once (``tests/test_predict_corpus.py`` checks it for every tiny family).

    Token rows (2-D, as long as the pair's ``input_ids``) are padded on the left, ``input_ids``
    with the pad token and the others (attention mask, token types) with 0. Image tensors are
    padded with zeros at the end of each dimension to the batch's largest, as processors pad
    a varying number of image tiles (LLaVA-NeXT, Idefics3)."""
    length = max(pair["input_ids"].shape[1] for pair in encoded)
    batch = {}
    for key in encoded[0]:
        values = [pair[key] for pair in encoded]
        if all(value.dim() == 2 and value.shape[1] == pair["input_ids"].shape[1]
               for value, pair in zip(values, encoded, strict=True)):
            fill = pad_token_id if key == "input_ids" else 0
            values = [F.pad(value, (length - value.shape[1], 0), value=fill) for value in values]
        else:
            largest = [max(sizes) for sizes in zip(*(value.shape for value in values), strict=True)]
            values = [F.pad(value, [pad for have, want in zip(value.shape[::-1], largest[::-1],
                                                               strict=True)
                                    for pad in (0, want - have)]) for value in values]
        batch[key] = torch.cat(values)
    return batch


def to_model(prompts: list[str], encoded: dict, model, non_blocking: bool = False) -> PromptBatch:
    """The batch on the model's device and in its dtype (``non_blocking`` from pinned memory)."""
    device, dtype = model.device, model.dtype
    inputs = {
        key: value.to(device, dtype=dtype if value.is_floating_point() else None,
                      non_blocking=non_blocking)
        for key, value in encoded.items()
    }
    return PromptBatch(prompts, inputs, prompt_positions(model, inputs))


def answer_separator(processor, fmt: PromptFormat) -> str:
    """What a chat template puts between the generation prompt and the answer text.

    ``" "`` for LLaVA-1.5 (``ASSISTANT: positive``), ``""`` for Gemma-style turns. Found by
    rendering one example with and without an answer, so no template is hard-coded here.
    """
    probe = fmt.answer({slot: "neutral" for slot in fmt.slots})
    prompt = render(processor, fmt, "probe")
    full = render(processor, fmt, "probe", probe)
    if not full.startswith(prompt) or probe not in full[len(prompt):]:
        raise ValueError(
            "the chat template's prompt is not a prefix of prompt + answer, so the answer "
            "cannot be scored as a continuation of the prompt"
        )
    return full[len(prompt) : full.index(probe, len(prompt))]


def shared_prompt_ending(processor, fmt: PromptFormat) -> str:
    """The ending every rendered prompt shares: the question after the pair's text and the
    generation prompt (``... respectively. ASSISTANT:``).

    Continuations are tokenised after this ending instead of after each whole prompt (see
    :mod:`llavac.predict.scoring`); found by rendering two different texts, no template is
    hard-coded here.
    """
    first, second = render(processor, fmt, "a"), render(processor, fmt, "b c")
    n = 0
    while n < min(len(first), len(second)) and first[-1 - n] == second[-1 - n]:
        n += 1
    return first[len(first) - n :]
