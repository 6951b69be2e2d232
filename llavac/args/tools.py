"""Sections of the commands around the model runs: ``data check``, ``data export``,
``compare``, ``report``, ``export`` and ``demo``. They take ``--config``, flags and
``key=value`` like the others, so every command reads its settings one way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from llavac.args.common import DataArgs, Section
from llavac.args.train import TrainConfig


@dataclass
class CheckArgs(Section):
    """``llavac data check``: one release folder or own-data file, read whole."""

    section: ClassVar[str] = "check"
    path: str | None = None  # an MVSA release folder or an own-data JSONL / CSV
    json: bool = False  # one JSON object instead of text


@dataclass
class SplitExportArgs(Section):
    """``llavac data export``: where the parts of ``data``'s split are written."""

    section: ClassVar[str] = "split"
    output: str | None = None  # a folder: train / validation / test JSONL + manifest.json


@dataclass
class CompareArgs(Section):
    """``llavac compare``: two evaluation folders of the same test ids."""

    section: ClassVar[str] = "compare"
    eval_a: str | None = None
    eval_b: str | None = None
    json: bool = False  # one JSON object instead of text


@dataclass
class ReportArgs(Section):
    """``llavac report``: the folder whose report.html files are rebuilt."""

    section: ClassVar[str] = "report"
    folder: str | None = None  # an evaluation folder, or a demo / experiment folder above some


@dataclass
class ExportArgs(Section):
    """``llavac export``: a training run as one folder plain transformers loads."""

    section: ClassVar[str] = "export"
    run: str | None = None  # a finished training run folder
    output: str | None = None  # the folder to write
    overwrite: bool = False  # replace an earlier export in `output` (nothing else)


@dataclass
class DemoArgs(Section):
    """``llavac demo``: the whole pipeline, on a synthetic release unless ``data`` is set."""

    section: ClassVar[str] = "demo"
    output: str = "runs/demo"
    data: str | None = None  # a real release folder instead of the synthetic one
    model: str = "tiny-llava"  # a tiny-* model trains with the tiny_synthetic preset
    procedure: str = "random811"
    overwrite: bool = False  # replace a finished demo in `output`

    def __post_init__(self):
        # The procedure is checked against the registry when the demo starts
        # (llavac.studies.demo.check_procedure), as data.procedure is when a split is loaded.
        if isinstance(self.procedure, str):
            self.procedure = self.procedure.lower()


@dataclass
class CheckConfig:
    check: CheckArgs = field(default_factory=CheckArgs)


@dataclass
class SplitExportConfig:
    data: DataArgs = field(default_factory=DataArgs)
    split: SplitExportArgs = field(default_factory=SplitExportArgs)


@dataclass
class CompareConfig:
    compare: CompareArgs = field(default_factory=CompareArgs)


@dataclass
class ReportConfig:
    report: ReportArgs = field(default_factory=ReportArgs)


@dataclass
class ExportConfig:
    export: ExportArgs = field(default_factory=ExportArgs)


@dataclass
class DemoConfig(TrainConfig):
    """The demo's settings, and the training keys it passes on (``train.max_steps=5``) on top
    of its preset."""

    demo: DemoArgs = field(default_factory=DemoArgs)
