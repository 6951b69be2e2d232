"""Image-only processors for the families whose transformers processor also takes videos.

Qwen2-VL and Qwen2.5-VL processors take an image processor, a tokenizer *and* a video
processor. transformers 5 builds a processor from what its ``__init__`` names
(``ProcessorMixin.get_attributes`` reads the signature) and type-checks each of them, and its
video processors are torchvision classes. Without torchvision neither
``Qwen2_5_VLProcessor(images, tokenizer, video_processor=None)`` nor
``AutoProcessor.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")`` can be built (transformers
issue #48558), and with it every load also builds a video processor llavac never calls.

llavac gives images only, so it builds these processors through a subclass whose ``__init__``
names no video processor: transformers then loads and checks the image processor and the
tokenizer alone, through its own ``from_pretrained``. Every machine takes this path, with or
without torchvision, for the tiny models and for hub checkpoints alike, so a CPU test runs
the code a GPU run does. What a video processor would do never happens here: a prompt has no
video placeholder.

The subclasses keep the family's class name, so the folders they save are ordinary processor
folders: they also record the video processor's settings as the image processor's, which is
where Qwen2-VL and Qwen2.5-VL hub checkpoints keep them (``preprocessor_config.json`` serves
both), so plain ``AutoProcessor.from_pretrained`` loads a saved or exported folder with its
video processor where torchvision is installed.
"""

from __future__ import annotations

import transformers
from transformers import AutoProcessor, ProcessorMixin


class _WithoutVideo:
    """Mixin: the family processor with its image processor and tokenizer only."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template, **kwargs)

    def to_dict(self) -> dict:
        saved = super().to_dict()
        saved["video_processor"] = dict(saved["image_processor"])  # see the module docstring
        return saved


class Qwen2VLProcessor(_WithoutVideo, transformers.Qwen2VLProcessor):
    """``transformers.Qwen2VLProcessor`` for images (and text) only."""


class Qwen2_5_VLProcessor(_WithoutVideo, transformers.Qwen2_5_VLProcessor):
    """``transformers.Qwen2_5_VLProcessor`` for images (and text) only."""


# model_type -> the processor class llavac loads that family's checkpoints with.
_IMAGE_ONLY: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLProcessor,
    "qwen2_5_vl": Qwen2_5_VLProcessor,
}


def processor_loader(model_type: str):
    """What loads a processor of family ``model_type``: its image-only class where it has
    one, else ``AutoProcessor``. Both have ``from_pretrained(name_or_path)``."""
    return _IMAGE_ONLY.get(model_type, AutoProcessor)
