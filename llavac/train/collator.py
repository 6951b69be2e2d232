"""Records -> a training batch whose loss falls on the answer tokens only
(:mod:`llavac.models.answer_labels` says how the answer is located).

Each record is asked in its prompt variant with the answer its labels give. Image tokens are
never truncated: an example longer than ``max_length`` is an error naming its id, because
cutting image tokens breaks the model's image/token alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llavac.data import ImageLimits, Record, open_rgb
from llavac.data.images import DEFAULT_LIMITS
from llavac.labels import slot_labels
from llavac.models.answer_labels import answer_labelled_batch
from llavac.prompt import PromptFormat, render
from llavac.prompt.variants import draw_variant


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
        its ``fmts`` entry (default: ``fmt``)."""
        images = [[image] for image in images]  # one list per prompt: every family takes it
        batch = answer_labelled_batch(self.processor, fmts or [self.fmt] * len(ids), ids,
                                      images, texts, answers, self.prefix_lm)
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
