"""How images and conversations are presented to a model: the image mode and the system choice.

LLaVAC fine-tunes LLaVA-1.5 with the LLaVA repository's recipe, which pads every image to a
square filled with the CLIP mean colour (``--image_aspect_ratio pad``, LLaVA's
``expand2square``) and wraps every example in the ``v1`` conversation (``--version v1``:
``conv_vicuna_v1``'s system sentence, ``USER:`` / ``ASSISTANT:`` turns, ``</s>`` after the
answer). A plain Hugging Face processor
centre-crops instead and its chat template has no system sentence. Both choices are named
here, with the defaults per model family:

=============  ==============  =============  =================================================
family         ``image_mode``  ``system``     why
=============  ==============  =============  =================================================
``llava``      ``pad``         ``vicuna_v1``  LLaVA-1.5 (and ``tiny-llava``): the paper's inputs
others         ``processor``   ``none``       their processor's images and their chat template
=============  ==============  =============  =================================================

``image_mode``: ``pad`` centres the image on a square of the processor's mean colour, then the
processor resizes it (transformers' own ``LlavaImageProcessor(do_pad=True)``); ``crop``
resizes the short side and centre-crops (what the CLIP processor of ``llava-hf`` checkpoints
does); ``processor`` leaves the processor as the checkpoint ships it. ``pad`` and ``crop``
apply to the fixed-resolution square inputs of LLaVA-1.5 (CLIP / LLaVA image processors);
other families (LLaVA-NeXT's tiles, PaliGemma's squash-resize, Idefics3's and SmolVLM's
splits, Gemma3, Qwen2-VL's aspect-keeping resize) keep ``processor``. The system choice is
rendered by :func:`llavac.prompt.render`; LLaVA's v1 conversation is also tokenised as LLaVA
does around the image (:func:`tokenize_as_llava`).
"""

from __future__ import annotations

import dataclasses

import transformers
from PIL import Image
from tokenizers import pre_tokenizers

from llavac.args import IMAGE_MODES
from llavac.data.images import ImageLimits
from llavac.prompt import V1_SYSTEMS

# model_type -> (image_mode, system) a run of that family gets when it names neither.
_FAMILY_DEFAULTS = {"llava": ("pad", "vicuna_v1")}
_OTHERS = ("processor", "none")

# The image processors whose square, fixed-resolution input ``pad`` and ``crop`` describe.
_SQUARE_PROCESSORS = ("CLIPImageProcessor", "LlavaImageProcessor")


def input_defaults(model_type: str) -> tuple[str, str]:
    """``(image_mode, system)`` for a family (``config.model_type``) that names neither."""
    return _FAMILY_DEFAULTS.get(model_type, _OTHERS)


def resolve_inputs(model_type: str, image_mode: str | None,
                   system: str | None) -> tuple[str, str]:
    """The given choices, a ``None`` replaced by the family's default."""
    default_mode, default_system = input_defaults(model_type)
    return image_mode or default_mode, system or default_system


def apply_inputs(processor, image_mode: str, system: str):
    """Configure ``processor`` for a run's inputs, the same way in training, prediction and
    ``llavac prompt``: its images (:func:`apply_image_mode`) and, for LLaVA's v1
    conversation, the tokenisation around the image (:func:`tokenize_as_llava`)."""
    apply_image_mode(processor, image_mode)
    if system in V1_SYSTEMS:
        tokenize_as_llava(processor.tokenizer)
    return processor


def tokenize_as_llava(tokenizer) -> None:
    """Tokenise the text on either side of the image as LLaVA's ``tokenizer_image_token``:
    each chunk on its own, so SentencePiece starts the one after the image with ``▁`` too
    (after ``<image>``: ``▁`` and the newline, 29871 13 on LLaMA's vocabulary).

    A tokenizer that prepends ``▁`` to the first chunk only (transformers 5's
    ``LlamaTokenizer`` without ``legacy``: a ``Metaspace`` pre-tokenizer with
    ``prepend_scheme="first"``) is set to prepend it to every chunk; one that already does
    (the classic normalizer, as in ``../shared/tokenizers/llama-spm``) is left as it is.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)  # None: a Python tokenizer
    metaspace = backend.pre_tokenizer if backend is not None else None
    if isinstance(metaspace, pre_tokenizers.Metaspace) and metaspace.prepend_scheme == "first":
        metaspace.prepend_scheme = "always"


def apply_image_mode(processor, mode: str):
    """Configure ``processor``'s image processor for ``mode``; returns the processor.

    ``pad`` goes through transformers' ``LlavaImageProcessorPil(do_pad=True)``, with the
    settings of the processor it replaces (a CLIP one, as ``llava-hf`` checkpoints ship,
    whose own ``do_pad`` pads to a fixed size at the bottom right instead). It is always the
    PIL backend, as LLaVA's training resizes with PIL: transformers picks the torchvision
    backend wherever torchvision is installed, and its bicubic resize gives other pixels, so
    a GPU machine and a CPU one would train on different inputs.
    """
    if mode not in IMAGE_MODES:
        raise ValueError(f"model.image_mode: expected one of {', '.join(IMAGE_MODES)}, "
                         f"got {mode!r}")
    if mode == "processor":
        return processor
    images = processor.image_processor
    kind = type(images).__name__.removesuffix("Pil")
    if kind not in _SQUARE_PROCESSORS:
        raise ValueError(
            f"model.image_mode={mode}: defined for LLaVA-1.5's square inputs (CLIP / LLaVA "
            f"image processors), not for {type(images).__name__}; use model.image_mode=processor"
        )
    if mode == "pad" and not isinstance(images, transformers.LlavaImageProcessorPil):
        settings = {key: value for key, value in images.to_dict().items()
                    if key not in ("image_processor_type", "processor_class")}
        images = transformers.LlavaImageProcessorPil(**settings)
        processor.image_processor = images
    if hasattr(images, "pad_to_square"):
        images.do_pad = mode == "pad"
    images.do_center_crop = True  # a no-op on a padded (square) image
    return processor


def pad_fill(processor) -> tuple[int, int, int]:
    """The padding colour: the mean colour in 8 bits, truncated as LLaVA's expand2square."""
    return tuple(int(x * 255) for x in processor.image_processor.image_mean)


def describe_image(processor, mode: str, image: Image.Image) -> dict:
    """What preprocessing does to ``image`` under ``mode``: its size, the padding (left, top,
    right, bottom pixels and colour) or the crop, and the size of the pixels the model gets."""
    width, height = image.size
    output = processor.image_processor(images=[image], return_tensors="pt")
    if "image_grid_thw" in output:  # Qwen2-VL's pixels are flat patches; the grid is the size
        _, rows, columns = output["image_grid_thw"][0].tolist()
        pixels = [columns * processor.image_processor.patch_size,
                  rows * processor.image_processor.patch_size]
    else:
        pixels = list(output["pixel_values"].shape[-2:])[::-1]
    facts = {"image_mode": mode, "size": [width, height],
             "pixels": pixels, "padding": None, "fill": None}
    if mode == "pad":
        side = max(width, height)
        left, top = (side - width) // 2, (side - height) // 2  # as transformers' pad_to_square
        facts["padding"] = [left, top, side - width - left, side - height - top]
        facts["fill"] = list(pad_fill(processor))
    return facts


# An image is shrunk as it is decoded (llavac.data.ImageLimits) until its shorter side is
# this many times the largest side the processor makes of any image, and never below the
# floor: the processor's own resize then still has at least twice the pixels it keeps, so its
# output barely moves, while a 40-megapixel upload is held as a few megabytes instead of 160.
# Below the floor nothing is shrunk, so ordinary pictures (every MVSA image is at most
# 600 px) have the same pixels in every path, with or without these limits.
EARLY_DOWNSCALE = 2
EARLY_DOWNSCALE_FLOOR = 768
_SIDE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")


def image_limits(processor, max_pixels: int, key: str) -> ImageLimits:
    """The limits ``open_rgb`` applies to ``processor``'s inputs: ``max_pixels`` (set by
    config ``key``) and the early downscale (``EARLY_DOWNSCALE`` times its input side, at
    least ``EARLY_DOWNSCALE_FLOOR``; none without an image processor)."""
    images = getattr(processor, "image_processor", None)
    sides = [side for name in ("size", "crop_size", "max_image_size")
             for side in _sides(getattr(images, name, None))]
    sides += [side for pinpoint in getattr(images, "image_grid_pinpoints", None) or ()
              for side in pinpoint]  # LLaVA-NeXT's largest tiling
    short_side = max(EARLY_DOWNSCALE * max(sides), EARLY_DOWNSCALE_FLOOR) if sides else None
    return ImageLimits(max_pixels=max_pixels, short_side=short_side, key=key)


def _sides(size) -> list[int]:
    """The side lengths of a processor's ``size``-like setting (a dict, a ``SizeDict`` or an
    int); ``min_pixels`` / ``max_pixels`` count pixels, not sides, and are left out."""
    if isinstance(size, int):
        return [size]
    if dataclasses.is_dataclass(size):
        size = dataclasses.asdict(size)
    if not isinstance(size, dict):
        return []
    return [value for key, value in size.items() if key in _SIDE_KEYS and isinstance(value, int)]
