"""Tiny LLaVA-1.5 and LLaVA-NeXT: CLIP vision tower + 2-layer MLP projector + Llama decoder.

This is the layout of llava-hf/llava-1.5-7b-hf (the model of the LLaVAC paper), so the code
paths the tests exercise on the tiny model are the ones a real run takes. With the default
sizes an image is 32x32 pixels in 8x8 patches: 16 patch features (the CLS feature is
dropped by the "default" feature-select strategy), hence 16 image tokens.

The vocabulary is the in-process toy one, or, with ``tokenizer=`` a tokenizer folder, a real
one: on the LLaMA / Vicuna vocabulary (``../shared/tokenizers/llama-spm``) the tiny model sees
the token ids of LLaVA-1.5-7B, with ``<image>`` and ``<pad>`` added as llava-hf's processor
adds them.
"""

from __future__ import annotations

from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaNextConfig,
    LlavaNextProcessor,
    LlavaProcessor,
)

from llavac.models.templates import llava_layout, render_template_source
from llavac.models.tiny_parts import TinySizes, image_processor, text_kwargs, vision_kwargs
from llavac.models.tokenizer import build_tokenizer

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"


def llava_tokenizer(folder: str):
    """The tokenizer in ``folder`` with ``<image>`` and ``<pad>`` added after its vocabulary,
    in that order, as llava-hf's LLaVA-1.5 processor has them (32000 and 32001 on LLaMA's)."""
    tokenizer = AutoTokenizer.from_pretrained(folder,
                                              extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _llava_parts(sizes: TinySizes, tokenizer: str | None = None):
    """Tokenizer (the toy one, or ``tokenizer``'s folder through :func:`llava_tokenizer`),
    chat template and the vision/text sub-configs both LLaVA variants share."""
    tokenizer = (build_tokenizer({"image_token": IMAGE_TOKEN}) if tokenizer is None
                 else llava_tokenizer(tokenizer))
    template = render_template_source(llava_layout(tokenizer.eos_token, IMAGE_TOKEN))
    vision = CLIPVisionConfig(**vision_kwargs(sizes), projection_dim=sizes.vision_hidden)
    text = LlamaConfig(**text_kwargs(sizes, tokenizer))
    common = {
        "vision_config": vision,
        "text_config": text,
        "image_token_index": tokenizer.image_token_id,
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2 if sizes.vision_layers > 1 else -1,
    }
    processor_kwargs = {
        "tokenizer": tokenizer,
        "patch_size": sizes.patch_size,
        "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1,  # CLIP's CLS feature, dropped by "default"
        "chat_template": template,
        "image_token": IMAGE_TOKEN,
    }
    return common, processor_kwargs


def _square(side: int) -> dict:
    return {"height": side, "width": side}


def build_llava(sizes: TinySizes, tokenizer: str | None = None):
    """LLaVA-1.5: one fixed-resolution image -> ``(image_size / patch_size) ** 2`` tokens."""
    common, processor_kwargs = _llava_parts(sizes, tokenizer)
    n_image_tokens = sizes.patches_per_side**2
    config = LlavaConfig(**common, image_seq_length=n_image_tokens)
    images = image_processor(
        "CLIPImageProcessor",
        size={"shortest_edge": sizes.image_size},
        crop_size=_square(sizes.image_size),
    )
    return config, LlavaProcessor(image_processor=images, **processor_kwargs)


def build_llava_next(sizes: TinySizes, tokenizer: str | None = None):
    """LLaVA-NeXT ("AnyRes"): a base view plus tiles on a grid chosen per image aspect.

    The grid pinpoints must agree between the model config and the image processor; the
    image-token count therefore depends on the image shape (36 for a square image at the
    default sizes: 16 base + 16 tile + 4 row-break tokens).
    """
    common, processor_kwargs = _llava_parts(sizes, tokenizer)
    side = sizes.image_size
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
    config = LlavaNextConfig(
        **common, image_grid_pinpoints=pinpoints, image_seq_length=sizes.patches_per_side**2
    )
    images = image_processor(
        "LlavaNextImageProcessor",
        size={"shortest_edge": side},
        crop_size=_square(side),
        image_grid_pinpoints=pinpoints,
    )
    return config, LlavaNextProcessor(image_processor=images, **processor_kwargs)
