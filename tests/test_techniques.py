"""Fine-tuning techniques: the head objective (``train.objective=head``) and peft's LoRA
variants (``lora.variant``), trained on the demo's synthetic release with the tiny LLaVA.

One head run is trained per test session and shared; each LoRA variant's learning run is
``slow``. The fast tests check what a variant changes (peft's config, PiSSA's conversion)
on two-step runs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import tiny_train_config
from fastapi.testclient import TestClient
from filelock import FileLock

from llavac.data import load_data
from llavac.labels import LABELS
from llavac.predict import Classifier
from llavac.serve import create_app

# LoRA on a random-init model needs more steps than the full fine-tune of the demo (its
# embeddings stay random); at lr >= 5e-3 it sticks at the text-only shortcut (stack notes).
LEARNING = ("train.method=lora", "train.lr=1e-3", "train.max_steps=1000",
            "train.save_steps=100000", "train.logging_steps=50")
TWO_STEPS = ("train.method=lora", "train.max_steps=2", "train.save_steps=100000",
             "train.logging_steps=1")


def trained(folder, release, *overrides):
    from llavac.train import train

    return train(tiny_train_config(release, folder, *overrides))


def held_out(run, release):
    """``(records, predictions)`` of the run on the synthetic release's test part."""
    config = tiny_train_config(release, run)
    _, records = load_data(config.data).part(None, default="test")
    return records, Classifier.from_pretrained(adapter=run, device="cpu").predict(
        records, progress=False)


def losses(run) -> list[float]:
    return [entry["loss"] for entry in map(json.loads, (run / "log.jsonl").open())
            if "loss" in entry]


def multimodal_accuracy(records, predictions) -> float:
    return sum(p.multimodal_label == r.multimodal_label
               for p, r in zip(predictions, records, strict=True)) / len(records)


@pytest.fixture(scope="session")
def head_run(tmp_path_factory, synthetic_release):
    """The tiny LLaVA with LoRA and classification heads, trained once per test run (the
    xdist workers share it through a file lock, as ``synthetic_run``)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    run = root / "head-run"
    with FileLock(f"{run}.lock"):
        if not (run / "manifest.json").is_file():
            trained(run, synthetic_release, "train.objective=head", *LEARNING)
    return run


def test_the_head_objective_learns_the_synthetic_task(head_run, synthetic_release):
    loss = losses(head_run)
    assert loss[-1] < 0.5 * loss[0], loss
    records, predictions = held_out(head_run, synthetic_release)
    assert multimodal_accuracy(records, predictions) >= 0.9


def test_head_probabilities_sum_to_one_per_slot_and_generate_is_refused(head_run,
                                                                        synthetic_release):
    records, predictions = held_out(head_run, synthetic_release)
    for prediction in predictions:
        assert set(prediction.probabilities) == {"text", "image", "multimodal"}
        for slot, probs in prediction.probabilities.items():
            assert list(probs) == list(LABELS)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
            assert prediction.label(slot) == max(probs, key=probs.get)
    classifier = Classifier.from_pretrained(adapter=head_run, device="cpu")
    with pytest.raises(ValueError, match="train.objective=head"):
        classifier.predict(records[:2], method="generate", progress=False)


def test_a_head_run_evaluates_serves_and_exports_like_an_answer_run(head_run, tmp_path):
    from llavac.cli import main

    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--adapter", str(head_run), "--output", str(evaluation),
                 "--data", _release_of(head_run), "--procedure", "random811"]) == 0
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["slots"]["multimodal"]["accuracy"] >= 0.9
    assert metrics["slots"]["multimodal"]["ece"] is not None
    assert metrics["provenance"]["objective"] == "head"

    exported = tmp_path / "exported"
    assert main(["export", str(head_run), "--output", str(exported)]) == 0
    assert (exported / "heads.safetensors").is_file()
    card = (exported / "README.md").read_text()
    assert "head objective" in card and "LoRA variant `lora`" in card
    assert json.loads((exported / "llavac.json").read_text())["training"]["objective"] == "head"

    items = [{"image_base64": _b64(seed), "text": f"post {seed} good"} for seed in range(3)]
    answers = []
    for classifier in (Classifier.from_pretrained(adapter=head_run, device="cpu"),
                       Classifier.from_pretrained(str(exported), device="cpu")):
        assert classifier.heads is not None
        with TestClient(create_app(classifier)) as client:
            response = client.post("/v1/classify/batch", json=items)
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"])
    for from_run, from_export in zip(*answers, strict=True):
        for slot, probs in from_run["probabilities"].items():
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
            for label, p in probs.items():
                assert from_export["probabilities"][slot][label] == pytest.approx(p, abs=1e-5)


def _release_of(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["data"]["path"]


def _b64(seed: int) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), ((80 * seed) % 256, 120, 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("variant", "option", "value"), [
    ("lora", "use_dora", False), ("dora", "use_dora", True), ("rslora", "use_rslora", True),
    ("pissa", "init_lora_weights", "pissa"),
])
def test_each_lora_variant_is_peft_s_own(variant, option, value, tiny_llava):
    from llavac.args import LoraArgs
    from llavac.train.recipe import make_trainable

    model = make_trainable(tiny_llava(), LoraArgs(variant=variant, r=4, alpha=8))
    assert getattr(model.peft_config["default"], option) == value
    magnitudes = [n for n, _ in model.named_parameters() if "lora_magnitude_vector" in n]
    assert bool(magnitudes) == (variant == "dora")  # DoRA's per-column magnitudes
    scaling = {layer.scaling["default"] for layer in model.modules() if hasattr(layer, "scaling")
               and isinstance(layer.scaling, dict) and "default" in layer.scaling}
    assert scaling == {8 / 4 ** 0.5 if variant == "rslora" else 8 / 4}


@pytest.fixture
def tiny_llava():
    from llavac.models import load_model

    return lambda: load_model("tiny-llava", seed=0, dtype="float32")[0]


@pytest.mark.parametrize("variant", ["dora", "rslora", "pissa"])
@pytest.mark.slow
def test_each_lora_variant_learns_the_synthetic_task(variant, synthetic_release, tmp_path):
    run = trained(tmp_path / variant, synthetic_release, f"lora.variant={variant}", *LEARNING)
    loss = losses(run)
    assert loss[-1] < 0.5 * loss[0], loss
    assert multimodal_accuracy(*held_out(run, synthetic_release)) >= 0.9


def test_pissa_is_saved_as_a_lora_adapter_of_the_unchanged_base_model(tiny_llava, tmp_path):
    """PiSSA trains on a residual base; its saved adapter (converted, rank 2r, projector
    included) merged into the checkpoint's own weights gives the logits of the model as
    trained."""
    from peft import PeftModel
    from PIL import Image

    from llavac.args import LoraArgs
    from llavac.models import load_model
    from llavac.predict.batching import processor_inputs
    from llavac.prompt import PromptFormat
    from llavac.train.recipe import make_trainable
    from llavac.train.variants import PISSA_INIT, save_pissa_as_lora

    model = make_trainable(tiny_llava(), LoraArgs(variant="pissa", r=4, alpha=8))
    model.save_pretrained(tmp_path / PISSA_INIT)
    with torch.no_grad():  # move the adapter and the projector as training would
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    save_pissa_as_lora(model, tmp_path / "adapter", tmp_path / PISSA_INIT)
    assert not (tmp_path / PISSA_INIT).exists()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8

    base, processor = load_model("tiny-llava", seed=0, dtype="float32")
    _, inputs = processor_inputs(processor, PromptFormat.from_name("full"),
                                 [Image.new("RGB", (32, 32), (200, 40, 40))], ["a good day"])
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload()
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
        assert torch.allclose(merged(**inputs).logits, expected, atol=1e-4)
