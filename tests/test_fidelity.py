"""LLaVA-1.5's inputs as the paper trained them: images padded to a square with the CLIP mean
colour, and LLaVA's v1 conversation. The expectations are re-implemented here from the
descriptions of LLaVA's ``expand2square`` and ``conv_vicuna_v1`` / ``preprocess_multimodal``,
not taken from the code under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
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
from llavac.predict import Classifier
from llavac.predict.classifier import _Run
from llavac.prompt import PromptFormat, render
from llavac.train.collator import IGNORE_INDEX, TrainCollator, with_end_token

# OpenAI CLIP's normalisation constants (the CLIP paper's preprocessing).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])

V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The "
             "assistant gives helpful, detailed, and polite answers to the human's questions.")
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


def test_v1_training_text_and_its_loss_mask():
    """The rendered training text equals LLaVA's v1 text character by character, and the
    loss falls on exactly the answer and ``</s>``."""
    _, processor = load_model("tiny-llava")
    fmt = PromptFormat.from_name("full", "llava_v1")
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
    assert _Run("tiny-llava", None, {}).inputs(None, None) == (None, None)  # family default
    # A run recorded before these choices existed was trained on the plain inputs.
    assert _Run("tiny-llava", None, {"model": {"name": "tiny-llava"}}).inputs(None, None) == (
        "processor", "none")
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
    assert "image_mode=pad, system=llava_v1" in shown
    assert f"<s>{V1_SYSTEM} USER: <image × 16>\n{QUESTION} ASSISTANT:\n" in shown
    assert "trained:" not in shown

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
