"""Every knob of every command, as config sections whose defaults are the paper's choices.

A command's config is a dataclass of these sections (``TrainConfig`` = ``model`` + ``data`` +
``lora`` + ``train``; ``EvalConfig`` = ``model`` + ``data`` + ``eval``; ...). A YAML preset
(``llavac/configs/``) fills some of them, flags and ``section.key=value`` overrides win, and
the resolved config is saved next to every checkpoint and result (``llavac.config``).

Training defaults follow the LLaVA repository's task-LoRA recipe that LLaVAC fine-tunes with
(``scripts/v1_5/finetune_task_lora.sh``), except where a comment says otherwise.

Each section checks its own values when it is built, so a bad value is one error naming its
key, before any model is loaded, from the command line and from Python alike.

    common.py   Section (the checks), the model / classifier / data sections
    train.py    lora, train; the train, experiment and sweep configs
    predict.py  eval, predict, calibrate, prompt, robustness, explain and their configs
    serve.py    serve and its config
    tools.py    data check / export, compare, report, export and demo and their configs
"""

from llavac.args.common import (
    IMAGE_MODES,
    METHODS,
    REPORT_TO,
    TUNINGS,
    ClassifierArgs,
    DataArgs,
    ModelArgs,
    Section,
)
from llavac.args.predict import (
    CalibrateArgs,
    CalibrateConfig,
    EvalArgs,
    EvalConfig,
    ExplainArgs,
    ExplainConfig,
    PredictArgs,
    PredictConfig,
    PromptArgs,
    PromptConfig,
    RobustnessArgs,
    RobustnessConfig,
)
from llavac.args.serve import (
    ServeArgs,
    ServeConfig,
)
from llavac.args.tools import (
    CheckConfig,
    CompareConfig,
    DemoConfig,
    ExportConfig,
    ReportConfig,
    SplitExportConfig,
)
from llavac.args.train import (
    ExperimentArgs,
    ExperimentConfig,
    LoraArgs,
    SweepArgs,
    SweepConfig,
    TrainArgs,
    TrainConfig,
)

__all__ = [
    "CalibrateArgs",
    "CalibrateConfig",
    "CheckConfig",
    "ClassifierArgs",
    "CompareConfig",
    "DataArgs",
    "DemoConfig",
    "EvalArgs",
    "EvalConfig",
    "ExperimentArgs",
    "ExperimentConfig",
    "ExplainArgs",
    "ExplainConfig",
    "ExportConfig",
    "IMAGE_MODES",
    "LoraArgs",
    "METHODS",
    "ModelArgs",
    "PredictArgs",
    "PredictConfig",
    "PromptArgs",
    "PromptConfig",
    "REPORT_TO",
    "ReportConfig",
    "RobustnessArgs",
    "RobustnessConfig",
    "Section",
    "ServeArgs",
    "ServeConfig",
    "SplitExportConfig",
    "SweepArgs",
    "SweepConfig",
    "TUNINGS",
    "TrainArgs",
    "TrainConfig",
]
