"""The FLOP count behind the MFU figures of ``gpu_check.py`` (and ``bench_data``'s 7B step
estimate), kept apart so the arithmetic can be read and checked on its own.

FLOP count used for MFU (matmul FLOPs of the weights; attention score/value products, ~3% at
these lengths, are left out, so MFU is slightly understated; recomputation under gradient
checkpointing is not counted, as usual for MFU):
- vision tower (frozen, no gradient needed): forward only, 2 * N_vision * 577 per image
  (576 patches + CLS);
- projector (trained in full): 6 * N_projector * 576 per image;
- language model (frozen base weights, LoRA on top): forward plus the activation-gradient
  backward, 2x the forward = 4 * N_lm * tokens (N_lm: decoder + lm_head, embeddings excluded;
  tokens: all non-pad tokens, image tokens included); no weight-gradient FLOPs for frozen weights;
- LoRA weights: their own forward + backward, 6 * N_lora * tokens.
- score: the prefill only, 2 * N_vision * 577 + 2 * N_projector * 576 per image and
  2 * (N_lm - lm_head) * tokens + 2 * lm_head for the one kept position; the few candidate
  tokens per slot are left out (they are < 2% of the tokens).
Peak: dense bf16 of the card (H100 SXM / H200 989 TFLOPS, H100 NVL 835, H100 PCIe 756, A100
312), or ``--peak-tflops``.
"""

from __future__ import annotations

IMAGE_TOKENS_7B = 576

# Parameter counts of LLaVA-1.5-7B's shape, as build_tiny("llava", **LLAVA_7B_SIZES) builds it
# (checked against that shape built on the meta device; gpu_check prints a note if the model it
# builds differs), for callers that estimate without building the model (bench_data).
LLAVA_7B_COUNTS = {
    "vision": 303_507_456,  # CLIP ViT-L/14-336 vision tower (post-layernorm included)
    "projector": 20_979_712,  # 1024 -> 4096 -> 4096 MLP
    "lm": 6_607_605_760,  # 32 decoder layers + final norm + lm_head (32064 x 4096)
    "lm_head": 131_334_144,
    "lora": 319_815_680,  # r 128 on q, k, v, o, gate, up, down of 32 layers
}

PEAK_TFLOPS = (  # dense bf16, first match in the device name wins
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200", 989.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def parameter_counts(model) -> dict[str, int]:
    """Vision / projector / language model (+lm_head) / LoRA parameter counts of a LLaVA."""
    counts = {"vision": 0, "projector": 0, "lm": 0, "lm_head": 0, "lora": 0}
    for name, param in model.named_parameters():
        n = param.numel()
        if "lora_" in name:
            counts["lora"] += n
        elif "original_module" in name:  # peft keeps the projector twice; count it once
            continue
        elif "vision_tower" in name:
            counts["vision"] += n
        elif "multi_modal_projector" in name:
            counts["projector"] += n
        elif "embed_tokens" in name:
            continue
        else:
            counts["lm"] += n
            if "lm_head" in name:
                counts["lm_head"] += n
    return counts


def train_flops(counts: dict[str, int], tokens: float, image_tokens: int) -> float:
    """FLOPs of one LoRA training sample of ``tokens`` tokens (see the module docstring)."""
    return (2 * counts["vision"] * (image_tokens + 1) + 6 * counts["projector"] * image_tokens
            + 4 * counts["lm"] * tokens + 6 * counts["lora"] * tokens)


def prefill_flops(counts: dict[str, int], tokens: float, image_tokens: int) -> float:
    """FLOPs of one sample's scoring prefill (one logit row kept)."""
    return (2 * counts["vision"] * (image_tokens + 1) + 2 * counts["projector"] * image_tokens
            + 2 * (counts["lm"] - counts["lm_head"]) * tokens + 2 * counts["lm_head"])


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((value for key, value in PEAK_TFLOPS if key in name), None)


def fmt_mfu(mfu) -> str:
    return f"{100 * mfu:.1f}%" if mfu is not None else "n/a (unknown peak)"
