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
IMAGE_MODES = ("pad", "crop", "processor")  # llavac.models.inputs says what each does
SWEEP_METRICS = ("accuracy", "weighted_f1")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")


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
    # How images and the conversation reach the model (llavac.models.inputs). None: the
    # family's default, filled in when training starts so the run records it: for LLaVA-1.5
    # the paper's inputs (images padded to a square, LLaVA's v1 conversation), for other
    # families their processor's images and their own chat template.
    image_mode: str | None = None  # pad | crop | processor
    system: str | None = None  # llava_v1 | none | a system sentence of your own

    def __post_init__(self):
        self._check("name", bool(self.name), "a model name or path")
        _check_inputs(self)


def _check_inputs(section: Section) -> None:
    section._one_of("image_mode", IMAGE_MODES, optional=True)
    section._check("system", section.system is None or bool(section.system.strip()),
                   "llava_v1, none, a system sentence or null")


@dataclass
class ClassifierArgs(Section):
    """A trained classifier to load for prediction (evaluate, predict, serve, ...)."""

    section: ClassVar[str] = "model"
    name: str | None = None  # the base model; None: the one the adapter's training run names
    adapter: str | None = None  # a training run folder or a peft adapter; None: zero-shot
    prompt: str | None = None  # None: the training run's prompt, else "full"
    dtype: str | None = None  # None: the run's model.dtype, else the checkpoint's own
    device: str | None = None  # None: CUDA when available, else the CPU
    # Apply the run folder's calibration.json (llavac calibrate) when it has one: the
    # probabilities then mean what they say. false: the model's raw probabilities.
    calibrated: bool = True
    # None: what the training run recorded (a run from before these existed: processor,
    # none), else the family's default; see ModelArgs. Training and prediction then agree.
    image_mode: str | None = None  # pad | crop | processor
    system: str | None = None  # llava_v1 | none | a system sentence of your own

    def __post_init__(self):
        _check_inputs(self)


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
    # A prompt variants file (llavac/configs/prompt_variants.yaml): each example asks one
    # variant, drawn by train.seed and its id; None: the fixed prompt, as in the paper.
    prompt_variants: str | None = None
    report_to: str = "none"  # tensorboard | wandb | mlflow | none: nothing leaves the machine

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
        self._one_of("report_to", REPORT_TO)


@dataclass
class EvalArgs(Section):
    """One evaluation of a classifier on one part of a split."""

    section: ClassVar[str] = "eval"
    output: str = "runs/eval"
    part: str | None = None  # train | validation | test | all; None: test (all for "none")
    method: str = "score"  # score the label candidates | generate and parse (the paper)
    batch_size: int = 16
    progress: bool = True
    # Reporting a run on records it trained on measures memory, not generalisation: refused
    # unless asked for deliberately (llavac.leakage).
    allow_overlap: bool = False

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
    # Slots whose (calibrated) top probability is below this are labelled "uncertain"
    # (probabilities kept); None: always answer. Needs method score.
    min_confidence: float | None = None
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
        self._check("min_confidence", self.min_confidence is None
                    or 0 <= self.min_confidence <= 1, "a probability in [0, 1] or null")
        self._check("min_confidence", self.min_confidence is None or self.method == "score",
                    "null with predict.method generate (it gives no probabilities)")


@dataclass
class CalibrateArgs(Section):
    """``llavac calibrate``: fit one temperature per slot on the validation part."""

    section: ClassVar[str] = "calibrate"
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self):
        self._at_least("batch_size", 1)


@dataclass
class PromptArgs(Section):
    """``llavac prompt``: one example to show as the model sees it."""

    section: ClassVar[str] = "prompt"
    text: str | None = None
    image: str | None = None  # None: a blank square of the processor's size stands in
    answer: str | None = None  # e.g. "positive, neutral, positive": show the trained tokens


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
class CalibrateConfig:
    """One ``llavac calibrate`` call; ``model.adapter`` is the run folder it writes into."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    data: DataArgs = field(default_factory=DataArgs)
    calibrate: CalibrateArgs = field(default_factory=CalibrateArgs)


@dataclass
class PromptConfig:
    """One ``llavac prompt`` call."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)


@dataclass
class RobustnessArgs(Section):
    """``llavac robustness``: one trained run evaluated under every prompt variant."""

    section: ClassVar[str] = "robustness"
    output: str = "runs/robustness"
    variants: str | None = None  # a variants YAML; None: llavac/configs/prompt_variants.yaml
    part: str | None = None  # None: test (all for own data without a split)
    method: str = "score"  # score | generate: the paper generates, so its parser is tested too
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self):
        self._one_of("part", ("train", "validation", "test", "all"), optional=True)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)


@dataclass
class RobustnessConfig:
    """One ``llavac robustness`` call; saved as ``config.yaml`` in its output folder."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    data: DataArgs = field(default_factory=DataArgs)
    robustness: RobustnessArgs = field(default_factory=RobustnessArgs)


@dataclass
class ExperimentArgs(Section):
    """Which runs to make and how to evaluate them."""

    section: ClassVar[str] = "experiment"
    output: str = "runs/experiment"
    procedures: list[str] = field(default_factory=lambda: ["qmf"])
    folds: list[int] = field(default_factory=lambda: list(range(1, 11)))  # cheema10 only
    seeds: list[int] = field(default_factory=lambda: [0])  # training seed (+ random811 split)
    # Each run is evaluated with every method: generate + the strict parser is the paper's
    # way (its numbers stand beside the paper's, with the unparseable count); score needs no
    # parsing and gives probabilities. ``experiment.method`` still reads.
    methods: list[str] = field(default_factory=lambda: ["generate", "score"])
    batch_size: int = 16  # evaluation batch
    part: str = "test"
    # Another experiment's output folder (e.g. the multimodal-only ablation of this one):
    # its runs of the same name are compared with this one's (llavac compare) in results.md.
    compare_with: str | None = None

    def __post_init__(self):
        self._check("methods", bool(self.methods) and all(m in METHODS for m in self.methods)
                    and len(set(self.methods)) == len(self.methods),
                    "a list of distinct methods from " + ", ".join(METHODS))


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
    trials: int = 20  # in the study in all: a second call with more continues it
    space: str | None = None  # a search-space YAML; None: llavac/configs/sweep_space.yaml
    storage: str | None = None  # an Optuna storage URL; None: sqlite in output/study.db
    study: str = "llavac"  # the study's name inside the storage
    metric: str = "accuracy"  # of the multimodal label on the validation part (never test)
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
        self._one_of("metric", SWEEP_METRICS)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)
        self._at_least("startup_trials", 0)


@dataclass
class SweepConfig(TrainConfig):
    """A sweep: the training config every trial starts from, plus the search's settings."""

    sweep: SweepArgs = field(default_factory=SweepArgs)


@dataclass
class ServeArgs(Section):
    """``llavac serve``: where to listen, who may call, how much to accept, how to stop."""

    section: ClassVar[str] = "serve"
    host: str = "127.0.0.1"  # loopback: another address needs an API key (or insecure_no_auth)
    port: int = 8000
    method: str = "score"  # score (probabilities, never unparseable) | generate
    # -- what one request may carry: a public demo on a small machine
    max_body_mb: float = 10.0  # the whole HTTP body, base64 included
    max_text_chars: int = 2000
    max_batch_items: int = 32  # longest list /v1/classify/batch takes
    max_image_pixels: int = 40_000_000  # decoded size: a small PNG can unpack to gigabytes
    # -- batching: requests that arrive while the model is busy share its next call
    max_batch_size: int = 8
    max_wait_ms: float = 2.0  # an idle server waits this long for company
    # -- who may call: keys are read from here, LLAVAC_API_KEY and api_key_file, all merged
    api_key: str | None = None  # one key, or several separated by commas
    api_key_file: str | None = None  # one key per line; '#' starts a comment
    insecure_no_auth: bool = False  # allow a non-loopback host without any key
    # -- backpressure: turn the excess away at once instead of slowing everyone down
    max_queue: int = 128  # waiting examples; 4 full batch requests, ~2 s of a 7B on one GPU
    rate_limit: float | None = None  # requests per second per key (client address without
    rate_burst: int | None = None  # keys); None: no limit. Burst None: max(1, rate_limit)
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for accepted requests to finish
    log_level: str = "info"

    def __post_init__(self):
        self._one_of("method", METHODS)
        self._check("port", 0 <= self.port <= 65535, "a TCP port in 0..65535")
        self._check("max_body_mb", self.max_body_mb > 0, "a size in MB > 0")
        for key in ("max_text_chars", "max_batch_items", "max_image_pixels", "max_batch_size",
                    "max_queue"):
            self._at_least(key, 1)
        self._at_least("max_wait_ms", 0)
        self._check("max_queue", self.max_queue >= self.max_batch_items,
                    f"at least max_batch_items ({self.max_batch_items}), or a full batch "
                    "request could never be queued")
        self._check("rate_limit", self.rate_limit is None or self.rate_limit > 0,
                    "requests per second > 0 or null")
        self._at_least("rate_burst", 1, optional=True)
        self._at_least("shutdown_timeout", 0)
        self._one_of("log_level", ("critical", "error", "warning", "info", "debug"))


@dataclass
class ServeConfig:
    """One ``llavac serve``: the classifier to load and how to serve it."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    serve: ServeArgs = field(default_factory=ServeArgs)
