"""The model factory: tiny families build offline, are seeded, round-trip, and expose the
layout facts (chat-template prefix property, LoRA targets, prefix-LM masking) that training
and prediction rely on."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llavac.labels import LABELS
from llavac.models import (
    LLAVA_7B_SIZES,
    SMALL_SIZES,
    build_tiny,
    is_prefix_lm,
    language_model_linear_names,
    load_model,
    model_facts,
    projector_module_names,
    tiny_names,
)

FAMILIES = tiny_names()
# image tokens per 32x32 image at the default sizes
IMAGE_TOKENS = {
    "tiny-llava": 16,
    "tiny-llava-next": 36,
    "tiny-paligemma": 16,
    "tiny-gemma3": 16,
    "tiny-idefics3": 4,
    "tiny-qwen2-vl": 4,
    "tiny-qwen2.5-vl": 4,
    "tiny-smolvlm": 5,  # 2x2 tiles of the image resized to 64x64, and the global view
}


def test_all_families_are_built_in():
    assert set(FAMILIES) == set(IMAGE_TOKENS)


def _image(color=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (32, 32), color)


def _conversation(text: str, answer: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def _render(processor, text: str, answer: str | None = None) -> str:
    return processor.apply_chat_template(
        _conversation(text, answer), tokenize=False, add_generation_prompt=answer is None
    )


def _inputs(processor, text: str, image=None):
    return processor(images=image or _image(), text=_render(processor, text), return_tensors="pt")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, processor = load_model(request.param)
    return request.param, model, processor


def test_forward_gives_finite_logits(tiny):
    name, model, processor = tiny
    batch = _inputs(processor, "I love this sunny day!")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(logits).all()


def test_batched_generation_with_nested_images(tiny):
    """One list of images per prompt (``[[img], [img]]``) is the layout every family takes."""
    name, model, processor = tiny
    prompts = [_render(processor, "ok"), _render(processor, "what a wonderful day it was")]
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = processor(
            images=[[_image()], [_image((0, 0, 255))]],
            text=prompts,
            padding=True,
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side = side
    batch.pop("labels", None)
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 2


def test_prompt_holds_expected_image_tokens(tiny):
    name, model, processor = tiny
    ids = _inputs(processor, "a photo")["input_ids"][0]
    image_token_id = model.config.image_token_id
    assert int((ids == image_token_id).sum()) == IMAGE_TOKENS[name]


@pytest.mark.parametrize("answer", LABELS)
def test_prompt_is_token_prefix_of_prompt_plus_answer(tiny, answer):
    name, model, processor = tiny
    text = "What is the sentiment of this tweet? so happy today :)"
    prompt = _render(processor, text)
    full = _render(processor, text, answer)
    assert full.startswith(prompt)
    prompt_ids = processor(images=_image(), text=prompt)["input_ids"][0]
    if is_prefix_lm(model):
        # the answer must enter as suffix (token type 1), outside the bidirectional prefix
        encoded = processor(images=_image(), text=prompt, suffix=answer)
        types = list(encoded["token_type_ids"][0])
        assert types == [0] * len(prompt_ids) + [1] * (len(types) - len(prompt_ids))
    else:
        encoded = processor(images=_image(), text=full)
    full_ids = encoded["input_ids"][0]
    assert list(full_ids[: len(prompt_ids)]) == list(prompt_ids)
    # the assistant turn ends with eos, so the model learns to stop
    tokenizer = processor.tokenizer
    assert tokenizer.eos_token_id in list(full_ids[len(prompt_ids) :])
    # on the tiny tokenizer every label word is one token after the prompt
    answer_ids = [i for i in full_ids[len(prompt_ids) :] if i not in tokenizer.all_special_ids]
    assert tokenizer.decode(answer_ids).strip() == answer


def test_prefix_lm_flag_matches_the_attention_mask(tiny):
    """Changing a late prompt token moves earlier logits only in a prefix LM."""
    name, model, processor = tiny
    batch = _inputs(processor, "good morning sad evening")
    ids = batch["input_ids"]
    late = ids.shape[1] - 3
    changed = ids.clone()
    changed[0, late] = processor.tokenizer.convert_tokens_to_ids("Ġhappy")
    assert changed[0, late] != ids[0, late]
    with torch.no_grad():
        before = model(**batch).logits[0, : late - 1]
        after = model(**{**batch, "input_ids": changed}).logits[0, : late - 1]
    moved = not torch.allclose(before, after)
    assert moved == is_prefix_lm(model)


def test_same_seed_same_weights_other_seed_differs():
    a, _ = build_tiny("tiny-llava", seed=3)
    b, _ = build_tiny("tiny-llava", seed=3)
    c, _ = build_tiny("tiny-llava", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_building_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny("tiny-llava", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_save_load_round_trip_gives_identical_logits(tiny, tmp_path):
    name, model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_model(str(tmp_path))
    batch = _inputs(processor, "terrible news")
    again = _inputs(loaded_processor, "terrible news")
    assert torch.equal(batch["input_ids"], again["input_ids"])
    assert loaded_processor.chat_template == processor.chat_template
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**again).logits)


def test_size_overrides_and_unknown_size():
    model, processor = build_tiny("llava", text_hidden=32, text_layers=1, vocab_size=2000)
    assert model.config.text_config.hidden_size == 32
    assert model.get_input_embeddings().num_embeddings == 2000
    with pytest.raises(TypeError):
        build_tiny("llava", hidden=3)
    with pytest.raises(ValueError, match="unknown tiny family"):
        build_tiny("tiny-nope")


@pytest.mark.parametrize(
    ("sizes", "parameters", "image_tokens"),
    [(LLAVA_7B_SIZES, 7_063_427_072, 576), (SMALL_SIZES, 13_793_600, 64)],
)
def test_benchmark_shapes_build_on_the_meta_device(sizes, parameters, image_tokens):
    """The 7B shape is checked without allocating it: meta tensors have shapes only."""
    model, processor = build_tiny("tiny-llava", device="meta", **sizes)
    assert sum(p.numel() for p in model.parameters()) == parameters
    batch = processor(images=Image.new("RGB", (50, 40)), text=_render(processor, "hi"))
    assert batch["input_ids"][0].count(model.config.image_token_id) == image_tokens


def test_lora_wraps_exactly_the_language_model_linears(tiny):
    from peft import LoraConfig, get_peft_model

    from llavac.models import peft_wrapping

    name, model, processor = tiny
    targets = language_model_linear_names(model)
    projector = projector_module_names(model)
    fresh, _ = load_model(name)
    with peft_wrapping():  # peft reads a deprecated transformers property
        peft_model = get_peft_model(
            fresh, LoraConfig(r=4, target_modules=targets, modules_to_save=projector)
        )
    wrapped = {
        n.removeprefix("base_model.model.")
        for n, m in peft_model.named_modules()
        if hasattr(m, "lora_A") and not n.endswith(("lora_A", "lora_B"))
    }
    assert wrapped == set(targets)
    assert not any("vision" in t or "lm_head" in t or "projector" in t for t in targets)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    attention_only = language_model_linear_names(model, ("q_proj", "v_proj"))
    assert attention_only and all(t.endswith(("q_proj", "v_proj")) for t in attention_only)


def test_model_facts(tiny):
    name, model, processor = tiny
    info = model_facts(model)
    assert info["name_or_path"] == name
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["family"] == model.config.model_type


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_four_bit_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        load_model("tiny-llava", load_in_4bit=True)
    with pytest.raises(ValueError, match="CUDA"):
        load_model("/nonexistent/checkpoint", load_in_4bit=True)


def test_dtype_and_attention_options_reach_the_tiny_model():
    model, _ = load_model("tiny-llava", dtype="bf16", attn_implementation="eager", device_map="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"
    assert model_facts(model)["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-llava", dtype="int3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit loading needs CUDA")
def test_four_bit_quantises_the_language_model_but_not_the_projector():
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    model, processor = load_model("tiny-llava", load_in_4bit=True)
    modules = dict(model.named_modules())
    assert all(
        isinstance(modules[n], bnb.nn.Linear4bit) for n in language_model_linear_names(model)
    )
    for name in projector_module_names(model):
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in modules[name].modules())
    assert model_facts(model)["name_or_path"] == "tiny-llava"
    batch = _inputs(processor, "great day").to(model.device)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
