"""The one entry point that turns a name into ``(model, processor)``.

The rest of the package never asks which family a model is: it calls :func:`load_model`
with a hub id, a local folder, or a built-in ``tiny-*`` name and gets a transformers
``PreTrainedModel`` (an ``AutoModelForImageTextToText``) and its processor. Hub checkpoints
keep their own chat template; tiny models carry the one they were built with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    PreTrainedModel,
    ProcessorMixin,
)

from llavac.hub import require_reachable
from llavac.models.introspect import PROJECTOR_NAMES
from llavac.models.processors import processor_loader
from llavac.models.tiny import build_tiny, is_tiny_name, tiny_model_type

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """Map a config string (``"bf16"``, ``"float32"``, ``"auto"``...) to a torch dtype.

    ``None`` and ``"auto"`` pass through: transformers then uses the checkpoint's dtype.
    """
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        known = ", ".join(_DTYPES)
        raise ValueError(f"unknown dtype {dtype!r}; use one of {known} or 'auto'") from None


def model_type(name_or_path: str) -> str:
    """The family (``config.model_type``) of a model name, without loading its weights."""
    if is_tiny_name(name_or_path):
        return tiny_model_type(name_or_path)
    return AutoConfig.from_pretrained(name_or_path).model_type


def load_processor(name_or_path: str, seed: int = 0, saved: str | Path | None = None
                   ) -> ProcessorMixin:
    """The processor :func:`load_model` would return, without loading a real model's weights
    (a tiny model is built whole: it takes a second).

    ``saved``: a processor folder saved for this model (a training run's ``processor/``), read
    instead of the model's own. Families whose transformers processor also takes videos
    (Qwen2-VL, Qwen2.5-VL) load through their image-only class on every machine
    (:mod:`llavac.models.processors`), the others through ``AutoProcessor``.
    """
    if saved is None and is_tiny_name(name_or_path):
        return build_tiny(name_or_path, seed)[1]
    return processor_loader(model_type(name_or_path)).from_pretrained(saved or name_or_path)


def _tiny_device(device_map) -> torch.device:
    """The single device a tiny model goes to; tiny models are never sharded."""
    if device_map is None:
        return torch.device("cpu")
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, dict):
        if set(device_map) != {""}:
            raise ValueError("a tiny model goes to one device: use device_map={'': device}")
        device_map = device_map[""]
    if isinstance(device_map, int):
        return torch.device("cuda", device_map)
    return torch.device(device_map)


def four_bit_config(compute_dtype: torch.dtype | str | None):
    """A QLoRA ``BitsAndBytesConfig``: NF4, double quantisation, bf16 compute by default.

    The projector and lm_head stay unquantised: they are trained in full (peft
    ``modules_to_save``) or scored at full precision. Raises ``ValueError`` without CUDA
    (bitsandbytes' CPU path is not a supported way to train here) and ``ImportError`` when
    bitsandbytes is missing; both happen before anything is loaded.
    """
    if not torch.cuda.is_available():
        raise ValueError(
            "load_in_4bit=True (QLoRA) needs a CUDA GPU; this machine has none. "
            "Load without 4-bit (e.g. dtype='float32' on CPU)."
        )
    try:
        import bitsandbytes  # noqa: F401  (only checks that the optional dependency exists)
    except ImportError as err:
        raise ImportError(
            "load_in_4bit=True needs bitsandbytes: pip install 'llavac[qlora]'"
        ) from err
    from transformers import BitsAndBytesConfig

    if compute_dtype in (None, "auto"):
        compute_dtype = torch.bfloat16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=["lm_head", *PROJECTOR_NAMES],
    )


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype | None = None,
    device_map=None,
    attn_implementation: str | None = None,
    load_in_4bit: bool = False,
    seed: int = 0,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load ``(model, processor)`` from a hub id, a local folder or a ``tiny-*`` name.

    ``dtype``: a torch dtype or a name (``"bf16"``, ``"float32"``, ``"auto"``).
    ``device_map``: as in transformers (``"auto"``, ``"cuda:0"``, ``{"": 0}``); a tiny model
    goes to the one device it names. ``attn_implementation``: ``"sdpa"``, ``"eager"``,
    ``"flash_attention_2"``... ``load_in_4bit``: QLoRA loading (CUDA + bitsandbytes only).
    ``seed`` only matters for ``tiny-*`` names: it fixes the random weights.
    The model is returned in eval mode.
    """
    torch_dtype = resolve_dtype(dtype)
    quantization = four_bit_config(torch_dtype) if load_in_4bit else None

    if is_tiny_name(name_or_path):
        if quantization is None:
            return build_tiny(
                name_or_path,
                seed,
                dtype=None if torch_dtype == "auto" else torch_dtype,
                device=_tiny_device(device_map),
                attn_implementation=attn_implementation,
            )
        # bitsandbytes quantises while loading a checkpoint: give it one.
        model, processor = build_tiny(name_or_path, seed)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            model, processor = load_model(
                folder,
                dtype=dtype,
                device_map=device_map,
                attn_implementation=attn_implementation,
                load_in_4bit=True,
            )
        model.config.name_or_path = name_or_path  # not the deleted temporary folder
        return model, processor

    if quantization is not None and device_map is None:
        device_map = {"": torch.cuda.current_device()}
    require_reachable(name_or_path)
    processor = load_processor(name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path,
        dtype=torch_dtype,
        device_map=device_map,
        attn_implementation=attn_implementation,
        quantization_config=quantization,
    )
    return model.eval(), processor
