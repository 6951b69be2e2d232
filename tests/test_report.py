"""report.html: ``llavac evaluate`` on the real QMF test split (519 pairs, the tiny model)
writes one self-contained page. It opens from ``file://`` in headless Chromium, its filters
show exactly what ``metrics.json`` counts, no request leaves it, it stays under its cap (and
says so when it samples), and ``llavac report`` rebuilds it byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from llavac.cli import main
from llavac.evaluation.html_report import sample_gallery
from llavac.evaluation.metrics import HEADLINE
from llavac.labels import LABELS

pytestmark = pytest.mark.xdist_group("report")  # one worker evaluates QMF for the module

SLOTS = ("text", "image", "multimodal")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CAP_MB = 10.0  # eval.report_max_mb's default


@pytest.fixture(scope="session")
def qmf_eval(shared_data, tmp_path_factory) -> Path:
    """One evaluation of the untrained tiny LLaVA on the QMF test part, reliance on 30.
    Session-scoped: a worker may run the module's tests between other modules' tests, and a
    module-scoped fixture would then be evaluated again each time."""
    output = tmp_path_factory.mktemp("qmf") / "eval"
    assert main(["evaluate", "--model", "tiny-llava", "--dtype", "float32",
                 "--data", str(shared_data / "mvsa_single"), "--procedure", "qmf",
                 "--batch-size", "32", "--output", str(output), "--reliance-pairs", "30",
                 "eval.progress=false"]) == 0
    return output


def _read(folder: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((folder / "metrics.json").read_text())
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    return metrics, [json.loads(line) for line in lines]


def _wrong(metrics: dict, slot: str) -> int:
    matrix = metrics["slots"][slot]["confusion_matrix"]["matrix"]
    return sum(map(sum, matrix)) - sum(matrix[i][i] for i in range(len(LABELS)))


@pytest.mark.slow  # the real QMF test split, 519 pairs
def test_real_qmf_test_split(qmf_eval):
    """The published QMF split of MVSA-Single: 519 test pairs, every slot labelled."""
    metrics, predictions = _read(qmf_eval)
    assert metrics["records"] == len(predictions) == 519
    for slot in SLOTS:
        assert metrics["slots"][slot]["n"] == 519
        assert (qmf_eval / f"confusion_{slot}.png").stat().st_size > 0
    for prediction in predictions:
        assert all(prediction[f"{slot}_label"] in LABELS for slot in SLOTS)
    reliance = metrics["modality_reliance"]
    assert (reliance["pairs"], reliance["of"], reliance["sample_seed"]) == (30, 519, 0)
    assert set(reliance["slots"]) == set(SLOTS)
    size_mb = (qmf_eval / "report.html").stat().st_size / 1e6
    print(f"report.html: {size_mb:.2f} MB for 519 pairs (cap {CAP_MB} MB)")
    assert size_mb < CAP_MB


def test_report_command_rebuilds_the_same_page_and_samples_under_a_smaller_cap(
        qmf_eval, tmp_path):
    written = (qmf_eval / "report.html").read_bytes()
    assert main(["report", str(qmf_eval.parent)]) == 0  # found below a folder
    assert (qmf_eval / "report.html").read_bytes() == written

    small = tmp_path / "small"
    shutil.copytree(qmf_eval, small)
    config = yaml.safe_load((small / "config.yaml").read_text())
    config["eval"]["report_max_mb"] = 0.5
    (small / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["report", str(small)]) == 0
    page = (small / "report.html").read_text()
    metrics, _ = _read(small)
    assert len(page.encode()) < 500_000
    assert "The gallery shows a sample of" in page
    assert f"of the {_wrong(metrics, 'multimodal')} multimodal errors" in page


def test_a_sampled_gallery_keeps_the_errors_first_in_their_order():
    items = [{"id": f"{i:02d}", "gold": {"multimodal": "positive"},
              "predicted": {"multimodal": "negative" if i % 4 == 0 else "positive"},
              "text": "x" * 100} for i in range(40)]
    size = len(json.dumps(items[0]).encode()) + 1
    kept, note = sample_gallery(items, budget=12 * size)
    assert len(kept) == 12 and [int(item["id"]) for item in kept] == sorted(
        int(item["id"]) for item in kept)
    assert sum(item["predicted"]["multimodal"] == "negative" for item in kept) == 10  # all
    assert note.startswith("The gallery shows a sample of 12 of the 40 pairs")
    assert sample_gallery(items, budget=40 * size) == (items, None)


@pytest.mark.browser
def test_the_page_opens_from_disk_filters_and_sends_no_request(qmf_eval, chromium):
    metrics, predictions = _read(qmf_eval)
    confidence = {p["id"]: p["probabilities"]["multimodal"][p["multimodal_label"]]
                  for p in predictions}
    url = (qmf_eval / "report.html").resolve().as_uri()
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)

    def shown() -> list[str]:
        return page.locator(".item:visible").evaluate_all("items => items.map(i => i.dataset.id)")

    assert sorted(shown()) == sorted(p["id"] for p in predictions)  # all 519, none sampled
    # The headline columns are METRICS' headline scores, each beside its interval.
    assert page.locator("#headline th").all_inner_texts()[:5] == [
        "label", "n", *(f"{metric.title} (95 % CI)" for metric in HEADLINE)]
    multimodal = metrics["slots"]["multimodal"]
    low, high = multimodal["macro_f1_ci"]
    assert page.locator("#headline tr", has_text="multimodal").locator("td").nth(4) \
        .inner_text() == f"{multimodal['macro_f1']:.4f} [{low:.4f}, {high:.4f}]"
    page.select_option("#f-correct", "wrong")
    wrong = shown()
    assert len(wrong) == _wrong(metrics, "multimodal") > 0
    assert page.locator(".item:visible[data-correct=false]").count() == len(wrong)
    ordered = [confidence[pair_id] for pair_id in wrong]  # confident errors first
    assert ordered == sorted(ordered, reverse=True)
    page.select_option("#f-slot", "text")
    assert len(shown()) == _wrong(metrics, "text")
    page.select_option("#f-slot", "multimodal")
    page.select_option("#f-correct", "all")
    page.select_option("#f-gold", "positive")
    assert len(shown()) == metrics["slots"]["multimodal"]["per_class"]["positive"]["support"]
    page.select_option("#f-gold", "")
    values = sorted(set(confidence.values()))
    middle = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    page.fill("#f-min", repr(middle))
    assert len(shown()) == sum(c >= middle for c in confidence.values())
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report_page.png"))
    page.close()

    assert problems == []  # a script the page's policy refused would show here
    assert requests == [url], f"the page asked for more than itself: {requests}"
