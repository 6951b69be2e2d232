"""Tiny PaliGemma and Gemma3: SigLIP vision tower + linear projector + Gemma decoder.

They differ where it matters to training: PaliGemma is a prefix LM (the image and the text
prompt attend bidirectionally; the answer goes in as the processor's ``suffix=``), whereas
Gemma3 is causal over text and bidirectional only inside each image. Both use one token per
patch at the default sizes: 16 image tokens for a 32x32 image in 8x8 patches.
"""

from __future__ import annotations

from transformers import (
    Gemma3Config,
    Gemma3Processor,
    Gemma3TextConfig,
    GemmaConfig,
    PaliGemmaConfig,
    PaliGemmaProcessor,
    SiglipVisionConfig,
)

from llavac.models.templates import gemma_layout, paligemma_layout, render_template_source
from llavac.models.tiny_parts import TinySizes, image_processor, text_kwargs, vision_kwargs
from llavac.models.tokenizer import build_tokenizer


def _siglip_images(sizes: TinySizes, class_name: str, **extra):
    side = sizes.image_size
    return image_processor(class_name, size={"height": side, "width": side}, **extra)


def build_paligemma(sizes: TinySizes):
    """PaliGemma: ``<image>*N <bos> prompt \\n`` then the suffix (answer) and eos.

    The processor places bos itself, so the tokenizer must not add one.
    """
    tokenizer = build_tokenizer({"image_token": "<image>"}, add_bos=False)
    n_image_tokens = sizes.patches_per_side**2
    vision = SiglipVisionConfig(**vision_kwargs(sizes), projection_dim=sizes.text_hidden)
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=GemmaConfig(**text_kwargs(sizes, tokenizer)),
        image_token_index=tokenizer.image_token_id,
        projection_dim=sizes.text_hidden,
        hidden_size=sizes.text_hidden,
    )
    config.vision_config.num_image_tokens = n_image_tokens
    images = _siglip_images(sizes, "SiglipImageProcessor", image_seq_length=n_image_tokens)
    template = render_template_source(paligemma_layout(tokenizer.eos_token))
    processor = PaliGemmaProcessor(images, tokenizer, chat_template=template)
    # the processor registers PaliGemma's detection/segmentation tokens: size the embeddings
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(processor.tokenizer))
    return config, processor


def build_gemma3(sizes: TinySizes):
    """Gemma3: the chat template's ``<start_of_image>`` expands to the full image block."""
    special = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer = build_tokenizer(special, ["<start_of_turn>"], eos="<end_of_turn>")
    n_image_tokens = sizes.patches_per_side**2
    head_dim = sizes.text_hidden // sizes.text_heads
    text = Gemma3TextConfig(
        **text_kwargs(sizes, tokenizer),
        query_pre_attn_scalar=head_dim,
        sliding_window=min(512, sizes.max_positions),
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(**vision_kwargs(sizes)),
        mm_tokens_per_image=n_image_tokens,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
    )
    images = _siglip_images(sizes, "Gemma3ImageProcessor")
    template = render_template_source(gemma_layout(tokenizer.eos_token, tokenizer.boi_token))
    processor = Gemma3Processor(
        images, tokenizer, chat_template=template, image_seq_length=n_image_tokens
    )
    return config, processor
