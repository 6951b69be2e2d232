"""``llavac explain`` and modality reliance, on a model that provably reads each modality.

The shared ``synthetic_run`` learnt the synthetic task, where the image label is the image's
colour and the text label one keyword (``llavac.data.synthetic``). So a pair whose multimodal
label comes from the image alone (a polar colour, a text of filler words) must move when the
image is blanked and not when the text is removed; on a grey image, a keyword carries the
text label, and it must rank first among the words. The keyword is a negative one: the tiny
model reads a text without any keyword as positive, so only a negative (or neutral) keyword
is provably what carries its text label (the test checks that premise first).
"""

from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image

from llavac.args import ClassifierArgs, DataArgs, EvalArgs, EvalConfig
from llavac.cli import main
from llavac.data.synthetic import COLOURS, synthetic_image
from llavac.evaluation import evaluate
from llavac.explain import explain, heatmap_png
from llavac.explain.occlusion import score_pairs
from llavac.predict import Classifier

pytestmark = pytest.mark.xdist_group("synthetic_run")  # one worker trains it, none waits

FILLER_ONLY = "today people news time"  # no keyword: the text carries no sentiment
KEYWORD = "hate"
KEYWORD_TEXT = f"today {KEYWORD} people news"


@pytest.fixture(scope="module")
def trained(synthetic_run):
    return Classifier.from_pretrained(adapter=synthetic_run)


@pytest.fixture(scope="module")
def untrained():
    return Classifier.from_pretrained("tiny-llava", dtype="float32", device="cpu")


def test_a_label_carried_by_the_image_shifts_more_when_the_image_is_blanked(trained):
    image = synthetic_image("positive", random.Random(1), 48)
    explained = explain(trained, image, FILLER_ONLY)
    assert explained.labels["image"] == explained.labels["multimodal"] == "positive"
    for slot in ("image", "multimodal"):
        image_shift = explained.shift(slot, "image_blanked")
        text_shift = explained.shift(slot, "text_removed")
        assert image_shift > 0.5 > text_shift, (slot, image_shift, text_shift)
        assert explained.follows(slot) == "image"


def test_a_label_carried_by_one_word_ranks_that_word_first(trained):
    grey = Image.new("RGB", (48, 48), COLOURS["neutral"])
    without = trained.classify([(grey, KEYWORD_TEXT.replace(f"{KEYWORD} ", ""))])[0]
    assert without.text_label != "negative", "premise: the keyword carries the text label"
    explained = explain(trained, grey, KEYWORD_TEXT)
    assert explained.labels["text"] == explained.labels["multimodal"] == "negative"
    ranked = explained.ranked_words("text")
    assert [word for word, _ in ranked][0] == KEYWORD, ranked
    assert ranked[0][1] > 0.5 > ranked[1][1], ranked
    for slot in ("text", "multimodal"):
        assert explained.follows(slot) == "text"
    # The multimodal label reads the keyword too; the tiny model is also sensitive to where
    # it stands, so a filler word's removal (which moves it) may tie with it.
    assert dict(explained.ranked_words("multimodal"))[KEYWORD] > 0.5


def test_the_grid_lies_over_the_padded_image_the_model_sees(untrained):
    """A 96 x 48 image is padded to 96 x 96 (pad mode): the rows of cells wholly inside the
    padding occlude nothing, so their drops are 0 (to float noise across batch rows), and
    scoring the padded square gives the original's probabilities."""
    image = synthetic_image("positive", random.Random(2), 48).resize((96, 48))
    explained = explain(untrained, image, "a plain text", grid=6)
    assert explained.canvas.size == (96, 96)
    padded = score_pairs(untrained, [(explained.canvas, "a plain text")], 1)[0]
    for slot, probs in explained.probabilities.items():
        assert padded[slot] == pytest.approx(probs, abs=1e-6)
        drops = explained.region_drops(slot)
        assert len(drops) == 6 and all(len(row) == 6 for row in drops)
        for row in (0, 5):  # 0-16 px and 80-96 px: padding only
            assert drops[row] == pytest.approx([0.0] * 6, abs=1e-6)
        assert max(abs(drop) for row in drops[1:5] for drop in row) > 1e-4

    as_json = json.loads(json.dumps(explained.to_dict()))
    assert [(w["word"], w["position"]) for w in as_json["words"]] == [
        ("a", 0), ("plain", 1), ("text", 2)]
    assert set(as_json["modality"]["multimodal"]) == {"image_blanked", "text_removed",
                                                      "follows"}
    png = heatmap_png(explained, "multimodal")
    drawn = Image.open(io.BytesIO(png))
    assert drawn.format == "PNG" and drawn.width == 336


def test_explain_command_writes_json_and_heatmaps_and_skips_bad_rows(synthetic_run, tmp_path,
                                                                     capsys):
    grey = tmp_path / "grey.png"
    Image.new("RGB", (48, 48), COLOURS["neutral"]).save(grey)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    rows = [{"id": "kw", "image": "grey.png", "text": KEYWORD_TEXT},
            {"id": "broken", "image": "broken.jpg", "text": "x"},
            {"id": "gone", "image": "missing.png", "text": "x"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "explained"
    args = ["explain", "--adapter", str(synthetic_run), "--input", str(tmp_path / "pairs.jsonl"),
            "--output", str(output), "--grid", "2"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in (output / "explanations.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["kw"]
    assert lines[0]["words"][1]["word"] == KEYWORD and len(lines[0]["regions"]["drop"]["text"]) == 2
    for slot in ("text", "image", "multimodal"):
        assert Image.open(output / lines[0]["heatmaps"][slot]).format == "PNG"
    text_row = next(line.split(None, 6) for line in out.splitlines()
                    if line.split()[:1] == ["text"])  # slot label p shifts follows words
    assert text_row[6].startswith(f"{KEYWORD} +"), text_row  # the printed table's top word
    assert "skipped 2 (missing_image 1, unreadable_image 1)" in err
    assert main(args) == 2  # a finished result is not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_evaluate_measures_modality_reliance_on_a_seeded_sample(synthetic_run, tmp_path):
    """On the synthetic test part the text label follows the text and the image label the
    image (never the other way; a pair whose keyword or colour is neutral moves little
    either way, as an empty text or a blank image reads as neutral); a sample of 40 pairs
    is measured, and says so."""
    config = EvalConfig(model=ClassifierArgs(adapter=str(synthetic_run)),
                        data=DataArgs(path=str(synthetic_run.parent / "release"),
                                      procedure="random811"),
                        eval=EvalArgs(output=str(tmp_path / "eval"), progress=False,
                                      reliance_pairs=40))
    reliance = evaluate(config)["modality_reliance"]
    assert (reliance["pairs"], reliance["sample_seed"]) == (40, 0) and reliance["of"] > 40
    text, image = reliance["slots"]["text"], reliance["slots"]["image"]
    assert text["text_shift"] > 0.5 > text["image_shift"]
    assert text["follows_text"] > 0.5 and text["follows_image"] < 0.15
    assert image["image_shift"] > 0.5 > image["text_shift"]
    assert image["follows_image"] > 0.5 and image["follows_text"] < 0.15
    per_pair = (tmp_path / "eval" / "reliance.jsonl").read_text().splitlines()
    assert len(per_pair) == 40
    assert "Modality reliance (a sample of 40 of" in (tmp_path / "eval" / "summary.md").read_text()
