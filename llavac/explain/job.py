"""``llavac explain``: explain one pair or every pair of a file, into an output folder.

The folder gets ``explanations.jsonl`` (one :meth:`Explanation.to_dict` per pair, plus the
paths of its heatmaps) and ``heatmaps/<id>_<slot>.png``. A row of a file that cannot be
explained (no image, an unreadable one, ...) is skipped and counted by reason, as
``predict`` does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llavac.args import ExplainConfig
from llavac.data import UnreadableImage, open_rgb
from llavac.data.records import Problem
from llavac.data.stream import stream_records
from llavac.explain.heatmap import heatmap_png
from llavac.explain.occlusion import Explanation, explain
from llavac.jsonl import write_jsonl
from llavac.predict import Classifier

EXPLANATIONS = "explanations.jsonl"


@dataclass
class ExplainedPair:
    """One line of ``explanations.jsonl``: the explanation and its heatmap files."""

    explanation: Explanation
    heatmaps: dict[str, str]  # {slot: path relative to the output folder}

    def to_json(self) -> str:
        return json.dumps({**self.explanation.to_dict(), "heatmaps": self.heatmaps},
                          ensure_ascii=False)


@dataclass
class ExplainSummary:
    """What a job did: the pairs explained (in order) and the rows skipped, by reason."""

    explained: list[ExplainedPair] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    output: Path | None = None


def _file_pairs(path: str, skipped: Counter) -> Iterator[tuple[str, object, str]]:
    """``(id, RGB image, text)`` of each row of ``path`` that can be explained; the others
    are counted in ``skipped`` by reason."""
    for row in stream_records(path):
        if isinstance(row, Problem):
            skipped[row.reason] += 1
            continue
        try:
            image = open_rgb(row.image)
        except UnreadableImage:
            skipped["unreadable_image"] += 1
            continue
        yield row.id, image, row.text


def _file_stem(pair_id: str, taken: set[str]) -> str:
    """A file name for ``pair_id``: its characters outside ``[\\w.-]`` replaced, made unique."""
    stem = re.sub(r"[^\w.-]", "_", pair_id) or "pair"
    unique, n = stem, 1
    while unique in taken:
        n += 1
        unique = f"{stem}-{n}"
    taken.add(unique)
    return unique


def run_explain(config: ExplainConfig, classifier=None) -> ExplainSummary:
    """Explain the pairs ``config.explain`` names into its output folder.

    ``classifier``: an already loaded :class:`llavac.predict.Classifier` (else
    ``config.model`` is loaded).
    """
    job = config.explain
    if (job.input is None) == (job.image is None or job.text is None):
        raise ValueError("give either --image and --text, or --input FILE")
    summary = ExplainSummary(output=Path(job.output) / EXPLANATIONS)
    # One pair's image is opened first: a bad file is an error before anything is loaded.
    pairs = (_file_pairs(job.input, summary.skipped) if job.input is not None
             else [(Path(job.image).stem, open_rgb(job.image), job.text)])
    classifier = classifier or Classifier.from_args(config.model)
    output, stems = Path(job.output), set()

    def explained() -> Iterator[ExplainedPair]:
        for pair_id, image, text in pairs:
            explanation = explain(classifier, image, text, pair_id, job.grid, job.batch_size)
            (output / "heatmaps").mkdir(parents=True, exist_ok=True)
            stem, heatmaps = _file_stem(pair_id, stems), {}
            for slot in explanation.probabilities:
                heatmaps[slot] = f"heatmaps/{stem}_{slot}.png"
                (output / heatmaps[slot]).write_bytes(heatmap_png(explanation, slot))
            summary.explained.append(ExplainedPair(explanation, heatmaps))
            yield summary.explained[-1]

    write_jsonl(explained(), summary.output)
    return summary


def format_explanation(pair: ExplainedPair, top_words: int) -> str:
    """A short table: per slot the label, the modality shifts and the words it leans on."""
    explanation = pair.explanation
    lines = [f"{explanation.id}: {explanation.text!r}",
             f"  {'slot':<11}{'label':<10}{'p':>5}  {'image blanked':>13}  "
             f"{'text removed':>12}  {'follows':<8}words (drop)"]
    for slot, label in explanation.labels.items():
        words = ", ".join(f"{word} {drop:+.2f}"
                          for word, drop in explanation.ranked_words(slot)[:top_words])
        lines.append(
            f"  {slot:<11}{label:<10}{explanation.probabilities[slot][label]:>5.2f}  "
            f"{explanation.shift(slot, 'image_blanked'):>13.2f}  "
            f"{explanation.shift(slot, 'text_removed'):>12.2f}  "
            f"{explanation.follows(slot):<8}{words or '-'}")
    return "\n".join(lines)
