"""LLaVA-1.5's inputs as the paper trained them: images padded to a square with the CLIP mean
colour (by the PIL image processor, on every machine), and LLaVA's v1 conversation. The
expectations are re-implemented here from the descriptions of LLaVA's ``expand2square`` and
``conv_vicuna_v1`` / ``preprocess_multimodal``, not taken from the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from llavac.args import ClassifierArgs, ModelArgs
from llavac.cli import main
from llavac.models import (
    apply_image_mode,
    load_model,
    load_processor,
    model_family,
    model_type,
    tiny_names,
)
from llavac.models.answer_labels import IGNORE_INDEX, with_end_token
from llavac.predict import Classifier
from llavac.predict.classifier import ModelSource
from llavac.prompt import PromptFormat, render
from llavac.train.collator import TrainCollator

# OpenAI CLIP's normalisation constants (the CLIP paper's preprocessing).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])

# conv_vicuna_v1's sentence (LLaVA's --version v1), and conv_llava_v1's (llavac 0.2's default).
V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The "
             "assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's "
                   "questions.")
QUESTION = (
    "Consider the following Image and Text.\nImage: \nText: so happy today\n"
    "Classify the sentiment labels (negative, neutral, positive) for the Image and Text labels, "
    "separately.\nFinally, jointly analyze and classify the multimodal label for both Image and "
    "Text.\nProvide a short answer with 3 labels for Text, Image, and Multimodal labels, "
    "respectively."
)
V1_PROMPT = f"{V1_SYSTEM} USER: <image>\n{QUESTION} ASSISTANT:"
V1_TRAINING_TEXT = f"{V1_PROMPT} positive, neutral, positive</s>"


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def independent_pad(image: Image.Image) -> np.ndarray:
    """Centre ``image`` on a square canvas of the CLIP mean colour (0..1 floats, HWC)."""
    width, height = image.size
    side = max(width, height)
    canvas = np.empty((side, side, 3))
    canvas[:] = CLIP_MEAN
    left, top = (side - width) // 2, (side - height) // 2
    canvas[top : top + height, left : left + width] = np.asarray(image) / 255
    return canvas


@pytest.mark.parametrize("size", [(32, 20), (20, 32), (32, 21), (13, 32)],
                         ids=["wide", "tall", "wide-odd", "tall-odd"])
def test_padded_pixels_match_an_independent_pad_to_square(size):
    """The tiny LLaVA's input side is 32: the padded square needs no resizing, so the pixels
    the model gets, un-normalised, are the padded image itself."""
    processor = apply_image_mode(load_processor("tiny-llava"), "pad")
    image = noise_image(*size)
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
    seen = pixels.numpy().transpose(1, 2, 0) * CLIP_STD + CLIP_MEAN
    assert seen.shape == (32, 32, 3)
    np.testing.assert_allclose(seen, independent_pad(image), atol=1 / 255)


def test_crop_and_processor_modes_cut_the_image():
    """``crop`` (and the CLIP processor as shipped) resizes the short side and centre-crops."""
    image = noise_image(64, 32)
    crop = apply_image_mode(load_processor("tiny-llava"), "crop").image_processor
    shipped = load_processor("tiny-llava").image_processor
    cropped = crop(images=[image], return_tensors="pt")["pixel_values"]
    assert cropped.shape[-2:] == (32, 32)
    np.testing.assert_array_equal(cropped, shipped(images=[image],
                                                   return_tensors="pt")["pixel_values"])


@pytest.fixture
def torchvision_present(monkeypatch):
    """transformers as on a machine with torchvision (every GPU machine): the image
    processors' base names resolve to their torchvision backend, as ``AutoProcessor`` gives
    there. CLIP's torchvision class imports here, though it cannot run; LLaVA's does not
    import, so CLIP's stands for it."""
    import transformers
    import transformers.models.auto.image_processing_auto as auto
    import transformers.models.clip as clip
    from transformers.models.clip.image_processing_clip import CLIPImageProcessor

    from llavac.models import tiny_parts

    for module in (transformers.utils, auto, tiny_parts):
        monkeypatch.setattr(module, "is_torchvision_available", lambda: True)
    for module in (transformers, clip):
        monkeypatch.setattr(module, "CLIPImageProcessor", CLIPImageProcessor)
    monkeypatch.setattr(transformers, "LlavaImageProcessor", CLIPImageProcessor)
    return CLIPImageProcessor


@pytest.fixture(scope="module")
def padded_here():
    """``pad``'s pixels of a wide image that needs resizing, on this machine (no torchvision)."""
    processor = apply_image_mode(load_processor("tiny-llava"), "pad")
    return processor.image_processor(images=[noise_image(50, 30)],
                                     return_tensors="pt")["pixel_values"]


def test_pad_uses_the_pil_processor_where_torchvision_is_installed(padded_here, tmp_path,
                                                                   torchvision_present):
    load_processor("tiny-llava").save_pretrained(tmp_path)
    from transformers import AutoProcessor

    for processor in (load_processor("tiny-llava"), AutoProcessor.from_pretrained(tmp_path)):
        assert type(processor.image_processor) is torchvision_present  # the premise
        images = apply_image_mode(processor, "pad").image_processor
        assert type(images).__name__ == "LlavaImageProcessorPil"
        pixels = images(images=[noise_image(50, 30)], return_tensors="pt")["pixel_values"]
        assert torch.equal(pixels, padded_here)


def test_v1_training_text_and_its_loss_mask():
    """The rendered training text equals LLaVA's v1 text character by character, and the
    loss falls on exactly the answer and ``</s>``."""
    _, processor = load_model("tiny-llava")
    fmt = PromptFormat.from_name("full", "vicuna_v1")
    answer = "positive, neutral, positive"
    assert render(processor, fmt, "so happy today") == V1_PROMPT
    full = with_end_token(render(processor, fmt, "so happy today", answer), processor.tokenizer)
    assert full == V1_TRAINING_TEXT

    batch = TrainCollator(processor, fmt).encode(["x"], [noise_image(40, 30)],
                                                 ["so happy today"], [answer])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    tokenizer = processor.tokenizer
    prompt_ids = tokenizer(V1_PROMPT)["input_ids"]
    expected = tokenizer(V1_TRAINING_TEXT)["input_ids"][len(prompt_ids):]
    trained = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    assert trained == list(range(len(ids) - len(expected), len(ids)))  # the end, one run
    assert labels[trained].tolist() == ids[trained].tolist() == expected
    assert tokenizer.decode(expected) == " positive, neutral, positive</s>"


def test_defaults_per_family_and_their_errors():
    assert [model_type(name) for name in tiny_names()] == [
        model_family(load_model(name)[0]) for name in tiny_names()]
    assert ModelSource("tiny-llava", None, {}).inputs(None, None) == (None, None)  # family default
    # A run recorded before these choices existed was trained on the plain inputs.
    old_run = ModelSource("tiny-llava", None, {"model": {"name": "tiny-llava"}})
    assert old_run.inputs(None, None) == ("processor", "none")
    with pytest.raises(ValueError, match=r"model.image_mode=pad.*SiglipImageProcessor"):
        apply_image_mode(load_processor("tiny-paligemma"), "pad")
    with pytest.raises(ValueError, match="model.image_mode: expected one of pad, crop"):
        ModelArgs(image_mode="square")
    with pytest.raises(ValueError, match="model.system"):
        ClassifierArgs(system=" ")


def _probabilities(capsys, *argv) -> dict:
    assert main(["predict", "--model", "tiny-llava", "--text", "what a view", *argv]) == 0
    return json.loads(capsys.readouterr().out)["probabilities"]


def _max_difference(a: dict, b: dict) -> float:
    return max(abs(a[slot][label] - b[slot][label]) for slot in a for label in a[slot])


def test_predict_pads_wide_images_as_padding_by_hand_does(tmp_path, capsys):
    wide = noise_image(96, 40, seed=1)
    wide.save(tmp_path / "wide.png")
    filled = tuple(int(x * 255) for x in CLIP_MEAN)  # LLaVA's expand2square colour
    by_hand = Image.new("RGB", (96, 96), filled)
    by_hand.paste(wide, (0, (96 - 40) // 2))
    by_hand.save(tmp_path / "square.png")

    padded = _probabilities(capsys, "--image", str(tmp_path / "wide.png"))
    square = _probabilities(capsys, "--image", str(tmp_path / "square.png"))
    cropped = _probabilities(capsys, "--image", str(tmp_path / "wide.png"), "--image-mode",
                             "crop")
    assert _max_difference(padded, square) < 1e-4
    assert _max_difference(padded, cropped) > 1e-3


def test_prompt_command_shows_the_v1_conversation(capsys):
    assert main(["prompt", "--model", "tiny-llava", "--text", "so happy today"]) == 0
    shown = capsys.readouterr().out
    assert "image_mode=pad, system=vicuna_v1, images by LlavaImageProcessorPil" in shown
    assert f"<s>{V1_SYSTEM} USER: <image × 16>\n{QUESTION} ASSISTANT:\n" in shown
    assert "trained:" not in shown and "ids:" not in shown

    assert main(["prompt", "--model", "tiny-llava", "--text", "so happy today", "--system",
                 "llava_v1"]) == 0
    assert f"<s>{LLAVA_V1_SYSTEM} USER: <image × 16>\n" in capsys.readouterr().out

    assert main(["prompt", "--model", "tiny-llava", "--text", "so happy today", "--answer",
                 "Positive, neutral, positive"]) == 0
    shown = capsys.readouterr().out
    assert f"{V1_PROMPT.replace('<image>', '<image × 16>')} positive, neutral, positive</s>\n" \
        in shown
    assert "trained: 6 tokens" in shown
    assert "= ' positive, neutral, positive</s>'" in shown


def test_prompt_command_keeps_other_families_chat_template(capsys):
    assert main(["prompt", "--model", "tiny-gemma3", "--text", "so happy today"]) == 0
    shown = capsys.readouterr().out
    assert "image_mode=processor, system=none" in shown and V1_SYSTEM not in shown
    assert "<start_of_turn>user" in shown and "<image_soft_token × 16>" in shown


def test_prompt_command_reports_the_padding(tmp_path, capsys):
    noise_image(64, 40).save(tmp_path / "wide.png")
    assert main(["prompt", "--model", "tiny-llava", "--text", "t", "--image",
                 str(tmp_path / "wide.png")]) == 0
    assert ("image:   64x40 -> padded to 64x64 (left 0, top 12, right 0, bottom 12; "
            "fill 122,116,104) -> 32x32 pixels (pad)") in capsys.readouterr().out
    assert main(["prompt", "--model", "tiny-llava", "--text", "t", "--answer", "good"]) == 2
    assert "--answer 'good': expected one label per slot" in capsys.readouterr().err


def test_a_run_is_predicted_with_the_inputs_it_was_trained_on(synthetic_release, tmp_path):
    from conftest import tiny_train_config

    from llavac.train import train

    run = train(tiny_train_config(synthetic_release, tmp_path / "run", "train.max_steps=1",
                                  "train.batch_size=2", "model.image_mode=crop",
                                  "model.system=Answer briefly."))
    classifier = Classifier.from_pretrained(adapter=run)
    assert classifier.source["image_mode"] == "crop"
    assert classifier.fmt.system == "Answer briefly."
    assert not getattr(classifier.processor.image_processor, "do_pad", False)
    padded = Classifier.from_pretrained(adapter=run, image_mode="pad")  # explicit wins
    assert padded.processor.image_processor.do_pad


# A training run's config.yaml as llavac 0.2 saved it (0.2's keys: train.batch_size and
# grad_accum, no global batch; system llava_v1, its default then), and the probabilities
# llavac 0.2 predicted with the run it describes for the golden pair (tests/test_golden.py).
V02_CONFIG = {
    "model": {"name": "tiny-llava", "dtype": None, "attn_implementation": None,
              "load_in_4bit": False, "seed": 0, "image_mode": "pad", "system": "llava_v1"},
    "data": {"path": "{data}", "procedure": "random811", "fold": None, "split_seed": 0,
             "splits_dir": None, "strict": False},
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "train_projector": True,
             "projector_lr": 2.0e-05},
    "train": {"output": "{output}", "method": "lora", "prompt": "full", "lr": 0.002,
              "scheduler": "cosine", "warmup_ratio": 0.03, "weight_decay": 0.0,
              "batch_size": 4, "grad_accum": 1, "epochs": 4.0, "max_steps": 2, "bf16": False,
              "gradient_checkpointing": False, "max_length": 2048, "save_steps": 1000,
              "save_total_limit": 2, "logging_steps": 10, "seed": 0, "num_workers": 0,
              "progress": False, "deepspeed": None, "fsdp": None, "prompt_variants": None,
              "report_to": "none"},
}
V02_PROBABILITIES = {
    "text": {"negative": 0.390627, "neutral": 0.326789, "positive": 0.282584},
    "image": {"negative": 0.322507, "neutral": 0.300885, "positive": 0.376608},
    "multimodal": {"negative": 0.321616, "neutral": 0.300727, "positive": 0.377657},
}


def test_a_run_saved_by_02_trains_loads_and_predicts_as_it_did(synthetic_release, tmp_path):
    """A 0.2 config trains as 0.2 did (its batch keys, its system sentence), and the run,
    with 0.2's config.yaml, predicts the probabilities 0.2 predicted."""
    import random

    from llavac.config import load_config
    from llavac.data.synthetic import synthetic_image
    from llavac.train import TrainConfig, train

    saved = yaml.safe_dump(V02_CONFIG).replace("{data}", str(synthetic_release)).replace(
        "{output}", str(tmp_path / "run"))
    (tmp_path / "v02.yaml").write_text(saved)
    run = train(load_config(TrainConfig, tmp_path / "v02.yaml"))
    (run / "config.yaml").write_text(saved)
    classifier = Classifier.from_pretrained(adapter=run)
    assert (classifier.fmt.system, classifier.source["image_mode"]) == ("llava_v1", "pad")
    assert render(classifier.processor, classifier.fmt, "t").startswith(LLAVA_V1_SYSTEM)
    image = synthetic_image("positive", random.Random(0), 48)
    scored = classifier.classify([(image, "I love this great day")], "score")[0]
    assert _max_difference(scored.probabilities, V02_PROBABILITIES) < 1e-5
