"""``report.html``: one evaluation as a page that opens from disk, with no server and no
network.

It holds the headline metrics with their intervals and a confusion matrix per slot, the
reliability diagram, modality reliance, and a gallery of the pairs: a thumbnail, the text,
gold and predicted labels of the three slots and the confidence, with filters and sorting
(confident errors first). Everything is inside the one file: the page (``page/report.*``,
plain HTML, CSS and JavaScript), the data as JSON, and the thumbnails (at most
``THUMBNAIL_SIDE`` px, JPEG) as data URIs. Its Content-Security-Policy allows only the page's
own style and script (by hash) and data-URI images, so the browser refuses any request.

The file stays under ``eval.report_max_mb``: when the gallery would not fit, it shows a
sample (every multimodal error first, then the rest, each drawn with a fixed seed) and says
so. ``evaluate`` writes it; ``llavac report FOLDER`` rebuilds it from an evaluation folder
(the data it names must still be readable).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

from llavac.args import EvalConfig
from llavac.data import UnreadableImage, load_data, open_rgb
from llavac.evaluation.calibration import reliability_bins
from llavac.evaluation.metrics import HEADLINE
from llavac.evaluation.reliance import RELIANCE_FILE
from llavac.evaluation.report import label_indices
from llavac.labels import LABELS
from llavac.prompt import PromptFormat
from llavac.runs.folder import RunFolder

REPORT_FILE = "report.html"
THUMBNAIL_SIDE = 128  # px, the longer side
THUMBNAIL_QUALITY = 70  # JPEG: about 4 KB for a 128 px photo
SAMPLE_SEED = 0  # which pairs a sampled gallery keeps
NOTE_ROOM = 1_000  # bytes kept free under the cap for the note that says so
PAGE = resources.files("llavac.evaluation") / "page"


def thumbnail_uri(path: str) -> str | None:
    """The image as a small JPEG data URI; None when it no longer opens."""
    try:
        image = open_rgb(path)
    except UnreadableImage:
        return None
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def gallery_item(prediction: dict, record, reliance: dict | None, slots: Sequence[str]) -> dict:
    """One pair as the page shows it; ``record`` None: a prediction whose record is gone."""
    probabilities = prediction.get("probabilities") or {}
    predicted = {slot: prediction.get(f"{slot}_label") for slot in slots}
    return {
        "id": prediction["id"],
        "text": record.text if record else None,
        "thumb": thumbnail_uri(record.image) if record else None,
        "gold": {slot: (prediction.get("gold") or {}).get(slot) for slot in slots},
        "predicted": predicted,
        # The predicted label's probability; None without probabilities (generate).
        "confidence": {slot: probabilities[slot].get(predicted[slot]) if slot in probabilities
                       else None for slot in slots},
        "shift": reliance["shift"] if reliance else None,
    }


def sample_gallery(items: list[dict], budget: int) -> tuple[list[dict], str | None]:
    """The items that fit in ``budget`` bytes of JSON, in their order, and a note when some
    were left out: every multimodal error first, then the rest, each in a seeded order."""
    sizes = [len(json.dumps(item, ensure_ascii=False).encode()) + 1 for item in items]
    if sum(sizes) <= budget:
        return items, None
    rng = random.Random(SAMPLE_SEED)
    wrong = [i for i, item in enumerate(items) if _wrong(item) is True]
    rest = [i for i, item in enumerate(items) if _wrong(item) is not True]
    rng.shuffle(wrong)
    rng.shuffle(rest)
    kept, used = [], 0
    for i in wrong + rest:
        if used + sizes[i] > budget:
            break
        kept.append(i)
        used += sizes[i]
    n_wrong = sum(_wrong(items[i]) is True for i in kept)
    note = (f"The gallery shows a sample of {len(kept)} of the {len(items)} pairs, to keep "
            f"this file under its cap: {n_wrong} of the {len(wrong)} multimodal errors, then "
            f"{len(kept) - n_wrong} of the other pairs, drawn with seed {SAMPLE_SEED}.")
    return [items[i] for i in sorted(kept)], note


def _wrong(item: dict) -> bool | None:
    """Whether the multimodal label is wrong; None without a gold label."""
    gold = item["gold"].get("multimodal")
    return None if gold is None else item["predicted"].get("multimodal") != gold


def reliability(predictions: Sequence[dict], slots: Sequence[str]) -> dict[str, dict]:
    """Per slot with probabilities and gold labels, ``reliability_bins`` (15 bins)."""
    bins = {}
    for slot in slots:
        rows = [p for p in predictions if (p.get("gold") or {}).get(slot)
                and (p.get("probabilities") or {}).get(slot)]
        if rows:
            probs = [[p["probabilities"][slot][label] for label in LABELS] for p in rows]
            bins[slot] = reliability_bins(probs, label_indices([p["gold"][slot] for p in rows]))
    return bins


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def render(data: dict) -> str:
    """The page with ``data`` inside; its CSP admits exactly its own style and script."""
    style = (PAGE / "report.css").read_text("utf-8")
    script = (PAGE / "report.js").read_text("utf-8")
    csp = (f"default-src 'none'; img-src data:; style-src {_hash(style)}; "
           f"script-src {_hash(script)}; base-uri 'none'; form-action 'none'")
    # "<" escaped: a text holding "</script>" cannot end the data block early.
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    return Template((PAGE / "report.html").read_text("utf-8")).substitute(
        csp=csp, style=style, script=script, data=payload)


def write_report(folder: str | Path, records: Sequence, max_mb: float) -> Path:
    """``folder/report.html`` from the ``metrics.json``, ``predictions.jsonl`` (and
    ``reliance.jsonl``) there and the evaluated ``records`` (for texts and images)."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    predictions = _read_jsonl(folder / "predictions.jsonl")
    reliance = {row["id"]: row for row in _read_jsonl(folder / RELIANCE_FILE)}
    by_id = {record.id: record for record in records}
    slots = PromptFormat.from_name(metrics["prompt"]).slots
    # The headline table's columns are METRICS' headline slot scores, with their intervals.
    columns = [{"name": m.name, "title": m.title, "ci": m.ci} for m in HEADLINE
               if m.source == "slot"]
    data = {"metrics": metrics, "slots": slots, "columns": columns,
            "reliability": reliability(predictions, slots),
            "labels": list(LABELS), "thumbnail_side": THUMBNAIL_SIDE, "max_mb": max_mb,
            "missing_records": sum(p["id"] not in by_id for p in predictions),
            "total": len(predictions), "gallery": [], "note": None}
    budget = int(max_mb * 1_000_000) - len(render(data).encode()) - NOTE_ROOM
    items = [gallery_item(p, by_id.get(p["id"]), reliance.get(p["id"]), slots)
             for p in predictions]
    data["gallery"], data["note"] = sample_gallery(items, budget)
    path = folder / REPORT_FILE
    path.write_text(render(data), encoding="utf-8")
    return path


def evaluation_folders(path: str | Path) -> list[Path]:
    """``path`` itself when it is an evaluation folder (``metrics.json`` and
    ``predictions.jsonl``), else every one below it: a demo's ``eval/``, an experiment's
    ``runs/*/eval/<method>/``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    found = [metrics.parent for metrics in sorted(path.glob("**/metrics.json"))
             if (metrics.parent / "predictions.jsonl").is_file()]
    if not found:
        raise ValueError(f"{path}: no evaluation folder (metrics.json with predictions.jsonl) "
                         "in it or below it")
    return found


def rebuild_reports(path: str | Path) -> list[Path]:
    """Write ``report.html`` again in every evaluation folder of ``path``, reading the
    evaluated records from the data its ``config.yaml`` names."""
    written = []
    for folder in evaluation_folders(path):
        evaluation = RunFolder(folder)
        config = evaluation.typed_config(EvalConfig)
        if not config.data.path or not Path(config.data.path).exists():
            raise FileNotFoundError(f"{evaluation.config_path}: data.path {config.data.path} "
                                    "is not there any more (the report needs its images)")
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        _, records = load_data(config.data).part(metrics["part"], default="test")
        written.append(write_report(folder, records, config.eval.report_max_mb))
    return written
