"""The GPU memory plan behind ``gpu_check.py``: what each of its steps should need, worked
out from the model's shape before anything is put on a card, so that a run starts at a batch
that fits and a dry run on a CPU says whether the real one would.

Bytes, in GB of 1e9 (the unit cards are sold in). Parameters are counted on the model itself
(built on the meta device: its dtypes are the run's). The rest is an estimate for bf16
autocast with fused attention (no score matrix kept), the way the Trainer runs the recipe:

- training: weights (frozen base in bf16, LoRA in fp32, peft's trained copy of the
  projector), gradients of the trained parameters, AdamW's two states per trained parameter
  (in its dtype); activations kept for the backward pass, per token of a decoder layer:
  the RMSNorm's fp32 input and bf16 output twice (4H + 2H, x2), q, k, v and the attention
  output (4 x 2H) and o_proj's input (2H); the MLP's gate, SiLU, up and product (4 x 2I);
  per LoRA layer of input width d its dropout mask and bf16 input (3d) and its rank-r middle
  (2r) -- q, k, v, o, gate, up (d = H) and down (d = I). With gradient checkpointing only
  each layer's input (2H) is kept, plus one layer recomputed at a time. The loss: bf16
  logits, their fp32 copy, the log-softmax kept and its gradient (14 bytes per token and
  vocabulary entry). The vision tower is frozen and needs no backward, but LLaVA asks for
  its hidden states, all of which stay until the projector has run.
- scoring and generation (LoRA merged, bf16): the weights, the KV cache (keys and values of
  every layer for every prompt token, plus the answer for generation), the vision hidden
  states, and the largest transient of the prefill (one MLP: gate, up and product, 3 x 2I
  per token).
Allocator fragmentation and the CUDA context (~0.5-1 GB) come on top; ``HEADROOM`` keeps
10% of the card free for them.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
HEADROOM = 0.9  # the share of a card a plan may fill
LOSS_BYTES_PER_LOGIT = 2 + 4 + 4 + 4  # bf16 logits, fp32 copy, log-softmax, its gradient


@dataclass(frozen=True)
class Shape:
    """The sizes the plan needs, read from a LLaVA config."""

    hidden: int
    intermediate: int
    layers: int
    kv_width: int  # key/value heads x head size
    vocab: int
    vision_hidden: int
    vision_layers: int
    image_tokens: int

    @classmethod
    def of(cls, config) -> Shape:
        text, vision = config.text_config, config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return cls(text.hidden_size, text.intermediate_size, text.num_hidden_layers,
                   text.num_key_value_heads * head_dim, text.vocab_size, vision.hidden_size,
                   vision.num_hidden_layers, config.image_seq_length)


def parameter_bytes(model) -> dict[str, float]:
    """Bytes of all weights, of the trained ones, and of the base model without LoRA (what a
    merged model holds)."""
    total = trained = lora = 0
    for name, param in model.named_parameters():
        size = param.numel() * param.element_size()
        total += size
        trained += size if param.requires_grad else 0
        lora += size if "lora_" in name or "modules_to_save" in name else 0
    return {"weights": total, "trained": trained, "merged": total - lora}


def layer_activation_bytes(shape: Shape, lora_r: int) -> int:
    """Bytes one decoder layer keeps for its backward pass, per token (module docstring)."""
    h, i = shape.hidden, shape.intermediate
    attention = (4 * h + 2 * h) + 4 * 2 * h + 2 * h
    mlp = (4 * h + 2 * h) + 4 * 2 * i
    lora = 6 * 3 * h + 3 * i + 7 * 2 * lora_r
    return attention + mlp + lora


def vision_bytes(shape: Shape, images: int) -> int:
    """Every hidden state of the vision tower (CLS included), bf16."""
    return (shape.vision_layers + 1) * images * (shape.image_tokens + 1) * shape.vision_hidden * 2


def train_plan(model, shape: Shape, lora_r: int, batch: int, tokens: int,
               checkpointing: bool) -> dict[str, float]:
    """GB per part of one LoRA training step on ``batch`` samples padded to ``tokens``."""
    params = parameter_bytes(model)
    positions = batch * tokens
    per_layer = layer_activation_bytes(shape, lora_r) * positions
    if checkpointing:
        activations = shape.layers * 2 * shape.hidden * positions + per_layer
    else:
        activations = shape.layers * per_layer
    parts = {
        "weights": params["weights"],
        "gradients": params["trained"],
        "adam_states": 2 * params["trained"],
        "activations": activations + vision_bytes(shape, batch),
        "loss": LOSS_BYTES_PER_LOGIT * positions * shape.vocab,
    }
    return {name: value / GB for name, value in parts.items()}


def predict_plan(model, shape: Shape, batch: int, tokens: int,
                 new_tokens: int = 0) -> dict[str, float]:
    """GB per part of scoring (``new_tokens`` 0) or generating, LoRA merged, bf16."""
    positions = batch * (tokens + new_tokens)
    parts = {
        "weights": parameter_bytes(model)["merged"],
        "kv_cache": 2 * shape.layers * positions * shape.kv_width * 2,
        "activations": vision_bytes(shape, batch) + 3 * 2 * shape.intermediate * batch * tokens,
    }
    return {name: value / GB for name, value in parts.items()}


def fits(plan: dict[str, float], card_gb: float) -> bool:
    return sum(plan.values()) <= HEADROOM * card_gb


def describe(plan: dict[str, float], cards_gb: list[float]) -> str:
    """``31.2 GB (weights 15.4, ...): fits 80 GB, fits 141 GB``."""
    parts = ", ".join(f"{name.replace('_', ' ')} {value:.1f}" for name, value in plan.items())
    verdicts = ", ".join(f"{'fits' if fits(plan, card) else 'TOO BIG for'} {card:g} GB"
                         for card in cards_gb)
    return f"{sum(plan.values()):.1f} GB ({parts}): {verdicts}"
