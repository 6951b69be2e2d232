import pytest

from llavac.config import config_hash, load_config
from llavac.train import TrainConfig


def test_preset_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("model:\n  name: tiny-llava\ntrain:\n  lr: 1.0e-3\n  batch_size: 8\n")
    config = load_config(TrainConfig, preset, ["train.lr=5e-4", "lora.r=8", "model.name=7",
                                               "data.fold=3", "lora.projector_lr=null"])
    assert config.model.name == "7"  # a string field stays a string
    assert config.train.lr == 5e-4 and isinstance(config.train.lr, float)
    assert config.train.batch_size == 8
    assert config.lora.r == 8 and config.lora.alpha == 256  # untouched defaults remain
    assert config.data.fold == 3
    assert config.lora.projector_lr is None


def test_values_are_converted_to_their_field_types(tmp_path):
    from llavac.studies.experiment import ExperimentConfig

    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  lr: 1e-4\n  epochs: 2\nexperiment:\n  seeds: 3\n")
    config = load_config(ExperimentConfig, preset, ["experiment.procedures=qmf, clmlf",
                                                    "experiment.folds=[1, 2]",
                                                    "model.name=007"])
    assert config.train.lr == 1e-4 and config.train.epochs == 2.0
    assert config.experiment.seeds == [3]  # a scalar where a list is expected
    assert config.experiment.procedures == ["qmf", "clmlf"]  # not ["q", "m", "f", ...]
    assert config.experiment.folds == [1, 2]
    assert config.model.name == "007"


@pytest.mark.parametrize(("override", "message"), [
    ("train.batch_size=abc", "train.batch_size' expects int"),
    ("train.bf16=maybe", "train.bf16' expects bool"),
    ("train.lr=fast", "train.lr' expects float"),
])
def test_wrong_types_are_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(TrainConfig, None, [override])


def test_a_section_must_be_a_mapping(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train: 3\n")
    with pytest.raises(ValueError, match="'train' must be a mapping"):
        load_config(TrainConfig, preset)


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="train.lrr"):
        load_config(TrainConfig, None, ["train.lrr=1"])
    preset = tmp_path / "p.yaml"
    preset.write_text("lora:\n  rank: 8\n")
    with pytest.raises(ValueError, match="lora.rank"):
        load_config(TrainConfig, preset)


def test_paper_defaults_and_hash_stability():
    config = load_config(TrainConfig)
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (128, 256, 0.05)
    rates = (config.train.lr, config.lora.projector_lr, config.train.warmup_ratio)
    assert rates == (2e-4, 2e-5, 0.03)
    assert config_hash(config) == config_hash(load_config(TrainConfig))
    assert config_hash(config) != config_hash(load_config(TrainConfig, None, ["train.seed=1"]))


@pytest.mark.parametrize("order", [0, 1])
def test_checks_between_two_keys_see_every_flag_whatever_their_order(order):
    """serve.max_queue must hold one full batch request (max_batch_items): lowering both
    works in either order, lowering the queue alone is an error naming its flag."""
    from llavac.cli import build_parser, command_config

    def config(argv):  # the command line's config, built as llavac's dispatch builds it
        args = build_parser().parse_args(argv)
        return command_config(args.command_row, args)

    flags = [["--max-queue", "16"], ["--max-batch-items", "16"]]
    served = config(["serve", *flags[order], *flags[1 - order]]).serve
    assert (served.max_queue, served.max_batch_items) == (16, 16)
    with pytest.raises(ValueError, match=r"^--max-queue: serve.max_queue: expected at least"):
        config(["serve", "--max-queue", "16"])
    mixed = config(["serve", "--max-queue", "16", "serve.max_batch_items=8"])
    assert mixed.serve.max_batch_items == 8
