"""Fine-tuning: the answer-only collator and the Trainer + peft recipe."""

from llavac.train.args import DataArgs, LoraArgs, ModelArgs, TrainArgs, TrainConfig
from llavac.train.recipe import train

__all__ = ["DataArgs", "LoraArgs", "ModelArgs", "TrainArgs", "TrainConfig", "train"]
