"""Fine-tuning: the answer-only collator and the Trainer + peft recipe (setup -> fit -> save).

    train(TrainConfig, resume=False) -> the run's output folder
"""

from llavac.args import DataArgs, LoraArgs, ModelArgs, TrainArgs, TrainConfig
from llavac.train.recipe import train

__all__ = ["DataArgs", "LoraArgs", "ModelArgs", "TrainArgs", "TrainConfig", "train"]
