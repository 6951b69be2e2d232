"""What the training and prediction code needs to know about a loaded model's layout.

These helpers answer from the module tree and the config, not from a table of hub ids, so
they hold for any checkpoint of a supported architecture (and for the tiny models, which are
those architectures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

# Module names of the vision-to-text connector in transformers 5 architectures:
# LLaVA / LLaVA-NeXT / PaliGemma / Gemma3 use ``multi_modal_projector``, Idefics3 (and
# SmolVLM) ``connector``, Qwen2-VL / Qwen2.5-VL ``merger``, the last block of their vision
# tower (``visual.merger``), which merges 2x2 patches and maps them to the decoder's width.
PROJECTOR_NAMES: tuple[str, ...] = ("multi_modal_projector", "connector", "merger")

# Architectures whose text prompt (token_type_ids == 0) attends bidirectionally. Measured on
# the tiny models (tests/test_models.py): PaliGemma's prompt is a bidirectional prefix;
# Gemma3's mask is bidirectional only *within each image*, its text is causal like LLaVA's.
_PREFIX_LM_TYPES = {"paligemma"}


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (peft names modules relative to it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_prefix_lm(model_or_processor) -> bool:
    """True when the prompt attends bidirectionally (PaliGemma).

    For such models the answer must be passed as the processor's ``suffix=`` (token type 1),
    never appended to the prompt text: inside the bidirectional prefix the answer tokens
    would be visible to the positions that predict them, and training would learn nothing.
    Accepts a model (reads ``config.model_type``) or a processor (reads its class name:
    ``llavac prompt`` shows the training text without loading any weights).
    """
    config = getattr(_unwrap(model_or_processor), "config", None)
    if config is not None:
        return getattr(config, "model_type", None) in _PREFIX_LM_TYPES
    name = type(model_or_processor).__name__.lower()
    return any(name.startswith(family) for family in _PREFIX_LM_TYPES)


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def language_model_linear_names(
    model: nn.Module, suffixes: Iterable[str] | None = None
) -> list[str]:
    """Full names of the ``nn.Linear`` modules inside the language model, for peft.

    Vision tower, projector and ``lm_head`` are excluded: the language model is found with
    ``get_decoder()`` and only its subtree is listed. Full names (``model.language_model.
    layers.0.self_attn.q_proj``) match exactly one module each in peft's ``target_modules``,
    whereas bare ``q_proj`` would also hit same-named layers of the vision tower (SigLIP
    and Idefics3 vision encoders use ``q_proj`` too). ``suffixes`` keeps only names ending
    in one of them, e.g. ``("q_proj", "v_proj")`` for the classic attention-only LoRA.
    Quantised ``Linear4bit`` layers subclass ``nn.Linear`` and are listed as well.
    """
    base = _unwrap(model)
    decoder = base.get_decoder()
    prefix = _module_name(base, decoder)
    wanted = tuple(suffixes) if suffixes is not None else None
    names = []
    for name, module in decoder.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if wanted is not None and name.rsplit(".", 1)[-1] not in wanted:
            continue
        names.append(f"{prefix}.{name}" if prefix else name)
    if not names:
        raise ValueError(f"no linear layers found in the language model of {type(base).__name__}")
    return names


def projector_module_names(model: nn.Module) -> list[str]:
    """Full names of the vision-to-text projector module(s), for peft ``modules_to_save``."""
    base = _unwrap(model)
    names = [name for name, _ in base.named_modules() if name.rsplit(".", 1)[-1] in PROJECTOR_NAMES]
    if not names:
        raise ValueError(f"no projector ({' / '.join(PROJECTOR_NAMES)}) in {type(base).__name__}")
    return names


def vision_tower_name(model: nn.Module) -> str:
    """Full name of the vision encoder (transformers' ``get_encoder(modality="image")``):
    ``model.vision_tower`` (LLaVA, PaliGemma, Gemma3), ``model.vision_model`` (Idefics3),
    ``model.visual`` (Qwen2-VL, which holds its projector: see :data:`PROJECTOR_NAMES`)."""
    base = _unwrap(model)
    return _module_name(base, base.get_encoder(modality="image"))


def frozen_vision_parameters(model: nn.Module) -> list[str]:
    """The parameters a run never trains: the vision encoder's, but not a projector's
    inside it (Qwen2-VL's merger)."""
    tower = vision_tower_name(model) + "."
    projector = tuple(f"{name}." for name in projector_module_names(model))
    return [name for name, _ in _unwrap(model).named_parameters()
            if name.startswith(tower) and not name.startswith(projector)]


def multimodal_rope_index(model: nn.Module) -> Callable | None:
    """The model's own multimodal rotary positions, ``get_rope_index(input_ids, ...,
    attention_mask) -> (position_ids (3, batch, length), deltas)`` (Qwen2-VL's M-RoPE), or
    None for a model whose positions count tokens."""
    return getattr(_unwrap(model).base_model, "get_rope_index", None)


def prompt_positions(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The position ids of a left-padded batch: real tokens counted from 0, padding 0,
    ``(batch, length)``; for a model with M-RoPE its own ``(3, batch, length)`` ones."""
    rope_index = multimodal_rope_index(model)
    if rope_index is not None:
        return rope_index(**inputs)[0]
    return (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)


def model_family(model: nn.Module) -> str:
    """The architecture's ``model_type`` (``llava``, ``llava_next``, ``paligemma``...)."""
    return _unwrap(model).config.model_type


def model_facts(model: nn.Module) -> dict:
    """Manifest facts about ``model``: family, parameter counts, origin, dtype.

    ``trainable_parameters`` reflects peft wrapping or freezing at the time of the call.
    """
    params = list(model.parameters())
    base = _unwrap(model)
    first = params[0] if params else torch.empty(0)
    return {
        "family": model_family(base),
        "architecture": type(base).__name__,
        "name_or_path": getattr(base.config, "name_or_path", "") or "",
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "dtype": str(first.dtype).removeprefix("torch."),
        "device": str(first.device),
    }
