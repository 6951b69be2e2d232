"""Chat templates for the tiny models, generated from one turn layout per family.

Real hub checkpoints ship their own template and the factory never overrides it; only the
tiny models need one. Every family's template is the same Jinja program with different turn
markers, so the properties the training code relies on hold for all of them at once:

* rendering ``[user]`` with ``add_generation_prompt=True`` gives a string prefix of rendering
  ``[user, assistant]``, and the tokenizer never merges across that boundary, so it is a
  token prefix too (answer-only labels mask exactly the prompt);
* the assistant turn ends with the tokenizer's eos token, so the model learns to stop;
* ``content`` may be a string or the list-of-parts form (``{"type": "image"}``,
  ``{"type": "text", "text": ...}``); images are rendered before the text of a turn;
* a family whose template always has a system turn (Qwen's ChatML) renders its default one
  when the conversation brings none.

The bos token is *not* part of the templates: the tiny tokenizers add it when encoding, as
Llama's does, so rendering then encoding never doubles it. A family whose template writes
its first token itself (SmolVLM's ``<|im_start|>``, ``begin``) gets a tokenizer that adds
none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnLayout:
    """The literal markers around each kind of turn."""

    user_start: str
    user_end: str
    assistant_start: str  # also the generation prompt
    assistant_end: str  # must end with the eos token
    image: str  # what one image part renders as (the processor expands it)
    answer_sep: str = ""  # between the assistant marker and the answer text
    system_start: str = ""
    system_end: str = "\n"
    begin: str = ""  # once, before the first turn (SmolVLM's ``<|im_start|>``)
    default_system: str = ""  # the system turn when the messages hold none ("": no turn)


_TEMPLATE = """\
{{ BEGIN }}
{%- if DEFAULT_SYSTEM and (messages | length == 0 or messages[0]['role'] != 'system') -%}
{{ SYSTEM_START }}{{ DEFAULT_SYSTEM }}{{ SYSTEM_END }}
{%- endif -%}
{%- for message in messages -%}
{%- set content = message['content'] -%}
{%- if content is string -%}{%- set content = [{'type': 'text', 'text': content}] -%}{%- endif -%}
{%- set parts = content | selectattr('type', 'equalto', 'text') -%}
{%- set text = parts | map(attribute='text') | join(' ') -%}
{%- if message['role'] == 'assistant' -%}
{{ ASSISTANT_START }}{{ ANSWER_SEP }}{{ text }}{{ ASSISTANT_END }}
{%- elif message['role'] == 'system' -%}
{{ SYSTEM_START }}{{ text }}{{ SYSTEM_END }}
{%- else -%}
{{ USER_START }}{%- for part in content if part['type'] == 'image' -%}{{ IMAGE }}{%- endfor -%}
{{ text }}{{ USER_END }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ ASSISTANT_START }}{%- endif -%}
"""


def render_template_source(layout: TurnLayout) -> str:
    """Return the Jinja source of the chat template for ``layout``.

    The markers are bound once at the top as JSON string literals (valid Jinja literals), so
    newlines and quotes in markers need no escaping by hand.
    """
    binds = {
        "USER_START": layout.user_start,
        "USER_END": layout.user_end,
        "ASSISTANT_START": layout.assistant_start,
        "ASSISTANT_END": layout.assistant_end,
        "ANSWER_SEP": layout.answer_sep,
        "IMAGE": layout.image,
        "SYSTEM_START": layout.system_start,
        "SYSTEM_END": layout.system_end,
        "BEGIN": layout.begin,
        "DEFAULT_SYSTEM": layout.default_system,
    }
    header = "".join(
        f"{{%- set {name} = {json.dumps(value)} -%}}\n" for name, value in binds.items()
    )
    return header + _TEMPLATE


def llava_layout(eos: str, image: str = "<image>") -> TurnLayout:
    """LLaVA-1.5 (vicuna-v1) style: ``USER: <image>\\n{text} ASSISTANT: {answer}</s>``."""
    return TurnLayout(
        user_start="USER: ",
        user_end=" ",
        assistant_start="ASSISTANT:",
        answer_sep=" ",
        assistant_end=eos,
        image=image + "\n",
        system_end=" ",
    )


def gemma_layout(eos: str, image: str) -> TurnLayout:
    """Gemma turn markers; ``eos`` is ``<end_of_turn>`` so generation stops at the turn end."""
    return TurnLayout(
        user_start="<start_of_turn>user\n",
        user_end="<end_of_turn>\n",
        assistant_start="<start_of_turn>model\n",
        assistant_end=eos + "\n",
        image=image,
    )


def idefics3_layout(eos: str = "<end_of_utterance>") -> TurnLayout:
    """Idefics3 / SmolVLM style: ``User:<image>{text}<end_of_utterance>\\nAssistant: {answer}``."""
    return TurnLayout(
        user_start="User:",
        user_end=eos + "\n",
        assistant_start="Assistant:",
        answer_sep=" ",
        assistant_end=eos + "\n",
        image="<image>",
    )


def paligemma_layout(eos: str) -> TurnLayout:
    """PaliGemma has no turns: the prompt is ``<image>{text}``, the answer follows a newline.

    PaliGemma is a prefix LM: its processor inserts bos after the images, appends ``\\n`` to
    the prompt and takes the answer as ``suffix=`` (token type 1, causal, eos appended).
    The full render puts the answer after that same newline so the token layout matches,
    but training and scoring must still pass the answer as ``suffix``: rendered into the
    text it would get token type 0 and sit inside the bidirectional prefix.
    """
    return TurnLayout(
        user_start="",
        user_end="",
        assistant_start="",
        answer_sep="\n",
        assistant_end=eos,
        image="<image>",
    )


def smolvlm_layout(eos: str = "<end_of_utterance>") -> TurnLayout:
    """SmolVLM: Idefics3's turns after one ``<|im_start|>`` (SmolLM2's turn token)."""
    return dataclasses.replace(idefics3_layout(eos), begin="<|im_start|>")


def chatml_layout(image: str, eos: str = "<|im_end|>") -> TurnLayout:
    """Qwen's ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` for every turn, and the
    system turn "You are a helpful assistant." when the conversation has none."""
    return TurnLayout(
        user_start="<|im_start|>user\n",
        user_end=eos + "\n",
        assistant_start="<|im_start|>assistant\n",
        assistant_end=eos + "\n",
        image=image,
        system_start="<|im_start|>system\n",
        system_end=eos + "\n",
        default_system="You are a helpful assistant.",
    )
