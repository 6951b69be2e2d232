"""Prediction: the cached label scorer against plain full-sequence forwards (the prompt +
answer string for causal models, the answer as the processor's ``suffix=`` for the prefix LM
PaliGemma), batch-size independence, the generate path's strict parsing, loading trained
runs, and agreement of score and generate on models trained on the synthetic task."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import train_full
from PIL import Image

from llavac.cli import main
from llavac.config import save_config
from llavac.data import load_split
from llavac.labels import LABELS
from llavac.models import is_prefix_lm, load_model, tiny_names
from llavac.predict import Classifier, Prediction, write_predictions
from llavac.predict.batching import encode_prompts
from llavac.prompt import PromptFormat
from llavac.train import TrainConfig

CAUSAL_FAMILIES = [name for name in tiny_names() if name != "tiny-paligemma"]
TEXTS = [
    "good day",
    "this is a terrible awful long text with many words here and there",
    "ok",
    "exhilarated zyzzyva #blessed http://t.co/x1",
    "",
    "happy news today",
]


def _pairs(n: int) -> list[tuple[Image.Image, str]]:
    """Different image sizes (LLaVA-NeXT picks a tile grid per aspect) and text lengths."""
    return [
        (Image.new("RGB", (32 + 8 * (i % 3), 32 + 4 * (i % 2)), (40 * i % 256, 100, 200 - 9 * i)),
         TEXTS[i % len(TEXTS)] + " " * (i // len(TEXTS)))
        for i in range(n)
    ]


def naive_loglik(model, processor, image, prompt: str, continuation: str) -> float:
    """Log-likelihood of ``continuation`` after ``prompt`` from one uncached, unpadded
    forward pass over the whole string (the definition the fast path must reproduce)."""
    tokenizer = processor.tokenizer
    n_new = len(tokenizer(prompt + continuation)["input_ids"]) - len(tokenizer(prompt)["input_ids"])
    inputs = processor(images=[image], text=[prompt + continuation], return_tensors="pt")
    with torch.no_grad():
        logprobs = model(**inputs).logits[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    end = len(ids)
    return float(sum(logprobs[end - n_new - 1 + j, ids[end - n_new + j]] for j in range(n_new)))


def naive_suffix_loglik(model, processor, image, prompt: str, continuation: str) -> float:
    """A prefix LM's log-likelihood of ``continuation`` as the answer to ``prompt``: one
    uncached, unpadded forward pass with the continuation as the processor's ``suffix=``
    (token type 1, causal; the prompt is a bidirectional prefix), exactly as in training.
    The end token the processor appends to a suffix is not scored."""
    inputs = processor(text=[prompt], images=[[image]], suffix=[continuation],
                       return_tensors="pt")
    del inputs["labels"]
    with torch.no_grad():
        logprobs = model(**inputs).logits[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    answer = inputs["token_type_ids"][0].nonzero().flatten()[:-1].tolist()
    return float(sum(logprobs[i - 1, ids[i]] for i in answer))


def text_loglik(scorer, prefilled, texts: list[list[str]]) -> torch.Tensor:
    """The scorer's ``(rows, candidates)`` log-likelihoods of ``texts[row][c]`` after each
    row's prompt, tokenised in the row's context as the scorer tokenises answers."""
    return scorer.loglik(prefilled, [
        tuple(scorer.continuation(context, text) for text in row)
        for context, row in zip(prefilled.contexts, texts, strict=True)
    ])


def reference_loglik(classifier, image, prompt: str, continuation: str) -> float:
    naive = naive_suffix_loglik if is_prefix_lm(classifier.model) else naive_loglik
    return naive(classifier.model, classifier.processor, image, prompt, continuation)


@pytest.fixture(scope="module")
def tiny_llava():
    return Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def tiny_paligemma():
    return Classifier.from_pretrained("tiny-paligemma", dtype="float32", device="cpu")


@pytest.mark.parametrize("name", CAUSAL_FAMILIES)
def test_cached_scoring_equals_full_forward_incl_multi_token_candidates(name):
    classifier = Classifier.from_pretrained(name, dtype="float32", device="cpu")
    scorer, tokenizer = classifier.scorer, classifier.processor.tokenizer
    pairs = _pairs(4)
    images, texts = zip(*pairs, strict=True)
    separator = scorer.answer_separator
    # One single-token label, and candidates the tiny tokenizer splits into several tokens
    # that share their first tokens (a trie with branches below the root).
    candidates = [separator + "positive", separator + "neutral, exhilarating",
                  separator + "neutral, exhaust"]
    assert len(tokenizer(" exhilarating", add_special_tokens=False)["input_ids"]) > 1
    batch = encode_prompts(classifier.processor, classifier.fmt, images, list(texts),
                           classifier.model)
    naive = torch.tensor([
        [naive_loglik(classifier.model, classifier.processor, image, prompt, candidate)
         for candidate in candidates]
        for image, prompt in zip(images, batch.prompts, strict=True)
    ])
    prefilled = scorer.prefill(batch)
    assert all(context == scorer.prompt_ending for context in prefilled.contexts)
    fast = text_loglik(scorer, prefilled, [candidates] * len(pairs))
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=0)
    # The cache is back at the prompt: scoring again gives the same numbers.
    torch.testing.assert_close(text_loglik(scorer, prefilled, [candidates] * len(pairs)), fast)

    # A row whose prompt does not end in the shared ending's tokens is tokenised with its
    # whole prompt; forcing that path for every row must not change anything.
    scorer._ending_ids = [-1]
    fallback = scorer.prefill(batch)
    assert fallback.contexts == batch.prompts
    torch.testing.assert_close(text_loglik(scorer, fallback, [candidates] * len(pairs)), naive,
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", tiny_names())
def test_scoring_gives_generated_tokens_the_log_probabilities_generate_chose_them_by(name):
    """Whatever greedy decoding writes (untrained: arbitrary tokens), the scorer's cached
    continuation pass reads it with the log-probabilities ``generate`` had at each step, in
    a left-padded batch of different image sizes and text lengths. Both see one model with
    one set of positions (M-RoPE included), so they agree wherever the answer parses."""
    classifier = Classifier.from_pretrained(name, dtype="float32", device="cpu")
    images, texts = zip(*_pairs(3), strict=True)
    batch = encode_prompts(classifier.processor, classifier.fmt, images, list(texts),
                           classifier.model)
    eos = classifier.processor.tokenizer.eos_token_id
    with torch.no_grad():
        out = classifier.model.generate(**batch.inputs, max_new_tokens=4, do_sample=False,
                                        output_logits=True, return_dict_in_generate=True)
    written = out.sequences[:, batch.inputs["input_ids"].shape[1]:]
    step_logprobs = torch.stack(out.logits, 1).float().log_softmax(-1)
    chosen = step_logprobs.gather(-1, written[..., None])[..., 0]
    sequences, expected = [], []
    for tokens, logprobs in zip(written.tolist(), chosen, strict=True):
        n = tokens.index(eos) + 1 if eos in tokens else len(tokens)  # nothing after eos counts
        sequences.append((tuple(tokens[:n]),))
        expected.append(logprobs[:n].sum())
    scored = classifier.scorer.loglik(classifier.scorer.prefill(batch), sequences)[:, 0]
    torch.testing.assert_close(scored, torch.stack(expected), atol=1e-4, rtol=0)


def test_prefix_lm_cached_scoring_equals_suffix_forward(tiny_paligemma):
    """PaliGemma: the prompt is prefilled as a bidirectional prefix and the candidates are
    scored as the causal suffix, with the tokens the processor gives a suffix."""
    scorer = tiny_paligemma.scorer
    pairs = _pairs(4)
    images, texts = zip(*pairs, strict=True)
    assert scorer.answer_separator == ""  # the processor ends the prompt with its own newline
    candidates = ["positive", "neutral, exhilarating", "neutral, exhaust"]
    tokenizer = tiny_paligemma.processor.tokenizer
    assert len(tokenizer(" exhilarating", add_special_tokens=False)["input_ids"]) > 1
    batch = encode_prompts(tiny_paligemma.processor, tiny_paligemma.fmt, images, list(texts),
                           tiny_paligemma.model)
    naive = torch.tensor([
        [naive_suffix_loglik(tiny_paligemma.model, tiny_paligemma.processor, image, prompt,
                             candidate) for candidate in candidates]
        for image, prompt in zip(images, batch.prompts, strict=True)
    ])
    fast = text_loglik(scorer, scorer.prefill(batch), [candidates] * len(pairs))
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=0)
    # The reference tells the prefix masks apart: a causally prefilled prompt scores otherwise.
    del batch.inputs["token_type_ids"]
    causal = text_loglik(scorer, scorer.prefill(batch), [candidates] * len(pairs))
    assert (causal - naive).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_paligemma"])
def test_label_probabilities_are_teacher_forced_slot_by_slot(name, request):
    """Slot k's probabilities are the softmax over the three labels of full-forward
    likelihoods of ``separator + <chosen labels of earlier slots>, <candidate>``."""
    classifier = request.getfixturevalue(name)
    pairs = _pairs(3)
    predictions = classifier.classify(pairs)
    fmt, separator = classifier.fmt, classifier.scorer.answer_separator
    for (image, text), prediction in zip(pairs, predictions, strict=True):
        prompt = encode_prompts(classifier.processor, fmt, [image], [text],
                                classifier.model).prompts[0]
        for k, slot in enumerate(fmt.slots):
            partial = PromptFormat(fmt.slots[: k + 1])
            earlier = {s: prediction.label(s) for s in fmt.slots[:k]}
            loglik = torch.tensor([
                reference_loglik(classifier, image, prompt,
                                 separator + partial.answer({**earlier, slot: label}))
                for label in LABELS
            ])
            expected = dict(zip(LABELS, loglik.softmax(-1).tolist(), strict=True))
            got = prediction.probabilities[slot]
            assert got == pytest.approx(expected, abs=1e-4)
            assert prediction.label(slot) == max(got, key=got.get)


def test_multi_token_first_slot_is_teacher_forced_in_the_one_pass_tree():
    """A separator of two spaces makes every first label two tokens (``Ġ Ġpositive``), so slot 1
    cannot be decided from the prefill: the continuation pass then holds every first-label
    branch, and each slot must still equal its slot-by-slot full-forward reference."""
    classifier = Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu")
    scorer = classifier.scorer
    scorer.answer_separator += " "
    assert all(len(scorer.continuation(scorer.prompt_ending, scorer.answer_separator + label))
               == 2
               for label in LABELS)
    pairs = _pairs(2)
    fmt = classifier.fmt
    for (image, text), probabilities in zip(pairs, classifier.classify(pairs), strict=True):
        prompt = encode_prompts(classifier.processor, fmt, [image], [text],
                                classifier.model).prompts[0]
        earlier: dict[str, str] = {}
        for k, slot in enumerate(fmt.slots):
            partial = PromptFormat(fmt.slots[: k + 1])
            loglik = torch.tensor([
                naive_loglik(classifier.model, classifier.processor, image, prompt,
                             scorer.answer_separator + partial.answer({**earlier, slot: label}))
                for label in LABELS
            ])
            expected = dict(zip(LABELS, loglik.softmax(-1).tolist(), strict=True))
            assert probabilities.probabilities[slot] == pytest.approx(expected, abs=1e-4)
            earlier[slot] = probabilities.label(slot)
            assert earlier[slot] == LABELS[int(loglik.argmax())]


@pytest.mark.parametrize(("prompt", "passes"), [("multimodal-only", 1), ("full", 2)])
def test_score_runs_the_prefill_and_at_most_one_continuation_pass(prompt, passes):
    """Single-token labels: the multimodal-only slot is read off the prefill's logits (no
    continuation pass); the full prompt's three slots take one pass after the prefill."""
    classifier = Classifier.from_pretrained("tiny-llava", prompt=prompt, dtype="float32",
                                            device="cpu")
    images, texts = zip(*_pairs(3), strict=True)
    batch = encode_prompts(classifier.processor, classifier.fmt, images, list(texts),
                           classifier.model)
    calls = []
    hook = classifier.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        classifier.scorer.score(batch)
    finally:
        hook.remove()
    assert len(calls) == passes


def test_multimodal_only_prompt_predicts_one_slot():
    classifier = Classifier.from_pretrained("tiny-llava", prompt="multimodal-only",
                                            dtype="float32", device="cpu")
    for prediction in classifier.classify(_pairs(3)):
        assert prediction.text_label is None and prediction.image_label is None
        assert prediction.multimodal_label in LABELS
        assert list(prediction.probabilities) == ["multimodal"]


@pytest.mark.parametrize(("name", "method"), [("tiny_llava", "score"), ("tiny_llava", "generate"),
                                            ("tiny_paligemma", "score")])
def test_batch_size_does_not_change_predictions(name, method, request):
    classifier = request.getfixturevalue(name)
    pairs = _pairs(20)
    one = classifier.classify(pairs, method, batch_size=1)
    sixteen = classifier.classify(pairs, method, batch_size=16)
    if method == "generate":  # equal answers must not be two empty ones
        assert all(prediction.answer for prediction in one)
    for a, b in zip(one, sixteen, strict=True):
        assert (a.text_label, a.image_label, a.multimodal_label) == \
               (b.text_label, b.image_label, b.multimodal_label)
        assert a.answer == b.answer
        if method == "score":
            for slot, probs in a.probabilities.items():
                assert probs == pytest.approx(b.probabilities[slot], abs=1e-5)


def test_untrained_generate_answers_are_kept_and_never_mapped(tiny_llava):
    predictions = tiny_llava.classify(_pairs(6), method="generate")
    # A random model writes arbitrary words up to the token budget: none is empty.
    assert all(p.answer for p in predictions) and any(p.unparseable for p in predictions)
    for prediction in predictions:
        parsed = tiny_llava.fmt.parse(prediction.answer)
        if parsed is None:
            assert prediction.unparseable
            assert (prediction.text_label, prediction.image_label,
                    prediction.multimodal_label) == (None, None, None)
        else:
            assert prediction.multimodal_label == parsed["multimodal"]
        assert prediction.probabilities is None


def test_unknown_method_is_an_error(tiny_llava):
    with pytest.raises(ValueError, match="unknown method"):
        tiny_llava.classify(_pairs(1), method="beam")


def test_jsonl_has_labels_and_what_the_method_gave(tmp_path):
    scored = Prediction("a", "positive", "neutral", "positive",
                        probabilities={"text": dict.fromkeys(LABELS, 1 / 3)})
    generated = Prediction("b", answer="great stuff")
    path = write_predictions([scored, generated], tmp_path / "out" / "p.jsonl")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["multimodal_label"] == "positive" and "answer" not in first
    assert second["multimodal_label"] is None and second["answer"] == "great stuff"
    assert "probabilities" not in second
    assert generated.unparseable and not scored.unparseable


# -- trained runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_paligemma_run(synthetic_release, tmp_path_factory):
    """The tiny PaliGemma fully fine-tuned like ``synthetic_run``, for twice the steps."""
    output = tmp_path_factory.mktemp("tiny-paligemma") / "run"
    return train_full(synthetic_release, output, "model.name=tiny-paligemma",
                      "train.max_steps=300")


@pytest.fixture(scope="module")
def all_records(synthetic_release):
    split = load_split(synthetic_release, procedure="random811")
    return split.train + split.validation + split.test


# PaliGemma learns the task more slowly: 300 steps give ~0.67 (the majority label ~0.44).
@pytest.mark.xdist_group("synthetic_run")  # the worker that trains it, so none waits
@pytest.mark.parametrize(("run", "name", "min_accuracy"),
                         [("synthetic_run", "tiny-llava", 0.9),
                          pytest.param("trained_paligemma_run", "tiny-paligemma", 0.6,
                                       marks=pytest.mark.slow)])  # its own 300-step training
def test_score_and_generate_agree_wherever_generate_parses(run, name, min_accuracy, request,
                                                           all_records):
    run_folder = request.getfixturevalue(run)
    classifier = Classifier.from_pretrained(adapter=run_folder)  # the run folder alone
    assert classifier.source["model"] == name
    scored = classifier.predict(all_records, "score", progress=False)
    generated = classifier.predict(all_records, "generate", progress=False)
    parsed = [(s, g) for s, g in zip(scored, generated, strict=True) if not g.unparseable]
    assert len(parsed) >= 0.9 * len(all_records)
    for s, g in parsed:
        for slot in classifier.fmt.slots:
            assert s.label(slot) == g.label(slot), (s.id, s.probabilities, g.answer)
    accuracy = sum(s.multimodal_label == r.multimodal_label for s, r in zip(scored, all_records,
                                                                  strict=True))
    assert accuracy / len(all_records) > min_accuracy


def test_lora_run_folder_restores_seed_and_prompt(tmp_path, all_records):
    """A run folder with adapter/: the base tiny model must be rebuilt from the run's seed
    (its random weights are what the adapter was trained on) with the run's prompt."""
    from peft import LoraConfig, get_peft_model

    from llavac.models import language_model_linear_names, peft_wrapping

    model, processor = load_model("tiny-llava", seed=3, dtype="float32")
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=language_model_linear_names(model))
    with peft_wrapping():  # peft reads a deprecated transformers property
        peft_model = get_peft_model(model, lora).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "processor")
    config = TrainConfig()
    config.model.name, config.model.seed, config.model.dtype = "tiny-llava", 3, "float32"
    config.train.prompt = "multimodal-only"
    save_config(config, tmp_path / "config.yaml")

    records = all_records[:5]
    expected = Classifier(peft_model, processor, "multimodal-only").predict(records,
                                                                           progress=False)
    loaded = Classifier.from_pretrained(adapter=tmp_path, device="cpu")
    assert loaded.fmt.name == "multimodal-only"
    for a, b in zip(loaded.predict(records, progress=False), expected, strict=True):
        assert a.multimodal_label == b.multimodal_label
        assert a.probabilities["multimodal"] == pytest.approx(b.probabilities["multimodal"],
                                                              abs=1e-4)
    # A bare adapter folder works with its base model named (tiny models do not record
    # their name in the adapter's config); without a run config the prompt is the default.
    with pytest.raises(ValueError, match="base model"):
        Classifier.from_pretrained(adapter=tmp_path / "adapter")
    bare = Classifier.from_pretrained("tiny-llava", adapter=tmp_path / "adapter", device="cpu")
    assert bare.source["adapter"] == str(tmp_path / "adapter") and bare.fmt.name == "full"


@pytest.mark.xdist_group("synthetic_run")
def test_predict_cli_file_and_single_pair(synthetic_run, all_records, tmp_path, capsys):
    records = all_records[:3]
    lines = [json.dumps({"id": r.id, "image": r.image, "text": r.text}) for r in records]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--adapter", str(synthetic_run), "--input", str(tmp_path / "in.jsonl"),
                 "--method", "generate", "--batch-size", "2", "--output", str(out)]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in written] == [r.id for r in records]
    said = [line for line in capsys.readouterr().err.splitlines() if "records:" in line]
    assert len(said) == 1 and " unparseable; " in said[0]  # generate: always counted

    assert main(["predict", "--adapter", str(synthetic_run), "--image", records[0].image,
                 "--text", records[0].text]) == 0
    (single,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert single["multimodal_label"] in LABELS and "probabilities" in single
    assert main(["predict", "--model", "tiny-llava", "--text", "text only"]) == 2
    assert "give either --image and --text, or --input" in capsys.readouterr().err


def test_scoring_refuses_what_its_tree_mask_cannot_do():
    """A prompt that reaches a sliding window, and attention kernels without 4-D masks, are
    clear errors instead of wrong numbers or a broken cache."""
    classifier = Classifier.from_pretrained("tiny-gemma3", dtype="float32", device="cpu")
    image = Image.new("RGB", (32, 32), (200, 120, 40))
    with pytest.raises(ValueError, match="sliding attention window"):
        classifier.classify([(image, "good " * 420)])
    (short,) = classifier.classify([(image, "good day")])  # the cache was left clean
    assert short.multimodal_label in ("negative", "neutral", "positive")

    model, processor = load_model("tiny-llava")
    flash = Classifier(model, processor)  # loading is fine: generate needs no 4-D mask
    model.config.get_text_config()._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation 'sdpa' or 'eager'"):
        flash.classify([(image, "good day")], "score")
