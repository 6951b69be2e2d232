"""The LLaVAC prompt: the only module that knows the question, the answer format and the parser.

The paper asks one structured question for all three labels and trains the model to answer
``text, image, multimodal`` (e.g. ``positive, neutral, positive``); training on the unimodal
labels too is the paper's point. The collator, the label scorer and the parser all ask this
module, so a prompt variant changes every stage at once.

Variants (one option, ``prompt=``):
- ``full`` (default): ask and answer ``text, image, multimodal``.
- ``multimodal-only``: the paper's ablation, ask and answer only the multimodal label.
- any other order of the three slots, e.g. ``multimodal,text,image``.

The conversation around the question (``system=``), named after the LLaVA repository's
``conv_templates`` keys:
- ``vicuna_v1`` (LLaVA-1.5's default): the ``v1`` conversation that LLaVA's
  ``finetune_task_lora.sh`` selects with ``--version v1`` (``conv_vicuna_v1``), which the paper
  trained with, rendered here from its definition rather than from a checkpoint's chat
  template: ``{system sentence} USER: <image>\n{question} ASSISTANT: {answer}</s>``, the image
  moved to the front of the question as LLaVA's ``preprocess_multimodal`` does.
- ``llava_v1``: the same conversation with ``conv_llava_v1``'s sentence ("curious human"),
  llavac 0.2's default; runs saved with it keep rendering it.
- ``none`` (other families' default): the model's own chat template, no system turn.
- any other text: the model's own chat template with that text as the system turn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from llavac.labels import LABELS, SLOTS

_SLOT_NAMES = {"text": "Text", "image": "Image", "multimodal": "Multimodal"}

# The v1 conversations' system sentences, word for word from LLaVA's llava/conversation.py.
V1_SYSTEMS = {
    "vicuna_v1": "A chat between a curious user and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. The "
                "assistant gives helpful, detailed, and polite answers to the human's questions.",
}


@dataclass(frozen=True)
class PromptFormat:
    """Which labels the prompt asks for, in the order the answer gives them, in which words
    (``instruction``, for the prompt-robustness study; None: the paper's), and the
    conversation around the question (``vicuna_v1``, ``llava_v1``, ``none`` or a system
    sentence)."""

    slots: tuple[str, ...] = SLOTS
    system: str = "none"
    # A template for the task paragraph after the pair's text: ``{labels}`` becomes
    # "negative, neutral, positive" and ``{slots}`` the asked slots in answer order
    # ("Text, Image, and Multimodal"). Only the question's words change; the answer is
    # always ``fmt.answer(...)``, so a paraphrase keeps the format a run was trained on.
    instruction: str | None = None

    @classmethod
    def from_name(cls, name: str, system: str = "none") -> PromptFormat:
        if name == "full":
            return cls(SLOTS, system)
        if name == "multimodal-only":
            return cls(("multimodal",), system)
        slots = tuple(part.strip() for part in name.split(","))
        if sorted(slots) != sorted(SLOTS):
            raise ValueError(
                f"unknown prompt variant {name!r}: use 'full', 'multimodal-only' or an order "
                f"of the three slots such as 'multimodal,text,image'"
            )
        return cls(slots, system)

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
        system = [] if self.system == "none" else [
            {"role": "system", "content": [{"type": "text", "text": self.system}]}]
        messages = [
            *system,
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

    ``fmt.system`` ``vicuna_v1`` or ``llava_v1`` renders LLaVA's v1 conversation
    (:func:`llava_v1`) instead of the chat template. A processor without a chat template
    (PaliGemma checkpoints ship none) gets the plain question after its image token, and the
    answer after a space.
    """
    if fmt.system in V1_SYSTEMS:
        return llava_v1(processor, fmt, text, answer)
    if processor.chat_template is None:
        if fmt.system != "none":
            raise ValueError("model.system: this processor has no chat template to hold a "
                             "system sentence; use none, vicuna_v1 or llava_v1")
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


def llava_v1(processor, fmt: PromptFormat, text: str, answer: str | None = None) -> str:
    """LLaVA's ``v1`` conversation (``conv_vicuna_v1``, or ``conv_llava_v1`` with its own
    sentence), re-implemented from its description.

    The system sentence (``V1_SYSTEMS[fmt.system]``) and the user turn are joined by a space,
    the turns are ``USER: `` / ``ASSISTANT:``, the answer follows a space and ends with the
    end token.
    The paper's question holds the image in place (``Image: <image>\nText: ...``); as
    LLaVA's ``preprocess_multimodal`` does, the image token is taken out (``Image: \nText``)
    and put in front of the question, followed by a newline.
    """
    image = getattr(processor, "image_token", "<image>")
    before, after = fmt.question_parts(text)
    prompt = f"{V1_SYSTEMS[fmt.system]} USER: {image}\n{before} {after} ASSISTANT:"
    return prompt if answer is None else f"{prompt} {answer}{processor.tokenizer.eos_token}"


@functools.lru_cache(maxsize=8)
def _tokenizer_adds_bos(tokenizer) -> bool:
    return tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
