"""Records -> a training batch whose loss falls on the answer tokens only.

Each example is rendered twice through the model's chat template: the prompt alone (with
the generation prompt) and the prompt with its answer. The first must be a token prefix
of the second; every token of that prefix, every image token and every pad token gets the
label -100, so the model is trained on exactly the answer (and the end token that teaches
it to stop). Image tokens are never truncated: an example longer than ``max_length`` is an
error naming its id, because cutting image tokens breaks the model's image/token alignment.

Prefix-LM models (PaliGemma) attend bidirectionally over everything whose token type is 0.
Putting the answer inside that prefix would let the positions that predict the answer see
it, so for them the answer goes through the processor's ``suffix=`` argument, which gives
it token type 1 (causal) and builds the labels itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llavac.data import ImageLimits, Record, open_rgb
from llavac.data.images import DEFAULT_LIMITS
from llavac.labels import slot_labels
from llavac.prompt import PromptFormat, render
from llavac.prompt_variants import draw_variant

IGNORE_INDEX = -100


@dataclass
class TrainCollator:
    processor: object
    fmt: PromptFormat
    prefix_lm: bool = False
    max_length: int | None = None
    # train.prompt_variants: each example asks one of these (drawn by seed and id) instead
    # of ``fmt``; empty: every example asks ``fmt``.
    variants: tuple[PromptFormat, ...] = ()
    seed: int = 0
    # data.max_image_pixels and the early downscale (llavac.models.image_limits), as every
    # stage opens images: training sees the pixels prediction and serving see.
    image_limits: ImageLimits = DEFAULT_LIMITS

    def format_for(self, record: Record) -> PromptFormat:
        return draw_variant(self.variants, self.seed, record.id) if self.variants else self.fmt

    def lengths(self, records: list[Record]) -> list[int]:
        """Each record's token count as trained, before the processor expands its image (by
        the same count for every example of a fixed-resolution model): what
        ``train.group_by_length`` arranges the batches by. No image is opened."""
        fmts = [self.format_for(record) for record in records]
        texts = [render(self.processor, fmt, record.text, fmt.answer(slot_labels(record)))
                 for fmt, record in zip(fmts, records, strict=True)]
        return [len(ids) for ids in self.processor.tokenizer(texts)["input_ids"]]

    def __call__(self, records: list[Record]) -> dict[str, torch.Tensor | bool]:
        fmts = [self.format_for(record) for record in records]
        answers = [fmt.answer(slot_labels(r)) for fmt, r in zip(fmts, records, strict=True)]
        return self.encode([record.id for record in records],
                           [open_rgb(record.image, self.image_limits) for record in records],
                           [record.text for record in records], answers, fmts)

    def encode(self, ids: list[str], images: list, texts: list[str], answers: list[str],
               fmts: list[PromptFormat] | None = None) -> dict[str, torch.Tensor | bool]:
        """The training batch of ``(id, PIL image, text, answer)`` examples, each asked in
        its ``fmts`` entry (default: ``fmt``); ``llavac prompt`` shows one through this too."""
        images = [[image] for image in images]  # one list per prompt: every family takes it
        fmts = fmts or [self.fmt] * len(ids)
        if self.prefix_lm:
            batch = self._prefix_lm_batch(fmts, texts, images, answers)
        else:
            batch = self._causal_batch(ids, fmts, texts, images, answers)
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            lengths = batch["attention_mask"].sum(1).tolist()
            too_long = [id for id, n in zip(ids, lengths, strict=True) if n > self.max_length]
            raise ValueError(
                f"examples {too_long} need more than max_length={self.max_length} tokens; "
                "image tokens are never truncated: raise max_length or shorten the texts"
            )
        # A training forward never reuses a KV cache; saying so spares the "use_cache=True is
        # incompatible with gradient checkpointing" message on every run.
        return {**batch, "use_cache": False}

    def _causal_batch(self, ids, fmts, texts, images, answers) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        prompts, fulls = [], []
        for id, fmt, text, answer in zip(ids, fmts, texts, answers, strict=True):
            prompt = render(self.processor, fmt, text)
            full = with_end_token(render(self.processor, fmt, text, answer), tokenizer)
            if not full.startswith(prompt):
                raise ValueError(
                    f"record {id}: the chat template's prompt is not a prefix of "
                    "prompt + answer, so the answer tokens cannot be located"
                )
            prompts.append(prompt)
            fulls.append(full)

        tokenizer.padding_side = "right"
        batch = self.processor(images=images, text=fulls, padding=True, return_tensors="pt")
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

    def _prefix_lm_batch(self, fmts, texts, images, answers) -> dict[str, torch.Tensor]:
        prompts = [render(self.processor, fmt, text)
                   for fmt, text in zip(fmts, texts, strict=True)]
        self.processor.tokenizer.padding_side = "right"
        batch = self.processor(
            images=images, text=prompts, suffix=answers, padding=True, return_tensors="pt"
        )
        return dict(batch)


def with_end_token(text: str, tokenizer) -> str:
    """``text`` ending with the end-of-sequence token, so the model learns to stop.

    LLaVA-1.5's own chat template ends the assistant turn with a space and no end token;
    the LLaVA repository's training appends ``</s>`` the same way.
    """
    stripped = text.rstrip()  # nothing after the end token is supervised
    return stripped if stripped.endswith(tokenizer.eos_token) else stripped + tokenizer.eos_token
