"""Explanations by occlusion: what drove each label of a pair (``llavac explain``).

    explain(classifier, image, text, id="0", grid=6, batch_size=16) -> Explanation
    occlusions(classifier, image, text, grid=6) -> Occlusions: the variants, unscored
    Occlusions.explanation(id, scored) -> Explanation, from each variant's probabilities
    Explanation.to_dict() -> JSON-able: labels, modality shifts, word and region drops
    heatmap_png(explanation, slot) -> PNG bytes: the region drops over the image
    run_explain(ExplainConfig) -> explanations.jsonl + heatmaps/ in the output folder

``occlusion`` says what each occlusion is and what it costs. This stage sits above
``predict`` (it scores through the classifier) and below ``evaluation``, whose modality
reliance uses the same occlusions.
"""

from llavac.explain.heatmap import heatmap_png
from llavac.explain.occlusion import (
    DEFAULT_GRID,
    Explanation,
    Occlusions,
    explain,
    occlusions,
    variant_count,
)

__all__ = ["DEFAULT_GRID", "Explanation", "Occlusions", "explain", "heatmap_png", "occlusions",
           "variant_count"]
