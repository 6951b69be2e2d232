"""Training sections and the commands built on training: ``train``, ``experiment``,
``sweep``. Defaults are the LLaVA task-LoRA recipe that LLaVAC fine-tunes with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from llavac.args.common import (
    METHODS,
    OPTIMIZERS,
    REPORT_TO,
    TUNINGS,
    DataArgs,
    ModelArgs,
    Section,
)
from llavac.labels import SLOTS

# train.objective: the paper's structured answer, or one classification layer per slot on
# the last prompt token's final hidden state (llavac.models.heads).
OBJECTIVES = ("answer", "head")
# lora.variant, as peft implements them (llavac.train.recipe.LORA_VARIANTS): plain LoRA (the
# paper), DoRA (weight-decomposed), rsLoRA (alpha / sqrt(r) scaling), PiSSA (initialised
# from the principal singular vectors; saved converted to a plain LoRA adapter).
LORA_VARIANTS = ("lora", "dora", "rslora", "pissa")


@dataclass
class LoraArgs(Section):
    """The low-rank adapters (``train.tuning=lora``) and the projector beside them."""

    section: ClassVar[str] = "lora"
    variant: str = "lora"  # lora (the paper) | dora | rslora | pissa
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    train_projector: bool = True  # the projector is trained in full, as in LLaVA's recipe
    projector_lr: float | None = 2e-5  # None: the main learning rate

    def __post_init__(self):
        self._one_of("variant", LORA_VARIANTS)
        self._at_least("r", 1)
        self._at_least("alpha", 1)
        self._check("dropout", 0 <= self.dropout < 1, "a probability in [0, 1)")
        self._check("projector_lr", self.projector_lr is None or self.projector_lr > 0,
                    "a learning rate > 0 or null")


@dataclass
class TrainArgs(Section):
    """The optimisation loop (handed to the transformers Trainer)."""

    section: ClassVar[str] = "train"
    output: str = "runs/train"
    resume: bool = False  # continue the interrupted run in `output` from its last checkpoint
    overwrite: bool = False  # replace the run in `output` (without either, it is refused)
    # lora (the paper) | full (language model + projector; vision frozen). 0.2's key
    # train.method still reads, with a warning.
    tuning: str = "lora"
    prompt: str = "full"  # full | multimodal-only | an order such as "multimodal,text,image"
    objective: str = "answer"  # answer (the paper's structured answer) | head
    # The slots whose heads are trained (objective=head; the others' heads stay as
    # initialised, e.g. [multimodal] to ask whether the unimodal labels help); null: every
    # slot the prompt asks. The answer objective chooses its slots with train.prompt.
    slots: list[str] | None = None
    lr: float = 2e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    # The batch one optimizer step averages over, whatever the hardware (llavac.train.batch):
    # micro_batch_size per device x processes x accumulation steps, the accumulation derived.
    # The paper's 16; LLaVA's script gives 16 per device (128 on its eight GPUs).
    global_batch_size: int = 16
    micro_batch_size: int | None = None  # per device, what fits; None: global / processes
    # 0.2's keys, still read: set, they decide the batch as in 0.2 (batch_size per device x
    # grad_accum x processes: it grows with the processes) and global_batch_size is not used.
    batch_size: int | None = None
    grad_accum: int | None = None
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs; -1: train the epochs
    # The forward and backward in bf16; every trainable parameter is still held and updated
    # in fp32 (llavac.train.precision), as DeepSpeed's bf16 optimizer does for LLaVA.
    bf16: bool = True
    tf32: bool = True  # TF32 matmuls where the GPU has them (LLaVA's --tf32); no-op elsewhere
    # adamw_torch_fused (the Trainer's default) or adamw_torch (LLaVA's script): the same
    # AdamW update, fused into one kernel or not (the README's fidelity table).
    optim: str = "adamw_torch_fused"
    # Each step's batch arranged by length across devices and accumulation steps, so similar
    # lengths are padded together (LLaVA's --group_by_modality_length; llavac.train.batch).
    group_by_length: bool = True
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
    progress: bool = True  # a progress bar on stderr (plain lines when it is not a terminal)
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. llavac/configs/zero3.json
    fsdp: str | None = None  # the Trainer's FSDP option, e.g. "full_shard auto_wrap"
    # A prompt variants file (llavac/configs/prompt_variants.yaml): each example asks one
    # variant, drawn by train.seed and its id; None: the fixed prompt, as in the paper.
    prompt_variants: str | None = None
    report_to: str = "none"  # tensorboard | wandb | mlflow | none: nothing leaves the machine

    def __post_init__(self):
        self._one_of("tuning", TUNINGS)
        self._one_of("objective", OBJECTIVES)
        self._check("slots", self.slots is None or (
            self.objective == "head" and bool(self.slots) and set(self.slots) <= set(SLOTS)
            and len(set(self.slots)) == len(self.slots)),
            "null, or with train.objective=head distinct slots from " + ", ".join(SLOTS)
            + " (the answer objective's slots are train.prompt's)")
        self._check("objective", self.objective == "answer" or self.tuning == "lora",
                    "answer with train.tuning=full (heads are trained beside LoRA adapters)")
        self._check("lr", self.lr > 0, "a learning rate > 0")
        self._check("warmup_ratio", 0 <= self.warmup_ratio < 1, "a fraction in [0, 1)")
        self._at_least("weight_decay", 0)
        for key in ("global_batch_size", "save_steps", "logging_steps"):
            self._at_least(key, 1)
        for key in ("micro_batch_size", "batch_size", "grad_accum"):
            self._at_least(key, 1, optional=True)
        self._check("micro_batch_size", self.micro_batch_size is None or self.batch_size is None,
                    "null beside 0.2's train.batch_size, which is the per-device batch too")
        self._check("epochs", self.epochs > 0, "a number of epochs > 0")
        self._check("max_steps", self.max_steps == -1 or self.max_steps >= 1,
                    "-1 (train the epochs) or a number of steps >= 1")
        self._at_least("max_length", 1, optional=True)
        self._at_least("save_total_limit", 1, optional=True)
        self._at_least("seed", 0)
        self._at_least("num_workers", 0)
        self._one_of("report_to", REPORT_TO)
        self._one_of("optim", OPTIMIZERS)


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as ``config.yaml`` in its output folder."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)


@dataclass
class ExperimentArgs(Section):
    """Which runs to make and how to evaluate them."""

    section: ClassVar[str] = "experiment"
    output: str = "runs/experiment"
    overwrite: bool = False  # replace an experiment with other settings in `output`
    procedures: list[str] = field(default_factory=lambda: ["qmf"])
    folds: list[int] = field(default_factory=lambda: list(range(1, 11)))  # cheema10 only
    seeds: list[int] = field(default_factory=lambda: [0])  # training seed (+ random811 split)
    # Each run is evaluated with every method: generate + the strict parser is the paper's
    # way (its numbers stand beside the paper's, with the unparseable count); score needs no
    # parsing and gives probabilities. ``experiment.method`` still reads.
    methods: list[str] = field(default_factory=lambda: ["generate", "score"])
    batch_size: int = 16  # evaluation batch
    part: str = "test"
    # Modality reliance of each score evaluation (eval.reliance_pairs: 2 more scoring passes
    # a pair, on at most this many pairs; 0: off); the ablation comparison reads it.
    reliance_pairs: int = 1000
    # Another experiment's output folder (e.g. the multimodal-only ablation of this one):
    # its runs of the same name are compared with this one's (llavac compare) in results.md.
    compare_with: str | None = None
    # Named variants crossed with every run, each "name: key=value ..." (overrides of the
    # training config; "paper" alone: none); the first is the reference the others are
    # compared with (llavac.studies.techniques). Empty: one variant, the config as it is.
    variants: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._check("methods", bool(self.methods) and all(m in METHODS for m in self.methods)
                    and len(set(self.methods)) == len(self.methods),
                    "a list of distinct methods from " + ", ".join(METHODS))
        self._at_least("reliance_pairs", 0)


@dataclass
class ExperimentConfig(TrainConfig):
    """An experiment preset: the training config every run shares, plus which runs to make."""

    experiment: ExperimentArgs = field(default_factory=ExperimentArgs)
    # Cross-dataset runs: test on this data instead of the training data (e.g. train on
    # MVSA-Single, test on MVSA-Multiple). Empty path: the training data; unset procedure /
    # fold: the run's.
    eval_data: DataArgs = field(default_factory=DataArgs)


@dataclass
class SweepArgs(Section):
    """``llavac sweep``: an Optuna search over training settings, scored on validation."""

    section: ClassVar[str] = "sweep"
    output: str = "runs/sweep"
    # A study in `output` made with other settings is refused: resume continues one with the
    # same settings (so does a rerun without it), overwrite replaces it.
    resume: bool = False
    overwrite: bool = False
    trials: int = 20  # in the study in all: a second call with more continues it
    space: str | None = None  # a search-space YAML; None: llavac/configs/sweep_space.yaml
    storage: str | None = None  # an Optuna storage URL; None: sqlite in output/study.db
    study: str = "llavac"  # the study's name inside the storage
    # Of the multimodal label on the validation part (never test): accuracy, weighted_f1,
    # macro_f1 (llavac.evaluation.metrics, which checks it when the sweep starts)
    metric: str = "accuracy"
    method: str = "score"  # how validation is predicted: score (fast) | generate
    batch_size: int = 16  # validation batch
    # The TPE sampler's, plus the trials already in the study; machines sharing a storage
    # each need their own (or they start from the same draws).
    seed: int = 0
    # Median pruning on the training loss: a trial stops when its loss at a step is worse
    # than the median of earlier trials at that step, once this many trials are complete.
    startup_trials: int = 5
    pruning: bool = True

    def __post_init__(self):
        self._at_least("trials", 1)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)
        self._at_least("startup_trials", 0)


@dataclass
class SweepConfig(TrainConfig):
    """A sweep: the training config every trial starts from, plus the search's settings."""

    sweep: SweepArgs = field(default_factory=SweepArgs)
