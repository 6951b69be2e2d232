"""The LLaVA-1.5 path on the paper model's real token ids: a tiny random LLaVA built on the
32,000-token LLaMA / Vicuna vocabulary of ``../shared/tokenizers/llama-spm`` (skipped where
that folder is absent), saved as a checkpoint folder and loaded by path, as
``llava-hf/llava-1.5-7b-hf`` is. LLaVA's ``tokenizer_image_token`` is re-implemented here
from its description in ``llava/mm_utils.py``, not taken from the code under test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_train_config
from PIL import Image
from transformers import AutoProcessor, LlamaTokenizer

from llavac.data import load_split
from llavac.models import apply_inputs, build_tiny
from llavac.models.answer_labels import IGNORE_INDEX
from llavac.predict import Classifier
from llavac.prompt import PromptFormat, render
from llavac.train import train
from llavac.train.collator import TrainCollator

LLAMA_SPM = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers" / "llama-spm"
IMAGE = 32000  # <image>, as llava-hf's processor adds it (then <pad>, 32001)

# The v1 training text of ("so happy today"; positive, neutral, positive), LLaVA's
# conv_vicuna_v1: <s> "A chat between a curious user ... questions. USER: "
BEFORE_IMAGE = [
    1, 319, 13563, 1546, 263, 12758, 1404, 322, 385, 23116, 21082, 20255, 29889, 450, 20255,
    4076, 8444, 29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278, 1404, 29915, 29879, 5155,
    29889, 3148, 1001, 29901, 29871,
]
# "▁ \n Consider the following Image and Text. ... respectively. ASSISTANT: positive, neutral,
# positive</s>": the chunk after the image starts with ▁ (29871), as LLaVA tokenises it.
AFTER_IMAGE = [
    29871, 13, 13696, 1241, 278, 1494, 7084, 322, 3992, 29889, 13, 2940, 29901, 29871, 13, 1626,
    29901, 577, 9796, 9826, 13, 2385, 1598, 278, 19688, 11073, 313, 22198, 29892, 21104, 29892,
    6374, 29897, 363, 278, 7084, 322, 3992, 11073, 29892, 16949, 29889, 13, 12881, 635, 29892,
    14002, 368, 27599, 322, 770, 1598, 278, 1773, 326, 397, 284, 3858, 363, 1716, 7084, 322,
    3992, 29889, 13, 1184, 29894, 680, 263, 3273, 1234, 411, 29871, 29941, 11073, 363, 3992,
    29892, 7084, 29892, 322, 9683, 326, 397, 284, 11073, 29892, 8307, 29889, 319, 1799, 9047,
    13566, 29901, 6374, 29892, 21104, 29892, 6374, 2,
]
TRAINED = [6374, 29892, 21104, 29892, 6374, 2]  # ▁positive , ▁neutral , ▁positive </s>
EXAMPLE = ("so happy today", "positive, neutral, positive")


@pytest.fixture(scope="module")
def llama_llava(tmp_path_factory) -> Path:
    """tiny-llava on LLaMA's vocabulary, saved as a checkpoint folder."""
    if not (LLAMA_SPM / "tokenizer.json").is_file():
        pytest.skip(f"the real LLaMA tokenizer is not at {LLAMA_SPM}: CI provides it")
    model, processor = build_tiny("llava", tokenizer=str(LLAMA_SPM))
    folder = tmp_path_factory.mktemp("llama") / "tiny-llava-llama"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def metaspace_first(llama_llava, tmp_path_factory) -> Path:
    """The same checkpoint with its tokenizer as transformers 5's ``LlamaTokenizer`` builds
    it (a ``Metaspace`` pre-tokenizer that prepends ``▁`` to the first chunk of a text only),
    the way a checkpoint saved from a non-legacy LLaMA tokenizer holds it."""
    folder = Path(shutil.copytree(llama_llava, tmp_path_factory.mktemp("llama") / "metaspace"))
    tokenizer = LlamaTokenizer.from_pretrained(LLAMA_SPM,
                                               extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.save_pretrained(folder)
    return folder


def _v1_batch(processor):
    fmt = PromptFormat.from_name("full", "vicuna_v1")
    return TrainCollator(processor, fmt).encode(["x"], [Image.new("RGB", (40, 30), "grey")],
                                                [EXAMPLE[0]], [EXAMPLE[1]])


def llava_image_tokens(text: str, tokenizer) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: the text cut at ``<image>``, every chunk tokenised
    on its own, the chunks joined by one image id, the later chunks without their ``<s>``."""
    first, *rest = (tokenizer(chunk)["input_ids"] for chunk in text.split("<image>"))
    return first + [id for chunk in rest for id in [IMAGE, *chunk[1:]]]


def _one_image_id(ids: list[int]) -> list[int]:
    """The processor's run of image placeholders as the one id LLaVA puts in their place."""
    start = ids.index(IMAGE)
    return ids[: start + 1] + [id for id in ids[start:] if id != IMAGE]


def test_v1_training_ids_and_loss_mask_are_pinned(llama_llava):
    processor = apply_inputs(AutoProcessor.from_pretrained(llama_llava), "pad", "vicuna_v1")
    batch = _v1_batch(processor)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids == BEFORE_IMAGE + [IMAGE] * 16 + AFTER_IMAGE
    # The loss falls on the answer and </s> alone, as LLaVA's preprocess_v1 masks it.
    assert labels == [IGNORE_INDEX] * (len(ids) - len(TRAINED)) + TRAINED


@pytest.mark.parametrize("checkpoint", ["llama_llava", "metaspace_first"])
def test_ids_around_the_image_are_llavas_chunkwise_ids(checkpoint, request):
    """Whether the checkpoint's tokenizer prepends ▁ to every chunk (the classic SentencePiece
    normalizer) or to the first only (transformers 5's LlamaTokenizer), llavac's ids are
    LLaVA's chunk-wise ones."""
    loaded = AutoProcessor.from_pretrained(request.getfixturevalue(checkpoint))
    text = render(loaded, PromptFormat.from_name("full", "vicuna_v1"), *EXAMPLE)
    expected = llava_image_tokens(text, loaded.tokenizer)
    processor = apply_inputs(loaded, "pad", "vicuna_v1")
    assert _one_image_id(_v1_batch(processor)["input_ids"][0].tolist()) == expected
    assert expected == BEFORE_IMAGE + [IMAGE] + AFTER_IMAGE


def test_without_llavas_chunks_the_image_loses_its_following_space(metaspace_first):
    """What ``tokenize_as_llava`` changes: a Metaspace tokenizer that prepends to the first
    chunk only drops the ▁ (29871) that LLaVA's chunk after the image starts with."""
    processor = AutoProcessor.from_pretrained(metaspace_first)
    processor = apply_inputs(processor, "pad", "none")  # no v1 conversation: left as loaded
    ids = _v1_batch(processor)["input_ids"][0].tolist()
    assert _one_image_id(ids) == BEFORE_IMAGE + [IMAGE] + AFTER_IMAGE[1:]


def test_scoring_scores_the_trained_ids(llama_llava):
    """The label candidates are scored with the very tokens training puts the loss on."""
    classifier = Classifier.from_pretrained(str(llama_llava), dtype="float32", device="cpu")
    scorer = classifier.scorer
    answer = scorer.continuation(scorer.prompt_ending, " " + EXAMPLE[1])
    assert list(answer) == TRAINED[:-1]
    scored = classifier.classify([(Image.new("RGB", (40, 30), "grey"), EXAMPLE[0])])[0]
    for probabilities in scored.probabilities.values():
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)


@pytest.fixture(scope="module")
def trained_run(llama_llava, synthetic_release, tmp_path_factory) -> Path:
    """A few steps of full fine-tuning on LLaMA's vocabulary: four pairs whose multimodal
    label is positive, asked with the multimodal-only prompt (the tiny model learns the
    two-token answer ``▁positive </s>`` within them)."""
    pairs = load_split(synthetic_release, procedure="random811").train[:4]
    own = tmp_path_factory.mktemp("own") / "pairs.jsonl"
    own.write_text("".join(json.dumps({"id": r.id, "image": str(r.image), "text": r.text,
                                       "multimodal_label": "positive"}) + "\n" for r in pairs))
    return train(tiny_train_config(
        own, tmp_path_factory.mktemp("run") / "run", "data.procedure=none",
        f"model.name={llama_llava}", "train.tuning=full", "train.prompt=multimodal-only",
        "train.lr=2e-2", "train.warmup_ratio=0", "train.max_steps=8",
        "train.global_batch_size=4", "train.logging_steps=1"))


def test_training_steps_on_the_real_vocabulary(trained_run):
    log = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and log[-1]["loss"] < log[0]["loss"] / 2
    recorded = json.loads((trained_run / "manifest.json").read_text())
    assert recorded["image_processor"] == "LlavaImageProcessorPil"


def test_generate_and_parse_agree_with_scoring_on_the_real_vocabulary(trained_run,
                                                                      synthetic_release):
    classifier = Classifier.from_pretrained(adapter=trained_run)
    pairs = load_split(synthetic_release, procedure="random811").train[:4]
    generated = classifier.predict(pairs, "generate")
    assert [p.answer for p in generated] == ["positive"] * 4  # stopped at </s>, parsed
    scored = classifier.predict(pairs, "score")
    assert [p.multimodal_label for p in scored] == [p.multimodal_label for p in generated]
