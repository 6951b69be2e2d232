"""The LLaVAC prompt: the only module that knows the question, the answer format and the parser.

The paper asks one structured question for all three labels and trains the model to answer
``text, image, multimodal`` (e.g. ``positive, neutral, positive``); training on the unimodal
labels too is the paper's point. The collator, the label scorer and the parser all ask this
module, so a prompt variant changes every stage at once.

Variants (one option, ``prompt=``):
- ``full`` (default): ask and answer ``text, image, multimodal``.
- ``multimodal-only``: the paper's ablation, ask and answer only the multimodal label.
- any other order of the three slots, e.g. ``multimodal,text,image``.

The question is rendered through each model's own chat template, so the image placeholder
and the turn markers are that model's (``USER: <image> ... ASSISTANT:`` for LLaVA-1.5).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from llavac.labels import LABELS, SLOTS

_SLOT_NAMES = {"text": "Text", "image": "Image", "multimodal": "Multimodal"}


@dataclass(frozen=True)
class PromptFormat:
    """Which labels the prompt asks for, in the order the answer gives them, and in which
    words (``instruction``, for the prompt-robustness study; None: the paper's)."""

    slots: tuple[str, ...] = SLOTS
    # A template for the task paragraph after the pair's text: ``{labels}`` becomes
    # "negative, neutral, positive" and ``{slots}`` the asked slots in answer order
    # ("Text, Image, and Multimodal"). Only the question's words change; the answer is
    # always ``fmt.answer(...)``, so a paraphrase keeps the format a run was trained on.
    instruction: str | None = None

    @classmethod
    def from_name(cls, name: str) -> PromptFormat:
        if name == "full":
            return cls(SLOTS)
        if name == "multimodal-only":
            return cls(("multimodal",))
        slots = tuple(part.strip() for part in name.split(","))
        if sorted(slots) != sorted(SLOTS):
            raise ValueError(
                f"unknown prompt variant {name!r}: use 'full', 'multimodal-only' or an order "
                f"of the three slots such as 'multimodal,text,image'"
            )
        return cls(slots)

    @property
    def name(self) -> str:
        if self.slots == SLOTS:
            return "full"
        if self.slots == ("multimodal",):
            return "multimodal-only"
        return ",".join(self.slots)

    # -- the question ---------------------------------------------------------------------

    def question_parts(self, text: str) -> tuple[str, str]:
        """The user turn's text before and after the image placeholder."""
        text = text.strip()  # as the readers store it, so served and trained prompts match
        before = "Consider the following Image and Text.\nImage:"
        choices = ", ".join(LABELS)
        if self.instruction is not None:
            task = self.instruction.format(labels=choices, slots=self._slot_list())
        elif self.slots == ("multimodal",):
            task = (
                f"Jointly analyze the Image and Text and classify their multimodal sentiment "
                f"label ({choices}).\nProvide a short answer with 1 label for the Multimodal label."
            )
        else:
            names = [_SLOT_NAMES[slot] for slot in self.slots]
            task = (
                f"Classify the sentiment labels ({choices}) for the Image and Text labels, "
                "separately.\nFinally, jointly analyze and classify the multimodal label for "
                "both Image and Text.\nProvide a short answer with 3 labels for "
                f"{names[0]}, {names[1]}, and {names[2]} labels, respectively."
            )
        return before, f"\nText: {text}\n{task}"

    def _slot_list(self) -> str:
        names = [_SLOT_NAMES[slot] for slot in self.slots]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])}, and {names[-1]}"

    def conversation(self, text: str, answer: str | None = None) -> list[dict]:
        """The chat messages (Hugging Face format) for one example, with the answer if given."""
        before, after = self.question_parts(text)
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": before},
                    {"type": "image"},
                    {"type": "text", "text": after},
                ],
            }
        ]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    # -- the answer -----------------------------------------------------------------------

    def answer(self, labels: dict[str, str]) -> str:
        """``{"text": .., "image": .., "multimodal": ..}`` -> ``"positive, neutral, positive"``."""
        return ", ".join(labels[slot] for slot in self.slots)

    def parse(self, answer: str) -> dict[str, str] | None:
        """The labels of a generated answer, or ``None`` when it is not exactly one label per slot.

        Strict on purpose: an answer outside the label set is unparseable and must be counted
        as such, never mapped to the nearest label. Case, surrounding space and one final
        period are tolerated.
        """
        words = [word.strip().lower() for word in answer.strip().removesuffix(".").split(",")]
        if len(words) != len(self.slots) or any(word not in LABELS for word in words):
            return None
        return dict(zip(self.slots, words, strict=True))


def render(processor, fmt: PromptFormat, text: str, answer: str | None = None) -> str:
    """The model's input string for one example, through the processor's own chat template.

    Without an answer, the generation prompt is added (the text the model continues from);
    with one, the assistant turn holds it. The first is a string prefix of the second for
    every template the project ships and for LLaVA-1.5's; the collator checks it.

    A processor without a chat template (PaliGemma checkpoints ship none) gets the plain
    question after its image token, and the answer after a space.
    """
    if processor.chat_template is None:
        before, after = fmt.question_parts(text)
        prompt = f"{getattr(processor, 'image_token', '<image>')}{before}{after}"
        return prompt if answer is None else f"{prompt} {answer}"
    rendered = processor.apply_chat_template(
        fmt.conversation(text, answer), add_generation_prompt=answer is None, tokenize=False
    )
    # A template that writes the BOS token itself (Gemma's does) would get a second one from
    # a tokenizer that adds it too.
    bos = processor.tokenizer.bos_token
    if bos and rendered.startswith(bos) and _tokenizer_adds_bos(processor.tokenizer):
        rendered = rendered[len(bos):]
    return rendered


@functools.lru_cache(maxsize=8)
def _tokenizer_adds_bos(tokenizer) -> bool:
    return tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
