"""Tiny Idefics3 and SmolVLM: SigLIP-style vision encoder + pixel-shuffle connector + Llama decoder.

Idefics3 compresses patch features by pixel shuffle (``scale_factor`` squared patches per
token): at the default sizes a 32x32 image has 16 patches and gives 4 image tokens, framed by
``<fake_token_around_image><global-img>`` and ``<fake_token_around_image>``. Image splitting is
off so every image is one global view.

SmolVLM (``HuggingFaceTB/SmolVLM-256M-Instruct`` and its siblings) *is* this architecture:
its checkpoints name ``Idefics3ForConditionalGeneration`` and ``Idefics3Processor``. What
differs is configuration, and the tiny SmolVLM keeps it: pixel shuffle by 4 (one token per
16 patches), images split into tiles of the encoder's size plus a global view (each tile
framed by its ``<row_r_col_c>`` token), and SmolLM2's ``<|im_start|>`` before the first turn.
"""

from __future__ import annotations

from transformers import Idefics3Config, Idefics3Processor, Idefics3VisionConfig, LlamaConfig

from llavac.models.templates import (
    TurnLayout,
    idefics3_layout,
    render_template_source,
    smolvlm_layout,
)
from llavac.models.tiny_parts import TinySizes, image_processor, text_kwargs, vision_kwargs
from llavac.models.tokenizer import build_tokenizer

SCALE_FACTOR = 2
SMOLVLM_SCALE_FACTOR = 4  # SmolVLM-256M / 500M: 64 tokens per 512-pixel tile
END_OF_UTTERANCE = "<end_of_utterance>"
# The processor looks these strings up as single tokens.
_LAYOUT_TOKENS = ["<fake_token_around_image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]


def _build(sizes: TinySizes, scale_factor: int, split_images: bool, layout: TurnLayout):
    """An Idefics3 model of ``(patches / scale_factor) ** 2`` tokens per view; with
    ``split_images``, images up to twice the encoder's size are cut into tiles of its size."""
    if sizes.patches_per_side % scale_factor:
        raise ValueError(f"patches per side ({sizes.patches_per_side}) must be divisible by "
                         f"the scale factor {scale_factor}")
    # A template that writes the conversation's first token (SmolVLM's) gets a tokenizer that
    # adds none; the others' tokenizer adds bos, as Llama 3's does.
    begin = [layout.begin] if layout.begin else []
    tokenizer = build_tokenizer({"image_token": "<image>"}, [*_LAYOUT_TOKENS, *begin],
                                add_bos=not begin, eos=END_OF_UTTERANCE)
    n_image_tokens = (sizes.patches_per_side // scale_factor) ** 2
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**vision_kwargs(sizes)),
        text_config=LlamaConfig(**text_kwargs(sizes, tokenizer)),
        image_token_id=tokenizer.image_token_id,
        scale_factor=scale_factor,
    )
    tile = {"longest_edge": sizes.image_size}
    images = image_processor(
        "Idefics3ImageProcessor", max_image_size=tile, do_image_splitting=split_images,
        size={"longest_edge": 2 * sizes.image_size} if split_images else tile,
    )
    template = render_template_source(layout)
    processor = Idefics3Processor(
        images, tokenizer, image_seq_len=n_image_tokens, chat_template=template
    )
    return config, processor


def build_idefics3(sizes: TinySizes):
    """Idefics3 with one global image view of ``(patches / 2) ** 2`` tokens."""
    return _build(sizes, SCALE_FACTOR, False, idefics3_layout(END_OF_UTTERANCE))


def build_smolvlm(sizes: TinySizes):
    """SmolVLM: pixel shuffle by 4 and split images (at the default sizes a 32x32 image is
    resized to 64x64: 2x2 tiles and the global view, one token each)."""
    return _build(sizes, SMOLVLM_SCALE_FACTOR, True, smolvlm_layout(END_OF_UTTERANCE))
