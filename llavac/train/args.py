"""The arguments of every recipe, as dataclasses whose defaults are the paper's choices.

A YAML preset (``llavac/configs/``) fills these sections; ``section.key=value`` overrides win.
Defaults follow the LLaVA repository's task-LoRA recipe that LLaVAC fine-tunes with
(``scripts/v1_5/finetune_task_lora.sh``), except where a comment says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelArgs:
    """Which vision-language model, and how to load it."""

    name: str = "llava-hf/llava-1.5-7b-hf"  # a hub id, a local path, or a built-in tiny-* name
    dtype: str | None = None  # None: the checkpoint's own; "bfloat16", "float32", ...
    attn_implementation: str | None = None  # None: transformers' default (sdpa where it can)
    load_in_4bit: bool = False  # QLoRA through bitsandbytes; needs CUDA
    seed: int = 0  # the weights of a built-in tiny-* model; ignored for real checkpoints


@dataclass
class DataArgs:
    """What to train or evaluate on: an exported split folder, a release folder + procedure,
    or an own-data JSONL / CSV file."""

    path: str | None = None
    procedure: str | None = None  # cheema10 | random811 | clmlf | qmf | none
    fold: int | None = None  # cheema10: 1..10
    split_seed: int = 0  # random811
    splits_dir: str | None = None  # the original published split files instead of the shipped lists
    strict: bool = False  # a bad record is fatal instead of skipped and counted


@dataclass
class LoraArgs:
    """What is trained: LoRA on the language model (the paper) or full fine-tuning."""

    method: str = "lora"  # "lora" or "full" (full: language model + projector, vision frozen)
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    train_projector: bool = True  # the projector is trained in full, as in LLaVA's recipe
    projector_lr: float | None = 2e-5  # None: the main learning rate


@dataclass
class TrainArgs:
    """The optimisation loop (handed to the transformers Trainer)."""

    output: str = "runs/train"
    prompt: str = "full"  # full | multimodal-only | an order such as "multimodal,text,image"
    lr: float = 2e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 16  # per device
    grad_accum: int = 1  # effective batch = batch_size x grad_accum x devices (paper: 16)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    bf16: bool = True
    gradient_checkpointing: bool = True
    max_length: int | None = 2048  # an example longer than this is an error, never truncated
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 1
    seed: int = 0  # data order, dropout and LoRA initialisation
    # DataLoader workers decode and preprocess images beside the GPU: with 0, a 7B step at
    # batch 16 waits ~100 ms (+12 %) for its batch (benchmarks/bench_data.py). The paper
    # presets use 4; 0 keeps CPU runs and tests in one process.
    num_workers: int = 0
    progress: bool = True  # a progress bar on stderr
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. llavac/configs/zero3.json
    fsdp: str | None = None  # the Trainer's FSDP option, e.g. "full_shard auto_wrap"


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as ``config.yaml`` in its output folder."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
