"""The families beyond LLaVA, through every stage on their tiny twins: Qwen2.5-VL and Qwen2-VL
(M-RoPE positions, a processor built without its video processor) and SmolVLM (Idefics3 with
split images). Each trains two steps of the paper's recipe; its run folder then predicts
(score and generate), is exported, and the export serves a request with the run's answer.
Scoring, generation, the answer-only labels and LoRA targets are pinned for every family in
test_predict.py, test_train.py and test_models.py; this file runs the whole path once per
new family."""

from __future__ import annotations

import io
import json

import pytest
import torch
import yaml
from conftest import tiny_train_config
from fastapi.testclient import TestClient
from PIL import Image

from llavac.labels import LABELS
from llavac.models import input_defaults, load_model, load_processor, model_type
from llavac.predict import Classifier
from llavac.runs.export import export_run
from llavac.serve import create_app
from llavac.train import train

NEW_FAMILIES = ["tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-smolvlm"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_trains_two_steps_then_predicts_exports_and_serves(name, synthetic_release, tmp_path):
    run = train(tiny_train_config(
        synthetic_release, tmp_path / "run", f"model.name={name}", "train.tuning=lora",
        "train.gradient_checkpointing=true", "train.max_steps=2", "train.logging_steps=1"))
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [step["loss"] for step in steps if "loss" in step]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)  # not NaN
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert (recorded["image_mode"], recorded["system"]) == input_defaults(model_type(name)) \
        == ("processor", "none")  # the family's own images and chat template

    classifier = Classifier.from_pretrained(adapter=run)  # the run folder alone
    assert type(classifier.processor) is type(load_processor(name))  # run/processor reloads
    image, text = Image.new("RGB", (44, 30), (30, 160, 220)), "what a wonderful day"
    (scored,) = classifier.classify([(image, text)])
    (generated,) = classifier.classify([(image, text)], "generate")
    # untrained: whatever it wrote is kept, and labels only where it parses
    assert generated.unparseable == (classifier.fmt.parse(generated.answer) is None)
    exported = Classifier.from_pretrained(str(export_run(run, tmp_path / "export")))
    with TestClient(create_app(exported, model_name=name)) as client:
        response = client.post("/v1/classify", data={"text": text},
                               files={"image": ("photo.png", _png(image), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    for slot, probabilities in scored.probabilities.items():
        assert answer[f"{slot}_label"] == scored.label(slot) in LABELS
        assert sum(answer["probabilities"][slot].values()) == pytest.approx(1.0, abs=1e-5)
        assert answer["probabilities"][slot] == pytest.approx(probabilities, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen2-vl"])
def test_qwen_processors_load_without_a_video_processor_from_saved_and_hub_folders(
        name, tmp_path):
    """llavac builds Qwen processors from their image processor and tokenizer alone, on every
    machine, from its own saved folders and from a hub checkpoint's layout alike. The folder
    they save names the family's processor, and the video processor's settings as a Qwen
    checkpoint keeps them (the image processor's), so plain transformers loads it wherever
    torchvision is installed, and names torchvision where it is not."""
    import transformers
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    model, processor = load_model(name)
    assert not hasattr(processor, "video_processor")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    family_class = getattr(transformers, type(processor).__name__)  # the same name
    assert isinstance(processor, family_class) and type(processor) is not family_class
    assert saved["processor_class"] == family_class.__name__
    assert saved["video_processor"] == saved["image_processor"]

    reloaded = load_processor(str(tmp_path))
    image = Image.new("RGB", (40, 56), (200, 40, 90))
    prompt = "<|vision_start|><|image_pad|><|vision_end|>hi"
    ours, again = (p(images=[image], text=[prompt], return_tensors="pt")
                   for p in (processor, reloaded))
    assert ours.keys() == again.keys() and all(torch.equal(ours[k], again[k]) for k in ours)
    # A hub checkpoint's layout: no processor_config.json; the image processor's file names
    # the processor class, the chat template has its own file.
    hub = tmp_path / "hub"
    model.save_pretrained(hub)
    processor.image_processor.save_pretrained(hub)
    processor.tokenizer.save_pretrained(hub)
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": processor.chat_template}))
    images_file = hub / "preprocessor_config.json"
    images_file.write_text(json.dumps({**json.loads(images_file.read_text()),
                                       "processor_class": family_class.__name__}))
    from_hub = load_processor(str(hub))
    assert type(from_hub) is type(processor) and from_hub.chat_template == processor.chat_template
    assert torch.equal(from_hub(images=[image], text=[prompt], return_tensors="pt")["input_ids"],
                       ours["input_ids"])
    if is_torchvision_available():
        plain = AutoProcessor.from_pretrained(tmp_path)
        assert type(plain) is family_class and plain.video_processor is not None
    else:
        with pytest.raises((ImportError, ValueError), match="[Tt]orchvision"):
            AutoProcessor.from_pretrained(tmp_path)
