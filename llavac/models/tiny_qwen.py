"""Tiny Qwen2-VL and Qwen2.5-VL: a ViT whose patch merger is the projector + a Qwen2 decoder.

What sets the family apart, and what the tiny models keep:

* images keep their aspect ratio: each side is rounded to a multiple of ``patch_size *
  merge_size`` (16 pixels at the default sizes) within a pixel budget, and every 2x2 patches
  merge into one image token, so the token count depends on the image (4 for 32x32);
* the decoder's rotary positions are multimodal (M-RoPE): an image token's position has a
  time, a row and a column part, text tokens carry one position in all three, and the text
  after an image continues from the image's largest position, not from its token count;
* the chat template is ChatML, with a default system turn, and the image is
  ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor repeats ``<|image_pad|>``);
* the processor is built without its video processor (:mod:`llavac.models.processors`).

Qwen2.5-VL differs from Qwen2-VL in its vision tower (windowed attention, RMSNorm, SwiGLU).
"""

from __future__ import annotations

from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

from llavac.models.processors import Qwen2_5_VLProcessor, Qwen2VLProcessor
from llavac.models.templates import chatml_layout, render_template_source
from llavac.models.tiny_parts import TinySizes, image_processor, text_kwargs
from llavac.models.tokenizer import build_tokenizer

MERGE_SIZE = 2  # patches per side merged into one image token, as in every Qwen2-VL checkpoint
TEMPORAL_PATCH_SIZE = 2  # a still image is repeated to fill one temporal patch
_VISION_START, _VISION_END = "<|vision_start|>", "<|vision_end|>"
_SPECIAL = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}


def mrope_section(head_dim: int) -> list[int]:
    """How M-RoPE splits the rotary frequencies between time, rows and columns: the
    checkpoints' ``[16, 24, 24]`` of 64 (head_dim 128), scaled to ``head_dim / 2``."""
    half = head_dim // 2
    time = half // 4
    rows = (half - time) // 2
    return [time, rows, half - time - rows]


def _qwen_parts(sizes: TinySizes, processor_class):
    """The decoder config, the special token ids and the processor both versions share."""
    tokenizer = build_tokenizer(_SPECIAL, [_VISION_START, _VISION_END, "<|im_start|>"],
                                add_bos=False, eos="<|im_end|>")  # Qwen's tokenizer adds none
    text = text_kwargs(sizes, tokenizer)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": mrope_section(text["head_dim"])}
    token_ids = {
        "image_token_id": tokenizer.image_token_id,
        "video_token_id": tokenizer.video_token_id,
        "vision_start_token_id": tokenizer.convert_tokens_to_ids(_VISION_START),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids(_VISION_END),
    }
    cell = sizes.patch_size * MERGE_SIZE  # the pixels of one image token, per side
    images = image_processor(
        "Qwen2VLImageProcessor", patch_size=sizes.patch_size, merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        min_pixels=(2 * cell) ** 2,  # the checkpoints' 56 * 56: at least 2x2 image tokens
        max_pixels=(2 * sizes.image_size) ** 2,
    )
    image = _VISION_START + tokenizer.image_token + _VISION_END
    template = render_template_source(chatml_layout(image, tokenizer.eos_token))
    return text, token_ids, processor_class(images, tokenizer, chat_template=template)


def _vision(sizes: TinySizes) -> dict:
    """Vision arguments the two versions name alike."""
    return {
        "depth": sizes.vision_layers,
        "num_heads": sizes.vision_heads,
        "patch_size": sizes.patch_size,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }


def build_qwen2_vl(sizes: TinySizes):
    """Qwen2-VL: a ViT with LayerNorm and GELU MLPs; the merger maps to the decoder's width."""
    text, token_ids, processor = _qwen_parts(sizes, Qwen2VLProcessor)
    vision = {
        **_vision(sizes),
        "embed_dim": sizes.vision_hidden,
        "mlp_ratio": sizes.vision_intermediate // sizes.vision_hidden,
        "hidden_size": sizes.text_hidden,  # the merger's output
    }
    return Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids), processor


def build_qwen2_5_vl(sizes: TinySizes):
    """Qwen2.5-VL: windowed attention in all vision blocks but the last (full attention)."""
    text, token_ids, processor = _qwen_parts(sizes, Qwen2_5_VLProcessor)
    vision = {
        **_vision(sizes),
        "hidden_size": sizes.vision_hidden,
        "intermediate_size": sizes.vision_intermediate,
        "out_hidden_size": sizes.text_hidden,  # the merger's output
        # windows of 2x2 image tokens (the checkpoints: 112 px, 4x4 tokens of 28 px)
        "window_size": 2 * sizes.patch_size * MERGE_SIZE,
        "fullatt_block_indexes": [sizes.vision_layers - 1],
    }
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids), processor
