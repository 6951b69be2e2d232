"""A prompt + answer batch whose labels fall on the answer tokens only.

Each example is rendered twice through the model's chat template: the prompt alone (with
the generation prompt) and the prompt with its answer. The first must be a token prefix
of the second; every token of that prefix, every image token and every pad token gets the
label -100, so the model is trained on exactly the answer (and the end token that teaches
it to stop).

Prefix-LM models (PaliGemma) attend bidirectionally over everything whose token type is 0.
Putting the answer inside that prefix would let the positions that predict the answer see
it, so for them the answer goes through the processor's ``suffix=`` argument, which gives
it token type 1 (causal) and builds the labels itself.

Training (``llavac.train.collator``) and ``llavac prompt`` (``llavac.predict.view``) both
label answers this way, so it lives below both.
"""

from __future__ import annotations

import torch

from llavac.prompt import PromptFormat, render

IGNORE_INDEX = -100  # the label of a token that carries no loss (torch's cross-entropy default)


def answer_labelled_batch(processor, fmts: list[PromptFormat], ids: list[str], images: list,
                          texts: list[str], answers: list[str], prefix_lm: bool
                          ) -> dict[str, torch.Tensor]:
    """The right-padded batch of ``(id, [PIL image], text, answer)`` examples, each asked in
    its ``fmts`` entry, with ``labels`` on the answer tokens only."""
    processor.tokenizer.padding_side = "right"
    if prefix_lm:
        prompts = [render(processor, fmt, text) for fmt, text in zip(fmts, texts, strict=True)]
        return dict(processor(images=images, text=prompts, suffix=answers, padding=True,
                              return_tensors="pt"))
    tokenizer = processor.tokenizer
    prompts, fulls = [], []
    for id, fmt, text, answer in zip(ids, fmts, texts, answers, strict=True):
        prompt = render(processor, fmt, text)
        full = with_end_token(render(processor, fmt, text, answer), tokenizer)
        if not full.startswith(prompt):
            raise ValueError(
                f"record {id}: the chat template's prompt is not a prefix of "
                "prompt + answer, so the answer tokens cannot be located"
            )
        prompts.append(prompt)
        fulls.append(full)
    batch = processor(images=images, text=fulls, padding=True, return_tensors="pt")
    # Answer lengths from the text alone: image-token expansion happens inside the prompt,
    # so it changes where the answer starts but not how many tokens it has.
    prompt_ids = tokenizer(prompts)["input_ids"]
    full_ids = tokenizer(fulls)["input_ids"]
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    lengths = batch["attention_mask"].sum(1).tolist()
    for row, (id, p_ids, f_ids, length) in enumerate(
        zip(ids, prompt_ids, full_ids, lengths, strict=True)
    ):
        n_answer = len(f_ids) - len(p_ids)
        answer_ids = batch["input_ids"][row, length - n_answer : length]
        if f_ids[: len(p_ids)] != p_ids or answer_ids.tolist() != f_ids[len(p_ids) :]:
            raise ValueError(
                f"record {id}: the prompt's tokens are not a prefix of "
                "prompt + answer (the tokenizer merges across the boundary)"
            )
        labels[row, length - n_answer : length] = answer_ids
    batch["labels"] = labels
    return dict(batch)


def with_end_token(text: str, tokenizer) -> str:
    """``text`` ending with the end-of-sequence token, so the model learns to stop.

    LLaVA-1.5's own chat template ends the assistant turn with a space and no end token;
    the LLaVA repository's training appends ``</s>`` the same way.
    """
    stripped = text.rstrip()  # nothing after the end token is supervised
    return stripped if stripped.endswith(tokenizer.eos_token) else stripped + tokenizer.eos_token
