"""Shared pieces of the tiny model builders: sizes, sub-configs, image-processor choice.

Every tiny family is a real transformers architecture built from a config with random
weights; only the sizes shrink. The same size knobs apply to every family, so a benchmark can
grow any of them (up to a LLaVA-1.5-7B shape) without knowing the family's config classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import transformers
from transformers.utils import is_torchvision_available


@dataclass(frozen=True)
class TinySizes:
    """Size knobs shared by all tiny families (defaults build in about a second on a CPU).

    ``text_kv_heads`` defaults to ``text_heads`` (no grouped-query attention), ``vocab_size``
    to the tokenizer's length; a larger ``vocab_size`` (e.g. LLaVA-1.5's 32064) only adds
    embedding rows the tokenizer never produces, which is what a speed benchmark wants.
    :data:`LLAVA_7B_SIZES` and :data:`SMALL_SIZES` are ready-made overrides.
    """

    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 64
    image_size: int = 32
    patch_size: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int | None = None
    text_intermediate: int = 128
    vocab_size: int | None = None
    max_positions: int = 4096

    @property
    def patches_per_side(self) -> int:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        return self.image_size // self.patch_size


# CLIP ViT-L/14-336 + Llama-2-7B (Vicuna): LLaVA-1.5-7B's shape, 7.06e9 parameters and
# 576 image tokens as ``tiny-llava``. Build it on a GPU (``device="cuda"``, bf16) or on the
# meta device to inspect it; float32 on a CPU needs ~28 GB.
LLAVA_7B_SIZES: dict[str, int] = {
    "vision_hidden": 1024,
    "vision_layers": 24,
    "vision_heads": 16,
    "vision_intermediate": 4096,
    "image_size": 336,
    "patch_size": 14,
    "text_hidden": 4096,
    "text_layers": 32,
    "text_heads": 32,
    "text_intermediate": 11008,
    "vocab_size": 32064,
}

# A CPU-benchmark size: ~13.8e6 parameters and 64 image tokens as ``tiny-llava``.
SMALL_SIZES: dict[str, int] = {
    "vision_hidden": 192,
    "vision_layers": 4,
    "vision_heads": 3,
    "vision_intermediate": 768,
    "image_size": 64,
    "patch_size": 8,
    "text_hidden": 320,
    "text_layers": 4,
    "text_heads": 5,
    "text_intermediate": 1280,
    "vocab_size": 8192,
}


def vocab_for(sizes: TinySizes, tokenizer) -> int:
    """Embedding rows: the requested vocabulary, never fewer than the tokenizer's ids."""
    return max(sizes.vocab_size or 0, len(tokenizer))


def special_ids(tokenizer) -> dict[str, int]:
    """bos / eos / pad ids for a text config, so generation stops and pads correctly."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def vision_kwargs(sizes: TinySizes) -> dict:
    """CLIP- and SigLIP-style vision config arguments (the two share these names)."""
    return {
        "hidden_size": sizes.vision_hidden,
        "intermediate_size": sizes.vision_intermediate,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": sizes.image_size,
        "patch_size": sizes.patch_size,
    }


def text_kwargs(sizes: TinySizes, tokenizer) -> dict:
    """Llama- and Gemma-style decoder config arguments (the two share these names)."""
    return {
        "hidden_size": sizes.text_hidden,
        "intermediate_size": sizes.text_intermediate,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads,
        "num_key_value_heads": sizes.text_kv_heads or sizes.text_heads,
        "head_dim": sizes.text_hidden // sizes.text_heads,
        "vocab_size": vocab_for(sizes, tokenizer),
        "max_position_embeddings": sizes.max_positions,
        **special_ids(tokenizer),
    }


def image_processor(class_name: str, **kwargs):
    """Instantiate ``class_name``, choosing the PIL backend when torchvision is absent.

    transformers 5 would fall back to the PIL class anyway but warns on every build; picking
    it explicitly keeps test output clean, and a machine with torchvision gets the fast one.
    """
    if not is_torchvision_available():
        pil_name = class_name + "Pil"
        if hasattr(transformers, pil_name):
            class_name = pil_name
    return getattr(transformers, class_name)(**kwargs)
