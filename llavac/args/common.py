"""The config machinery every section shares, and the sections several commands use:
which model (``model``), which trained classifier (``model`` of the prediction commands) and
which data (``data``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llavac.config import ConfigKeyError

METHODS = ("score", "generate")
TUNINGS = ("lora", "full")  # train.tuning: what training updates
IMAGE_MODES = ("pad", "crop", "processor")  # llavac.models.inputs says what each does
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # the Trainer's two torch AdamW kernels


class Section:
    """Mixin for config sections: ``_check`` raises one ``ValueError`` naming the key."""

    section: ClassVar[str] = ""

    def _check(self, key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigKeyError(f"{self.section}.{key}", f"{self.section}.{key}: expected "
                                 f"{expected}, got {getattr(self, key)!r}")

    def _at_least(self, key: str, minimum: float, optional: bool = False) -> None:
        value = getattr(self, key)
        ok = (optional and value is None) or (value is not None and value >= minimum)
        self._check(key, ok, f"a number >= {minimum}" + (" or null" if optional else ""))

    def _one_of(self, key: str, choices: tuple[str, ...], optional: bool = False) -> None:
        value = getattr(self, key)
        ok = (optional and value is None) or value in choices
        self._check(key, ok, "one of " + ", ".join(choices) + (" or null" if optional else ""))


@dataclass
class InputArgs(Section):
    """How images and the conversation reach the model (llavac.models.inputs), the same
    keys for training (``ModelArgs``) and prediction (``ClassifierArgs``). None: for training,
    the family's default, filled in when training starts so the run records it (for
    LLaVA-1.5 the paper's inputs: images padded to a square, LLaVA's v1 conversation; for
    other families their processor's images and their own chat template); for prediction,
    what the training run recorded (a run from before these existed: processor, none)."""

    section: ClassVar[str] = "model"
    image_mode: str | None = None  # pad | crop | processor
    # vicuna_v1 (LLaVA's --version v1) | llava_v1 (0.2's default) | none | a sentence of your own
    system: str | None = None

    def __post_init__(self):
        self._one_of("image_mode", IMAGE_MODES, optional=True)
        self._check("system", self.system is None or bool(self.system.strip()),
                    "vicuna_v1, llava_v1, none, a system sentence or null")


@dataclass
class ModelArgs(InputArgs):
    """Which vision-language model to fine-tune, and how to load it."""

    name: str = "llava-hf/llava-1.5-7b-hf"  # a hub id, a local path, or a built-in tiny-* name
    dtype: str | None = None  # None: the checkpoint's own; "bfloat16", "float32", ...
    attn_implementation: str | None = None  # None: transformers' default (sdpa where it can)
    load_in_4bit: bool = False  # QLoRA through bitsandbytes; needs CUDA
    seed: int = 0  # the weights of a built-in tiny-* model; ignored for real checkpoints

    def __post_init__(self):
        self._check("name", bool(self.name), "a model name or path")
        super().__post_init__()


@dataclass
class ClassifierArgs(InputArgs):
    """A trained classifier to load for prediction (evaluate, predict, serve, ...)."""

    name: str | None = None  # the base model; None: the one the adapter's training run names
    adapter: str | None = None  # a training run folder or a peft adapter; None: zero-shot
    prompt: str | None = None  # None: the training run's prompt, else "full"
    dtype: str | None = None  # None: the run's model.dtype, else the checkpoint's own
    device: str | None = None  # None: CUDA when available, else the CPU
    # Apply the run folder's calibration.json (llavac calibrate) when it has one: the
    # probabilities then mean what they say. false: the model's raw probabilities.
    calibrated: bool = True


@dataclass
class DataArgs(Section):
    """What to train or evaluate on: an exported split folder, a release folder + procedure,
    or an own-data JSONL / CSV file."""

    section: ClassVar[str] = "data"
    path: str | None = None
    # cheema10 | random811 | clmlf | qmf | none (own data: all), or another registered one
    # (llavac.data.procedures, which checks the name when the data is read)
    procedure: str | None = None
    fold: int | None = None  # cheema10: 1..10
    split_seed: int = 0  # random811's shuffle
    splits_dir: str | None = None  # the original published split files, not the shipped lists
    strict: bool = False  # a bad record is fatal instead of skipped and counted
    # Width x height above which an image is skipped (reason image_too_large) before it is
    # decoded: 4 bytes a pixel whatever the file's size. 4096 x 4096 holds any phone photo.
    max_image_pixels: int = 4096 * 4096

    def __post_init__(self):
        if isinstance(self.procedure, str):
            self.procedure = self.procedure.lower()  # QMF, Cheema10 ... read as written
        self._check("fold", self.fold is None or 1 <= self.fold <= 10, "a fold in 1..10")
        self._at_least("split_seed", 0)
        self._at_least("max_image_pixels", 1)
