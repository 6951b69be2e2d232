import pytest

from llavac.prompt import PromptFormat


def test_full_prompt_is_the_papers_wording():
    before, after = PromptFormat.from_name("full").question_parts("I love it")
    assert before == "Consider the following Image and Text.\nImage:"
    assert after == (
        "\nText: I love it\n"
        "Classify the sentiment labels (negative, neutral, positive) for the Image and Text "
        "labels, separately.\n"
        "Finally, jointly analyze and classify the multimodal label for both Image and Text.\n"
        "Provide a short answer with 3 labels for Text, Image, and Multimodal labels, "
        "respectively."
    )


def test_answer_follows_the_slot_order():
    labels = {"text": "positive", "image": "neutral", "multimodal": "positive"}
    assert PromptFormat.from_name("full").answer(labels) == "positive, neutral, positive"
    assert PromptFormat.from_name("multimodal-only").answer(labels) == "positive"
    reordered = PromptFormat.from_name("multimodal,image,text")
    assert reordered.answer({"text": "negative", "image": "neutral", "multimodal": "positive"}) \
        == "positive, neutral, negative"
    assert reordered.slots == ("multimodal", "image", "text")
    assert "Multimodal, Image, and Text labels" in reordered.question_parts("x")[1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("positive, neutral, positive", ("positive", "neutral", "positive")),
        ("Negative,negative , NEUTRAL.", ("negative", "negative", "neutral")),
        ("positive, neutral", None),  # too few
        ("positive, neutral, positive, negative", None),  # too many
        ("positive, happy, positive", None),  # outside the label set: never guessed
        ("The labels are positive, neutral, positive", None),
        ("", None),
    ],
)
def test_parser_is_strict(answer, expected):
    parsed = PromptFormat.from_name("full").parse(answer)
    slots = ("text", "image", "multimodal")
    assert parsed == (None if expected is None else dict(zip(slots, expected, strict=True)))


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown prompt variant"):
        PromptFormat.from_name("text,image")
    assert PromptFormat.from_name("multimodal-only").name == "multimodal-only"


def test_rendered_text_is_stripped_like_stored_texts():
    fmt = PromptFormat.from_name("full")
    assert fmt.question_parts("  I love it \n") == fmt.question_parts("I love it")


def test_processor_without_chat_template_gets_the_plain_question():
    from llavac.models import load_model
    from llavac.prompt import render

    _, processor = load_model("tiny-llava")
    processor.chat_template = None
    fmt = PromptFormat.from_name("full")
    prompt, full = render(processor, fmt, "good day"), render(processor, fmt, "good day",
                                                              "positive, neutral, positive")
    assert prompt.count("<image>") == 1 and "Text: good day" in prompt
    assert full == prompt + " positive, neutral, positive"


def test_a_template_that_writes_bos_does_not_double_it():
    from llavac.models import load_model
    from llavac.prompt import render

    _, processor = load_model("tiny-llava")
    processor.chat_template = "{{ bos_token }}" + processor.chat_template
    rendered = render(processor, PromptFormat.from_name("full"), "good day")
    ids = processor.tokenizer(rendered)["input_ids"]
    assert ids.count(processor.tokenizer.bos_token_id) == 1
