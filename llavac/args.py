"""Every knob of every command, as config sections whose defaults are the paper's choices.

A command's config is a dataclass of these sections (``TrainConfig`` = ``model`` + ``data`` +
``lora`` + ``train``; ``EvalConfig`` = ``model`` + ``data`` + ``eval``; ...). A YAML preset
(``llavac/configs/``) fills some of them, flags and ``section.key=value`` overrides win, and
the resolved config is saved next to every checkpoint and result (``llavac.config``).

Training defaults follow the LLaVA repository's task-LoRA recipe that LLaVAC fine-tunes with
(``scripts/v1_5/finetune_task_lora.sh``), except where a comment says otherwise.

Each section checks its own values when it is built, so a bad value is one error naming its
key, before any model is loaded, from the command line and from Python alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

PROCEDURES = ("cheema10", "random811", "clmlf", "qmf", "none")
METHODS = ("score", "generate")
TRAIN_METHODS = ("lora", "full")


class Section:
    """Mixin for config sections: ``_check`` raises one ``ValueError`` naming the key."""

    section: ClassVar[str] = ""

    def _check(self, key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"{self.section}.{key}: expected {expected}, "
                             f"got {getattr(self, key)!r}")

    def _at_least(self, key: str, minimum: float, optional: bool = False) -> None:
        value = getattr(self, key)
        ok = (optional and value is None) or (value is not None and value >= minimum)
        self._check(key, ok, f"a number >= {minimum}" + (" or null" if optional else ""))

    def _one_of(self, key: str, choices: tuple[str, ...], optional: bool = False) -> None:
        value = getattr(self, key)
        ok = (optional and value is None) or value in choices
        self._check(key, ok, "one of " + ", ".join(choices) + (" or null" if optional else ""))


@dataclass
class ModelArgs(Section):
    """Which vision-language model to fine-tune, and how to load it."""

    section: ClassVar[str] = "model"
    name: str = "llava-hf/llava-1.5-7b-hf"  # a hub id, a local path, or a built-in tiny-* name
    dtype: str | None = None  # None: the checkpoint's own; "bfloat16", "float32", ...
    attn_implementation: str | None = None  # None: transformers' default (sdpa where it can)
    load_in_4bit: bool = False  # QLoRA through bitsandbytes; needs CUDA
    seed: int = 0  # the weights of a built-in tiny-* model; ignored for real checkpoints

    def __post_init__(self):
        self._check("name", bool(self.name), "a model name or path")


@dataclass
class ClassifierArgs(Section):
    """A trained classifier to load for prediction (evaluate, predict, serve, ...)."""

    section: ClassVar[str] = "model"
    name: str | None = None  # the base model; None: the one the adapter's training run names
    adapter: str | None = None  # a training run folder or a peft adapter; None: zero-shot
    prompt: str | None = None  # None: the training run's prompt, else "full"
    dtype: str | None = None  # None: the run's model.dtype, else the checkpoint's own
    device: str | None = None  # None: CUDA when available, else the CPU


@dataclass
class DataArgs(Section):
    """What to train or evaluate on: an exported split folder, a release folder + procedure,
    or an own-data JSONL / CSV file."""

    section: ClassVar[str] = "data"
    path: str | None = None
    procedure: str | None = None  # cheema10 | random811 | clmlf | qmf | none (own data: all)
    fold: int | None = None  # cheema10: 1..10
    split_seed: int = 0  # random811's shuffle
    splits_dir: str | None = None  # the original published split files, not the shipped lists
    strict: bool = False  # a bad record is fatal instead of skipped and counted

    def __post_init__(self):
        if isinstance(self.procedure, str):
            self.procedure = self.procedure.lower()  # QMF, Cheema10 ... read as written
        self._one_of("procedure", PROCEDURES, optional=True)
        self._check("fold", self.fold is None or 1 <= self.fold <= 10, "a fold in 1..10")
        self._at_least("split_seed", 0)


@dataclass
class LoraArgs(Section):
    """The low-rank adapters (``train.method=lora``) and the projector beside them."""

    section: ClassVar[str] = "lora"
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    train_projector: bool = True  # the projector is trained in full, as in LLaVA's recipe
    projector_lr: float | None = 2e-5  # None: the main learning rate

    def __post_init__(self):
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
    method: str = "lora"  # lora (the paper) | full (language model + projector; vision frozen)
    prompt: str = "full"  # full | multimodal-only | an order such as "multimodal,text,image"
    lr: float = 2e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 16  # per device
    grad_accum: int = 1  # effective batch = batch_size x grad_accum x devices (paper: 16)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs; -1: train the epochs
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
    progress: bool = True  # a progress bar on stderr (plain lines when it is not a terminal)
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. llavac/configs/zero3.json
    fsdp: str | None = None  # the Trainer's FSDP option, e.g. "full_shard auto_wrap"

    def __post_init__(self):
        self._one_of("method", TRAIN_METHODS)
        self._check("lr", self.lr > 0, "a learning rate > 0")
        self._check("warmup_ratio", 0 <= self.warmup_ratio < 1, "a fraction in [0, 1)")
        self._at_least("weight_decay", 0)
        for key in ("batch_size", "grad_accum", "save_steps", "logging_steps"):
            self._at_least(key, 1)
        self._check("epochs", self.epochs > 0, "a number of epochs > 0")
        self._check("max_steps", self.max_steps == -1 or self.max_steps >= 1,
                    "-1 (train the epochs) or a number of steps >= 1")
        self._at_least("max_length", 1, optional=True)
        self._at_least("save_total_limit", 1, optional=True)
        self._at_least("seed", 0)
        self._at_least("num_workers", 0)


@dataclass
class EvalArgs(Section):
    """One evaluation of a classifier on one part of a split."""

    section: ClassVar[str] = "eval"
    output: str = "runs/eval"
    part: str | None = None  # train | validation | test | all; None: test (all for "none")
    method: str = "score"  # score the label candidates | generate and parse (the paper)
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self):
        self._one_of("part", ("train", "validation", "test", "all"), optional=True)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)


@dataclass
class PredictArgs(Section):
    """``llavac predict``: one pair, or every record of a file."""

    section: ClassVar[str] = "predict"
    image: str | None = None  # one image ...
    text: str | None = None  # ... and its text
    input: str | None = None  # or a JSONL / CSV / Parquet file or an exported split folder
    out: str | None = None  # JSONL predictions; None: stdout
    method: str = "score"
    batch_size: int = 16
    progress: bool = True
    # Corpus jobs (--input); see llavac.predict.corpus.
    resume: bool = False  # skip the ids already in `out` and append the rest
    overwrite: bool = False  # replace an existing `out` (without either, it is an error)
    strict: bool = False  # the first bad row is fatal instead of skipped and reported
    num_workers: int | None = None  # DataLoader workers; None: the cores per process less one, <= 4
    limit: int | None = None  # only the first N input rows (a trial run, a benchmark)
    bucket: int = 8  # batches per length-sorted window: less padding, a few windows of memory
    progress_every: float = 30.0  # seconds between progress lines when stderr is not a terminal

    def __post_init__(self):
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)
        self._at_least("num_workers", 0, optional=True)
        self._at_least("limit", 0, optional=True)
        self._at_least("bucket", 1)
        self._at_least("progress_every", 0)


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as ``config.yaml`` in its output folder."""

    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    train: TrainArgs = field(default_factory=TrainArgs)


@dataclass
class EvalConfig:
    """One evaluation; saved as ``config.yaml`` in its output folder."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    data: DataArgs = field(default_factory=DataArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)


@dataclass
class PredictConfig:
    """One ``llavac predict`` call."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    predict: PredictArgs = field(default_factory=PredictArgs)


@dataclass
class ExperimentArgs(Section):
    """Which runs to make and how to evaluate them."""

    section: ClassVar[str] = "experiment"
    output: str = "runs/experiment"
    procedures: list[str] = field(default_factory=lambda: ["qmf"])
    folds: list[int] = field(default_factory=lambda: list(range(1, 11)))  # cheema10 only
    seeds: list[int] = field(default_factory=lambda: [0])  # training seed (+ random811 split)
    method: str = "score"  # score | generate (the paper generates and parses)
    batch_size: int = 16  # evaluation batch
    part: str = "test"


@dataclass
class ExperimentConfig(TrainConfig):
    """An experiment preset: the training config every run shares, plus which runs to make."""

    experiment: ExperimentArgs = field(default_factory=ExperimentArgs)
