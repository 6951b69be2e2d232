"""LoRA variants (``lora.variant``) as peft implements them, and PiSSA's conversion.

- ``lora``: the paper's adapters, scaled by alpha / r.
- ``dora``: DoRA (Liu et al. 2024), the update split into a magnitude and a direction.
- ``rslora``: rank-stabilised LoRA (Kalajdzievski 2023), scaled by alpha / sqrt(r).
- ``pissa``: PiSSA (Meng et al. 2024), the adapter initialised from the principal singular
  vectors of each weight, which is left as the residual. The base weights a PiSSA adapter
  trains on are no longer the checkpoint's, so the run saves it converted to the equivalent
  plain LoRA adapter (rank 2r), which loads onto the unchanged base model like any other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from peft import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

# lora.variant -> peft's LoraConfig options (peft 0.21). PiSSA changes the base weights it
# starts from, so its adapter is saved converted to a plain LoRA one (``save``).
LORA_VARIANTS: dict[str, dict] = {
    "lora": {},
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "pissa": {"init_lora_weights": "pissa"},
}
PISSA_INIT = "pissa_init"  # the run's PiSSA adapter before training, for that conversion


def save_pissa_as_lora(model, weights: Path, initial: Path) -> None:
    """Replace the PiSSA adapter in ``weights`` by the equivalent plain LoRA adapter (rank
    2r, peft's conversion against the ``initial`` adapter), which loads onto the unchanged
    base model; the initial adapter is removed afterwards. On the main process: PiSSA under
    ZeRO-3 / FSDP is not supported."""
    model.save_pretrained(weights, path_initial_model_for_weight_conversion=str(initial))
    # peft's conversion keeps only the LoRA matrices: the modules trained in full (the
    # projector, classification heads) are put back beside them, under peft's own names.
    saved = Path(weights) / "adapter_model.safetensors"
    state = get_peft_model_state_dict(model)
    in_full = {name: tensor.contiguous() for name, tensor in state.items() if "lora_" not in name}
    save_file({**load_file(saved), **in_full}, saved, metadata={"format": "pt"})
    shutil.rmtree(initial)
