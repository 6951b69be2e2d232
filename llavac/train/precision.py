"""Mixed precision as LLaVA trains: fp32 master weights, bf16 (or ``model.dtype``) compute.

LLaVA fine-tunes under DeepSpeed with ``--bf16 True``: the model computes in bf16 while
DeepSpeed's bf16 optimizer holds an fp32 copy of every trainable parameter and applies the
updates there. Without that copy, an AdamW step at the projector's learning rate (2e-5) is
mostly smaller than half a bf16 spacing of the weight it updates and rounds away: updated in
bf16 in place (llavac 0.2), only 29 % of the tiny model's projector elements moved at all in
100 steps, and the projector drifted 0.26 times as far as in fp32.

llavac does what LLaMA-Factory calls upcasting the trainable parameters: every trainable
parameter (the LoRA matrices, the projector, everything under ``train.tuning=full``) is held
in fp32 and updated there by the optimizer, while autocast runs the forward and backward in
the compute dtype; frozen weights stay in ``model.dtype``. Adapters and checkpoints are saved
from the fp32 parameters, and resume loads into them.
"""

from __future__ import annotations

import torch

from llavac.args import TrainArgs


def upcast_trainable(model: torch.nn.Module) -> torch.nn.Module:
    """Hold every trainable parameter of ``model`` in fp32 (in place); returns ``model``."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def compute_dtype(args: TrainArgs, weights: torch.dtype) -> str | None:
    """The autocast dtype of the forward and backward (``"bf16"``, ``"fp16"`` or ``None``: no
    autocast) for frozen ``weights`` of that dtype.

    ``train.bf16`` (LLaVA's ``--bf16``) computes in bf16; otherwise low-precision weights are
    computed in their own dtype, since the fp32 trainable parameters meet them only inside
    autocast.
    """
    if args.bf16 or weights == torch.bfloat16:
        return "bf16"
    if weights == torch.float16:
        return "fp16"
    return None


def engine_keeps_masters(args: TrainArgs) -> bool:
    """DeepSpeed's bf16 / fp16 optimizers keep fp32 master copies themselves, and FSDP's
    flat parameters need one dtype per unit (its mixed-precision policy casts for compute):
    under either, the parameters are left as loaded."""
    return bool(args.deepspeed or args.fsdp)
