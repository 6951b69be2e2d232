"""Prompt robustness: variants of the question, the robustness command, variant training."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_train_config

from llavac.cli import main
from llavac.data import Record
from llavac.labels import SLOTS
from llavac.models import load_model
from llavac.predict import Classifier
from llavac.prompt import PromptFormat, render
from llavac.prompt.variants import VARIANTS_FILE, load_variants
from llavac.train import train
from llavac.train.collator import TrainCollator


def test_shipped_variants_change_the_question_not_the_answer():
    base = PromptFormat()
    variants = load_variants(None, base)
    assert variants["original"] == base and len(variants) >= 5
    questions = {name: fmt.question_parts("a tweet")[1] for name, fmt in variants.items()}
    assert len(set(questions.values())) == len(questions)  # every wording differs
    labels = {"text": "positive", "image": "neutral", "multimodal": "negative"}
    paraphrases = [f for n, f in variants.items() if f.slots == SLOTS]
    assert len(paraphrases) >= 4  # original + three paraphrases keep the trained answer
    assert {f.answer(labels) for f in paraphrases} == {"positive, neutral, negative"}
    assert variants["slot-order"].answer(labels) == "negative, positive, neutral"
    assert "Multimodal, Text, and Image" in questions["slot-order"]


@pytest.mark.parametrize("entries, message", [
    ([{"name": "x"}], "named 'original'"),
    ([{"name": "original"}, {"name": "p", "instruction": "{nope}"}], r"variants\[1\] \(p\)"),
    ([{"name": "original"}, {"name": "p", "wording": "hi"}], "unknown keys"),
    ([{"name": "original"}, {"name": "original"}], "appears twice"),
])
def test_bad_variants_file_names_the_entry(tmp_path, entries, message):
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"variants": entries}))
    with pytest.raises(ValueError, match=message):
        load_variants(path, PromptFormat())


@pytest.mark.slow  # a training, then scoring and generating
def test_a_run_trained_on_variants_scores_as_it_generates_under_a_paraphrase(tmp_path):
    """The scorer finds the answer lead and prompt tail by rendering, so a new instruction
    needs no scorer change: on a run trained with train.prompt_variants, score and generate
    agree under a paraphrase wherever generate parses."""
    from llavac.data import load_split
    from llavac.data.synthetic import write_synthetic_release

    data = write_synthetic_release(tmp_path / "data", n=200, seed=4)
    run = train(tiny_train_config(data, tmp_path / "run", "train.max_steps=100",
                                  f"train.prompt_variants={VARIANTS_FILE}",
                                  "train.logging_steps=1000"))
    base = Classifier.from_pretrained(adapter=run)
    fmt = load_variants(None, base.fmt)["paraphrase-question"]
    assert "What sentiment" in render(base.processor, fmt, "t")
    classifier = Classifier(base.model, base.processor, fmt, base.source)
    records = load_split(data, "none").all[:24]
    scored = classifier.predict(records, "score", progress=False)
    generated = classifier.predict(records, "generate", progress=False)
    parsed = [(s, g) for s, g in zip(scored, generated, strict=True) if not g.unparseable]
    assert len(parsed) >= 0.8 * len(records), len(parsed)
    for s, g in parsed:
        assert [s.label(k) for k in SLOTS] == [g.label(k) for k in SLOTS], g.answer


def test_collator_draws_variants_deterministically(image_file, tmp_path):
    """Each example's question is fixed by train.seed and its id (so resume repeats it),
    and different examples ask different variants."""
    _, processor = load_model("tiny-llava", seed=0)
    variants = tuple(load_variants(None, PromptFormat()).values())
    records = [Record(str(i), f"text {i}", str(image_file(tmp_path / f"{i}.jpg")),
                      "positive", "neutral", "positive") for i in range(24)]
    collator = TrainCollator(processor, PromptFormat(), variants=variants, seed=3)
    drawn = [collator.format_for(r) for r in records]
    again = TrainCollator(processor, PromptFormat(), variants=variants, seed=3)
    assert [again.format_for(r) for r in reversed(records)] == drawn[::-1]
    assert len(set(drawn)) == len(variants)  # 24 draws over 5 variants hit all of them
    other = TrainCollator(processor, PromptFormat(), variants=variants, seed=4)
    assert [other.format_for(r) for r in records] != drawn
    batch = collator(records[:4])
    first = (batch["labels"][0] != -100).nonzero()[0].item()
    answer = processor.tokenizer.decode(batch["input_ids"][0, first:]).strip()
    assert answer.startswith(drawn[0].answer({"text": "positive", "image": "neutral",
                                              "multimodal": "positive"}))


@pytest.mark.slow  # training on the real QMF split
def test_robustness_on_a_run_trained_on_the_real_qmf_split(shared_data, tmp_path, capsys):
    data = shared_data / "mvsa_single"
    run = train(tiny_train_config(data, tmp_path / "run", "data.procedure=qmf",
                                  "train.max_steps=10"))
    common = ["--data", str(data), "--procedure", "qmf", "--batch-size", "64"]
    assert main(["evaluate", "--adapter", str(run), "--output", str(tmp_path / "eval"),
                 *common, "eval.progress=false", "eval.reliance_pairs=0"]) == 0
    shipped = yaml.safe_load(VARIANTS_FILE.read_text())["variants"]
    variants = tmp_path / "variants.yaml"  # four of the shipped five: --variants replaces them
    variants.write_text(yaml.safe_dump({"variants": shipped[:2] + shipped[3:]}))
    assert main(["robustness", str(run), "--output", str(tmp_path / "rob"), *common,
                 "--variants", str(variants), "robustness.progress=false"]) == 0
    result = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    names = [variant["name"] for variant in result["variants"]]
    assert names == ["original", "paraphrase-short", "paraphrase-question", "slot-order"]
    original = result["variants"][0]
    for slot in SLOTS:
        for key in ("n", "accuracy", "weighted_f1", "macro_f1"):
            assert original["slots"][slot][key] == evaluated["slots"][slot][key]
        assert original["slots"][slot]["changed"] == 0.0
    assert result["records"] == evaluated["records"]
    for name in ("robustness.md", "robustness.png", "config.yaml", "manifest.json"):
        assert (tmp_path / "rob" / name).stat().st_size > 0
    shown = capsys.readouterr()
    assert "| slot-order |" in shown.out
    assert f"records: {result['records']} used from the test part" in shown.err
    assert f"wrote {tmp_path / 'rob'}: robustness.json" in shown.err
    before = (tmp_path / "rob" / "robustness.json").read_bytes()
    assert main(["robustness", str(run), "--output", str(tmp_path / "rob"), *common]) == 2
    assert "--overwrite" in capsys.readouterr().err  # refused, the result left as it was
    assert (tmp_path / "rob" / "robustness.json").read_bytes() == before


def test_robustness_cli_errors(tmp_path, capsys):
    assert main(["robustness", "a", "b", "--data", "x"]) == 2
    assert "unexpected argument 'b' (expected RUN" in capsys.readouterr().err
    assert main(["robustness", str(tmp_path / "nope"), "--data", "x"]) == 2


def test_train_prompt_variants_reach_the_collator(tmp_path):
    from llavac.data.synthetic import write_synthetic_release
    from llavac.train.recipe import setup, with_input_defaults

    def config(*overrides):  # as train() hands it to setup()
        return with_input_defaults(tiny_train_config(data, tmp_path / "run", *overrides))

    data = write_synthetic_release(tmp_path / "data", n=40, seed=3)
    built = setup(config(f"train.prompt_variants={VARIANTS_FILE}", "train.seed=7"))
    assert len(built.collator.variants) == 5 and built.collator.seed == 7
    assert setup(config()).collator.variants == ()
    with pytest.raises(FileNotFoundError, match="missing.yaml: no such prompt variants file"):
        setup(config("train.prompt_variants=missing.yaml"))
