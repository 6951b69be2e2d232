"""The model factory: the only place that knows vision-language model families.

``load_model(name_or_path)`` returns ``(model, processor)`` for a hub id, a local folder or
a built-in ``tiny-*`` name; the helpers tell training and prediction what they need about a
model's layout (LoRA targets, projector, prefix-LM masking) without naming families.
"""

from llavac.models.factory import (
    four_bit_config,
    load_model,
    load_processor,
    model_type,
    resolve_dtype,
)
from llavac.models.inputs import (
    IMAGE_MODES,
    apply_image_mode,
    apply_inputs,
    describe_image,
    image_limits,
    input_defaults,
    resolve_inputs,
)
from llavac.models.introspect import (
    PROJECTOR_NAMES,
    frozen_vision_parameters,
    is_prefix_lm,
    language_model_linear_names,
    model_facts,
    model_family,
    multimodal_rope_index,
    projector_module_names,
    prompt_positions,
    vision_tower_name,
)
from llavac.models.quiet import peft_wrapping
from llavac.models.tiny import build_tiny, is_tiny_name, tiny_names
from llavac.models.tiny_parts import LLAVA_7B_SIZES, SMALL_SIZES, TinySizes

__all__ = [
    "IMAGE_MODES",
    "LLAVA_7B_SIZES",
    "SMALL_SIZES",
    "PROJECTOR_NAMES",
    "TinySizes",
    "build_tiny",
    "apply_image_mode",
    "apply_inputs",
    "describe_image",
    "four_bit_config",
    "frozen_vision_parameters",
    "image_limits",
    "input_defaults",
    "is_prefix_lm",
    "is_tiny_name",
    "language_model_linear_names",
    "load_model",
    "load_processor",
    "model_family",
    "model_type",
    "model_facts",
    "multimodal_rope_index",
    "peft_wrapping",
    "projector_module_names",
    "prompt_positions",
    "resolve_dtype",
    "resolve_inputs",
    "tiny_names",
    "vision_tower_name",
]
