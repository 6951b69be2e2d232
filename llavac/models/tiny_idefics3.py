"""Tiny Idefics3: SigLIP-style vision encoder + pixel-shuffle connector + Llama decoder.

Idefics3 (and SmolVLM, its smaller sibling) compresses patch features by pixel shuffle
(``scale_factor`` squared patches per token): at the default sizes a 32x32 image has 16
patches and gives 4 image tokens, framed by ``<fake_token_around_image><global-img>`` and
``<fake_token_around_image>``. Image splitting is off so every image is one global view.
"""

from __future__ import annotations

from transformers import Idefics3Config, Idefics3Processor, Idefics3VisionConfig, LlamaConfig

from llavac.models.templates import idefics3_layout, render_template_source
from llavac.models.tiny_parts import TinySizes, image_processor, text_kwargs, vision_kwargs
from llavac.models.tokenizer import build_tokenizer

SCALE_FACTOR = 2
END_OF_UTTERANCE = "<end_of_utterance>"
# The processor looks these strings up as single tokens.
_LAYOUT_TOKENS = ["<fake_token_around_image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)
]


def build_idefics3(sizes: TinySizes):
    """Idefics3 with one global image view of ``(patches / scale_factor) ** 2`` tokens."""
    if sizes.patches_per_side % SCALE_FACTOR:
        raise ValueError(f"Idefics3 needs patches per side divisible by {SCALE_FACTOR}")
    tokenizer = build_tokenizer({"image_token": "<image>"}, _LAYOUT_TOKENS, eos=END_OF_UTTERANCE)
    n_image_tokens = (sizes.patches_per_side // SCALE_FACTOR) ** 2
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(**vision_kwargs(sizes)),
        text_config=LlamaConfig(**text_kwargs(sizes, tokenizer)),
        image_token_id=tokenizer.image_token_id,
        scale_factor=SCALE_FACTOR,
    )
    side = {"longest_edge": sizes.image_size}
    images = image_processor(
        "Idefics3ImageProcessor", size=side, max_image_size=side, do_image_splitting=False
    )
    template = render_template_source(idefics3_layout(END_OF_UTTERANCE))
    processor = Idefics3Processor(
        images, tokenizer, image_seq_len=n_image_tokens, chat_template=template
    )
    return config, processor
