"""``llavac prompt``: one example exactly as the model sees it, the first thing to look at when
a result looks wrong.

The example goes through the code that training and prediction run: the run's (or the
family's) image mode and conversation, :func:`llavac.prompt.render`, the processor, and,
with an answer, the answer labelling training uses (:mod:`llavac.models.answer_labels`),
whose labels say which tokens carry the loss. Only the processor is loaded, never the
weights, so a 7B model's prompt shows in seconds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from PIL import Image

from llavac.args import PromptConfig
from llavac.data import open_rgb
from llavac.models import (
    apply_inputs,
    describe_image,
    is_prefix_lm,
    model_type,
    resolve_inputs,
)
from llavac.models.answer_labels import IGNORE_INDEX, answer_labelled_batch
from llavac.predict.classifier import ModelSource
from llavac.prompt import PromptFormat, render

_REPEATED_MARKER = re.compile(r"(<[^<>\s]+>)\1+")

# The image that stands in when none is given: LLaVA-1.5's input side; the token count of a
# fixed-resolution model does not depend on it.
_STAND_IN_SIDE = 336


@dataclass
class PromptView:
    """One example as the model sees it."""

    model: str
    family: str  # config.model_type
    prompt: str  # the prompt variant
    image_mode: str
    system: str
    image_processor: str  # its class: LLaVA-1.5's pad mode always takes the PIL one
    text: str  # the token ids decoded, each run of image tokens shown as <image × count>
    ids: list[int]  # the token ids themselves, image placeholders included
    tokens: int  # the whole sequence, image tokens included
    image_tokens: int
    image: dict | None  # describe_image's facts; None: no image given, a blank one stood in
    trained: list[str] | None  # with an answer: the tokens that carry the loss, in order
    trained_ids: list[int] | None  # ... their ids
    trained_text: str | None  # ... and what they decode to


def view_prompt(config: PromptConfig) -> PromptView:
    """Render ``config.prompt``'s example for ``config.model``, as training would with an
    answer and as prediction does without one."""
    args, example = config.model, config.prompt
    if not example.text:
        raise ValueError("--text: give the text of the example")
    source = ModelSource.resolve(args.name, args.adapter)
    family = model_type(source.name)
    image_mode, system = resolve_inputs(family, *source.inputs(args.image_mode, args.system))
    processor = apply_inputs(source.processor(), image_mode, system)
    fmt = PromptFormat.from_name(args.prompt or source.prompt, system)
    image = open_rgb(example.image) if example.image else Image.new(
        "RGB", (_STAND_IN_SIDE, _STAND_IN_SIDE), "grey")
    answer = _answer(fmt, example.answer)
    if answer is None:
        rendered = render(processor, fmt, example.text)
        batch = processor(images=[[image]], text=[rendered], return_tensors="pt")
    else:
        batch = answer_labelled_batch(processor, [fmt], ["example"], [[image]], [example.text],
                                      [answer], is_prefix_lm(processor))
    return PromptView(
        model=source.name, family=family, prompt=fmt.name, image_mode=image_mode, system=system,
        image_processor=type(processor.image_processor).__name__,
        image=describe_image(processor, image_mode, image) if example.image else None,
        **_encoded(processor, batch))


def _answer(fmt: PromptFormat, answer: str | None) -> str | None:
    """The answer as training writes it, or ``None``; one that does not parse is an error."""
    if answer is None:
        return None
    labels = fmt.parse(answer)
    if labels is None:
        example = fmt.answer(dict.fromkeys(fmt.slots, "neutral"))
        raise ValueError(f"--answer {answer!r}: expected one label per slot of the "
                         f"'{fmt.name}' prompt, e.g. {example!r}")
    return fmt.answer(labels)


def _encoded(processor, batch) -> dict:
    """The shown text, the token counts and the trained tokens of a one-example batch.

    The text is the token ids decoded, special tokens and the processor's image expansion
    included, so it is what the model gets rather than what was rendered. A run of one
    repeated marker token (the image features' placeholders: ``<image>`` for LLaVA,
    ``<image_soft_token>`` for Gemma3) is shown as ``<image × count>``. Image tokens are
    counted by the processor's image token, also where a tile has only one (SmolVLM).
    """
    tokenizer = processor.tokenizer
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()

    def collapse(run: re.Match) -> str:
        return f"{run.group(1)[:-1]} × {run.group(0).count(run.group(1))}>"

    text = _REPEATED_MARKER.sub(collapse, tokenizer.decode(ids))
    trained = None
    if "labels" in batch:
        labels = batch["labels"][0]
        trained = labels[labels != IGNORE_INDEX].tolist()
    return {
        "text": text,
        "ids": ids,
        "tokens": len(ids),
        "image_tokens": ids.count(processor.image_token_id),
        "trained": tokenizer.convert_ids_to_tokens(trained) if trained is not None else None,
        "trained_ids": trained,
        "trained_text": tokenizer.decode(trained) if trained is not None else None,
    }


def collapsed_ids(ids: list[int]) -> str:
    """``[1, 319, 32000 × 576, 29871, 13, ...]``: a run of one repeated id (the image's
    placeholders) as ``id × count``, as the text shows ``<image × count>``."""
    parts = []
    for id, run in itertools.groupby(ids):
        count = len(list(run))
        parts.append(f"{id} × {count}" if count > 1 else str(id))
    return "[" + ", ".join(parts) + "]"
