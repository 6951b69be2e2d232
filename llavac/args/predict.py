"""Sections of the commands that use a trained classifier: ``evaluate``, ``predict``,
``calibrate``, ``prompt``, ``robustness``, ``explain``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from llavac.args.common import METHODS, ClassifierArgs, DataArgs, Section

ENGINES = ("local", "ray")
OUT_FORMATS = ("jsonl", "parquet")


@dataclass
class EvalArgs(Section):
    """One evaluation of a classifier on one part of a split."""

    section: ClassVar[str] = "eval"
    output: str = "runs/eval"
    overwrite: bool = False  # replace a finished evaluation in `output`
    part: str | None = None  # train | validation | test | all; None: test (all for "none")
    method: str = "score"  # score the label candidates | generate and parse (the paper)
    batch_size: int = 16
    progress: bool = True
    # Reporting a run on records it trained on measures memory, not generalisation: refused
    # unless asked for deliberately (llavac.runs.leakage).
    allow_overlap: bool = False
    # Modality reliance (llavac.evaluation.reliance, score only): each pair scored again with
    # its image blanked and with its text removed, i.e. 2 more scoring passes per pair. On
    # at most this many pairs (a seeded sample beyond: all of every paper test set, a bounded
    # cost on a corpus); 0: off.
    reliance_pairs: int = 1000
    # report.html's gallery (thumbnails and texts) stays under this many MB; past it, a
    # sample of the pairs is shown and the page says so (llavac.evaluation.html_report).
    report_max_mb: float = 10.0

    def __post_init__(self):
        self._one_of("part", ("train", "validation", "test", "all"), optional=True)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)
        self._at_least("reliance_pairs", 0)
        self._check("report_max_mb", self.report_max_mb > 0, "a size in MB > 0")


@dataclass
class PredictArgs(Section):
    """``llavac predict``: one pair, or every record of a file."""

    section: ClassVar[str] = "predict"
    image: str | None = None  # one image ...
    text: str | None = None  # ... and its text
    input: str | None = None  # or a JSONL / CSV / Parquet file or an exported split folder
    output: str | None = None  # JSONL predictions (engine ray: a folder); None: stdout
    method: str = "score"
    batch_size: int = 16
    progress: bool = True
    # Slots whose (calibrated) top probability is below this are labelled "uncertain"
    # (probabilities kept); None: always answer. Needs method score.
    min_confidence: float | None = None
    # Corpus jobs (--input); see llavac.predict.corpus.
    resume: bool = False  # continue the job in `output`: skip what it finished (ids, blocks)
    overwrite: bool = False  # replace an existing `output` (without either, it is an error)
    strict: bool = False  # the first bad row is fatal instead of skipped and reported
    num_workers: int | None = None  # DataLoader workers; None: the cores per process less one, <= 4
    limit: int | None = None  # only the first N input rows (a trial run, a benchmark)
    bucket: int = 8  # batches per length-sorted window: less padding, a few windows of memory
    progress_every: float = 30.0  # seconds between progress lines when stderr is not a terminal
    max_image_pixels: int = 4096 * 4096  # width x height above which an image is refused
    # Where the job runs (llavac.predict.corpus): local (this process and its DataLoader
    # workers; `out` is one JSONL file) or ray (a Ray cluster; `out` is a folder of files,
    # committed one window of batch_size * bucket rows at a time; pip install "llavac[ray]").
    # Keys of the ray engine with the local one are refused when the job starts, once every
    # flag and override is applied (llavac.predict.corpus).
    engine: str = "local"
    ray_address: str | None = None  # engine ray: auto | ray://HOST:PORT | None: a local Ray
    concurrency: int | None = None  # engine ray: model actors; None: one per GPU, else 1
    out_format: str = "jsonl"  # engine ray: jsonl | parquet result files

    def __post_init__(self):
        self._one_of("method", METHODS)
        self._one_of("engine", ENGINES)
        self._one_of("out_format", OUT_FORMATS)
        self._at_least("concurrency", 1, optional=True)
        self._at_least("batch_size", 1)
        self._at_least("num_workers", 0, optional=True)
        self._at_least("limit", 0, optional=True)
        self._at_least("bucket", 1)
        self._at_least("progress_every", 0)
        self._at_least("max_image_pixels", 1)
        self._check("min_confidence", self.min_confidence is None
                    or 0 <= self.min_confidence <= 1, "a probability in [0, 1] or null")
        self._check("min_confidence", self.min_confidence is None or self.method == "score",
                    "null with predict.method generate (it gives no probabilities)")


@dataclass
class CalibrateArgs(Section):
    """``llavac calibrate``: fit one temperature per slot on the validation part."""

    section: ClassVar[str] = "calibrate"
    overwrite: bool = False  # replace the run's calibration.json
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
    ids: bool = False  # also print the token ids


@dataclass
class RobustnessArgs(Section):
    """``llavac robustness``: one trained run evaluated under every prompt variant."""

    section: ClassVar[str] = "robustness"
    output: str = "runs/robustness"
    overwrite: bool = False  # replace a finished robustness study in `output`
    variants: str | None = None  # a variants YAML; None: llavac/configs/prompt_variants.yaml
    part: str | None = None  # None: test (all for own data without a split)
    method: str = "score"  # score | generate: the paper generates, so its parser is tested too
    batch_size: int = 16
    progress: bool = True
    allow_overlap: bool = False  # as eval.allow_overlap: report records the run trained on

    def __post_init__(self):
        self._one_of("part", ("train", "validation", "test", "all"), optional=True)
        self._one_of("method", METHODS)
        self._at_least("batch_size", 1)


@dataclass
class ExplainArgs(Section):
    """``llavac explain``: what drove each label of one pair, or of every pair of a file,
    by occlusion (llavac.explain)."""

    section: ClassVar[str] = "explain"
    image: str | None = None  # one image ...
    text: str | None = None  # ... and its text
    input: str | None = None  # or a JSONL / CSV / Parquet file or an exported split folder
    output: str = "runs/explain"  # explanations.jsonl and heatmaps/<id>_<slot>.png
    overwrite: bool = False  # replace finished explanations in `output`
    # Cells per side of the occlusion grid over the image: grid**2 scored variants a pair.
    grid: int = 6
    batch_size: int = 16  # occluded variants per model call
    top_words: int = 3  # words printed per slot (the JSON holds them all)

    def __post_init__(self):
        self._at_least("grid", 1)
        self._at_least("batch_size", 1)
        self._at_least("top_words", 0)


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
class RobustnessConfig:
    """One ``llavac robustness`` call; saved as ``config.yaml`` in its output folder."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    data: DataArgs = field(default_factory=DataArgs)
    robustness: RobustnessArgs = field(default_factory=RobustnessArgs)


@dataclass
class ExplainConfig:
    """One ``llavac explain`` call."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    explain: ExplainArgs = field(default_factory=ExplainArgs)
