"""``llavac export``: a LoRA run folder becomes one folder that plain transformers loads, and
serving it gives exactly the predictions of serving the run folder."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from llavac.args import TrainConfig
from llavac.config import save_config
from llavac.labels import LABELS
from llavac.models import peft_wrapping
from llavac.serve import create_app

PROMPT = "multimodal,text,image"  # not the default: the export must carry it


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A run folder as training writes it: a random (non-zero) LoRA + trained projector on a
    tiny model of seed 2, its processor, config, manifest, an evaluation and calibration."""
    from peft import LoraConfig, get_peft_model

    from llavac.models import language_model_linear_names, load_model, projector_module_names

    run = tmp_path_factory.mktemp("export") / "run"
    model, processor = load_model("tiny-llava", seed=2, dtype="float32")
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=language_model_linear_names(model),
                      modules_to_save=projector_module_names(model))
    with peft_wrapping():  # peft reads a property transformers 5 deprecated
        get_peft_model(model, lora).save_pretrained(run / "adapter")
    processor.save_pretrained(run / "processor")
    config = TrainConfig()
    config.model.name, config.model.seed, config.model.dtype = "tiny-llava", 2, "float32"
    config.train.prompt = PROMPT
    save_config(config, run / "config.yaml")
    (run / "manifest.json").write_text(json.dumps({"data": {
        "procedure": "qmf", "source": "/home/someone/data/mvsa_single", "records": 4511}}))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({"part": "test", "method": "score",
        "slots": {"multimodal": {"accuracy": 0.75, "accuracy_ci": [0.7, 0.8],
                                 "weighted_f1": 0.74, "macro_f1": 0.6}}}))
    (run / "calibration.json").write_text(json.dumps({"temperatures": {"multimodal": 1.3}}))
    return run


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory):
    from llavac.cli import main

    output = tmp_path_factory.mktemp("exported") / "model"
    assert main(["export", str(lora_run), "--output", str(output)]) == 0
    return output


def test_plain_transformers_loads_the_merged_model(lora_run, exported):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from llavac.predict import Classifier

    model = AutoModelForImageTextToText.from_pretrained(exported, dtype="float32")
    processor = AutoProcessor.from_pretrained(exported)
    assert processor.tokenizer.image_token == "<image>"
    merged = Classifier.from_pretrained(adapter=lora_run, device="cpu").model.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(merged) and not any("lora" in name for name in loaded)
    for name, tensor in merged.items():
        assert loaded[name].equal(tensor), name


def test_export_carries_prompt_calibration_and_a_model_card(lora_run, exported, capsys):
    from huggingface_hub import ModelCard

    from llavac.cli import main

    facts = json.loads((exported / "llavac.json").read_text())
    assert facts["prompt"] == PROMPT and facts["slots"] == PROMPT.split(",")
    assert facts["labels"] == list(LABELS) and facts["base_model"] == "tiny-llava"
    assert facts["calibrated"] is True
    assert (exported / "calibration.json").read_text() == (lora_run / "calibration.json"
                                                            ).read_text()
    card = ModelCard.load(exported / "README.md")
    assert card.data.base_model == "tiny-llava" and card.data.license == "apache-2.0"
    for expected in ("2502.02938", "procedure: qmf", "0.7500 [0.7000, 0.8000]",
                     "## Intended use", "## Limitations"):
        assert expected in card.text, expected
    # The machine's own data path stays out of it; a tiny base model is said to be one.
    source = json.loads((lora_run / "manifest.json").read_text())["data"]["source"]
    assert source not in card.text and f"- source: {Path(source).name}\n" in card.text
    assert "**Not a real model.** The base model `tiny-llava`" in card.text
    assert main(["export", str(lora_run), "--output", str(exported)]) == 2  # not over it
    assert "--overwrite" in capsys.readouterr().err


def _b64(seed: int) -> str:
    buffer = io.BytesIO()
    Image.effect_noise((40, 30), 15 + 9 * seed).convert("RGB").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_serving_the_export_equals_serving_the_run(lora_run, exported):
    from llavac.predict import Classifier

    items = [{"image_base64": _b64(seed), "text": f"post {seed} " + "great " * seed}
             for seed in range(4)]
    answers = []
    for classifier in (Classifier.from_pretrained(adapter=lora_run, device="cpu"),
                       Classifier.from_pretrained(str(exported), device="cpu")):
        assert classifier.fmt.name == PROMPT
        with TestClient(create_app(classifier)) as client:
            response = client.post("/v1/classify/batch", json=items)
            assert response.status_code == 200, response.text
            answers.append(response.json()["predictions"])
    for from_run, from_export in zip(*answers, strict=True):
        for field in ("text_label", "image_label", "multimodal_label"):
            assert from_run[field] == from_export[field]
        for slot, probs in from_run["probabilities"].items():
            for label, p in probs.items():
                assert from_export["probabilities"][slot][label] == pytest.approx(p, abs=1e-5)


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_overwrite_swaps_a_whole_new_export_in_and_refuses_other_folders(
        lora_run, exported, tmp_path, capsys, monkeypatch):
    import llavac.runs.export
    from llavac.cli import main

    target = tmp_path / "model"
    assert main(["export", str(lora_run), "--output", str(target)]) == 0
    before = _tree(target)

    def crash(*args, **kwargs):
        raise OSError("disk full")  # the card is written last: everything else is there

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(llavac.runs.export, "model_card", crash)
        main(["export", str(lora_run), "--output", str(target), "--overwrite"])
    assert _tree(target) == before  # the earlier export was never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left over

    (target / "README.md").write_text("an older card")
    assert main(["export", str(lora_run), "--output", str(target), "--overwrite"]) == 0
    assert _tree(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("not an export")
    capsys.readouterr()
    assert main(["export", str(lora_run), "--output", str(mine), "--overwrite"]) == 2
    assert "not an export" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "not an export"
