"""Random-init tiny vision-language models that need no download.

``build_tiny(family, seed, **sizes)`` returns a real transformers model and processor of the
family's architecture (config-built, random weights) with an in-process tokenizer and a chat
template. They let every test and benchmark go through the exact path a hub checkpoint takes
-- processor, chat template, ``AutoModelForImageTextToText``, ``save_pretrained`` /
``from_pretrained`` -- in about a second on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from transformers import AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin

from llavac.models.tiny_gemma import build_gemma3, build_paligemma
from llavac.models.tiny_idefics3 import build_idefics3, build_smolvlm
from llavac.models.tiny_llava import build_llava, build_llava_next
from llavac.models.tiny_parts import TinySizes
from llavac.models.tiny_qwen import build_qwen2_5_vl, build_qwen2_vl

TINY_PREFIX = "tiny-"

# family -> builder(sizes) returning (config, processor)
_BUILDERS: dict[str, Callable[..., tuple]] = {
    "llava": build_llava,
    "llava-next": build_llava_next,
    "paligemma": build_paligemma,
    "gemma3": build_gemma3,
    "idefics3": build_idefics3,
    "qwen2-vl": build_qwen2_vl,
    "qwen2.5-vl": build_qwen2_5_vl,
    "smolvlm": build_smolvlm,
}
# The families whose builder also takes a real tokenizer's folder (``tokenizer=``).
_ANY_VOCABULARY = ("llava", "llava-next")

# The architecture (``config.model_type``) of a tiny family whose name does not spell it:
# the others are their model_type with dashes (``tiny-llava-next`` is ``llava_next``).
_MODEL_TYPES = {"qwen2.5-vl": "qwen2_5_vl", "smolvlm": "idefics3"}


def tiny_names() -> tuple[str, ...]:
    """The built-in names ``load_model`` accepts, e.g. ``("tiny-llava", ...)``."""
    return tuple(TINY_PREFIX + family for family in _BUILDERS)


def is_tiny_name(name: str) -> bool:
    """True when ``name`` is a built-in tiny model rather than a hub id or a path."""
    return name in tiny_names()


def tiny_model_type(name: str) -> str:
    """The ``config.model_type`` of a built-in tiny model, without building it."""
    family = name.removeprefix(TINY_PREFIX)
    return _MODEL_TYPES.get(family, family.replace("-", "_"))


def build_tiny(
    family: str,
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    tokenizer: str | None = None,
    **sizes,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build the tiny ``family`` (with or without the ``tiny-`` prefix) from ``seed``.

    The same seed gives bit-identical weights on the same device; the global RNG state is
    left untouched, so building a model never perturbs the caller's data shuffling.
    ``sizes`` override fields of :class:`TinySizes` (an unknown name raises ``TypeError``).
    ``device`` initialises the weights directly there (a 7B-shaped model never has to fit
    in CPU memory in float32); ``dtype`` likewise. ``tokenizer``, a tokenizer folder (LLaVA
    families only), replaces the toy vocabulary with a real one. The model is returned in eval
    mode.
    """
    family = family.removeprefix(TINY_PREFIX)
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; known: {', '.join(tiny_names())}")
    sizes = dataclasses.replace(TinySizes(), **sizes)
    if tokenizer is None:
        config, processor = _BUILDERS[family](sizes)
    elif family in _ANY_VOCABULARY:
        config, processor = _BUILDERS[family](sizes, tokenizer)
    else:
        raise ValueError(f"tokenizer=: the tiny {family} keeps its own vocabulary; "
                         f"{', '.join(_ANY_VOCABULARY)} take a real one")
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device:
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )
    name = TINY_PREFIX + family
    model.config.name_or_path = name
    tokenizer = processor.tokenizer
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    return model.eval(), processor
