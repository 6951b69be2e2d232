"""Occlusion: what drove each label, read by scoring the pair with a part of it taken away.

No gradients: every variant is an ordinary (image, text) pair scored by the classifier's
label scorer, so it works for every model family and reads the same (calibrated)
probabilities that ``predict`` and ``evaluate`` report. Per pair and slot:

- **modality**: the image *blanked* (a solid image of the processor's mean colour, the
  colour LLaVA pads with, of the same size) and the text *removed* (an empty text). The
  shift each causes is the total variation distance between the slot's probabilities and
  the occluded ones: 0 when nothing moved, 1 when every bit of probability moved to other
  labels.
- **words**: each word (the text split on white space) removed in turn. A word's weight is
  the *drop* in the probability of the slot's predicted label: positive when the word
  supported the label, negative when it argued against it.
- **regions**: each cell of a ``grid`` x ``grid`` grid filled with the mean colour, the same
  drop per cell. The grid lies over the image as the model sees it: padded to a square for
  ``image_mode`` pad (scoring the padded square gives the original's pixels), as given
  otherwise.

Cost: ``3 + words + grid**2`` scored variants per pair (:func:`variant_count`; about 50
for a tweet on the default 6 x 6 grid), in batches through the scorer; modality alone is 2
per pair. :func:`occlusions` builds the variants, :func:`explain` scores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from llavac.labels import LABELS
from llavac.models.inputs import pad_fill

DEFAULT_GRID = 6  # 6 x 6 cells: 56 px on LLaVA-1.5's 336 px input, 36 variants
# A modality "leads" a label only when its removal moves the probabilities by more than
# this beyond the other's: two shifts of 0.001 and 0.002 say that neither matters.
FOLLOWS_MARGIN = 0.01
Probabilities = dict[str, dict[str, float]]  # {slot: {label: p}}, as Prediction holds them


def blank_image(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """A solid image of ``fill`` the size of ``image``: the image with nothing in it."""
    return Image.new("RGB", image.size, fill)


def model_canvas(image: Image.Image, fill: tuple[int, int, int], image_mode: str
                 ) -> Image.Image:
    """The image the region grid lies over: centred on a square of ``fill`` for ``pad``
    (LLaVA's ``expand2square``, the square transformers' padding makes), else as given."""
    width, height = image.size
    if image_mode != "pad" or width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def grid_cells(size: tuple[int, int], grid: int) -> list[tuple[int, int, int, int]]:
    """The ``grid`` x ``grid`` cells of an image of ``size``, row by row, as PIL boxes."""
    width, height = size
    return [(col * width // grid, row * height // grid,
             (col + 1) * width // grid, (row + 1) * height // grid)
            for row in range(grid) for col in range(grid)]


def occlude_cell(image: Image.Image, box: tuple[int, int, int, int],
                 fill: tuple[int, int, int]) -> Image.Image:
    occluded = image.copy()
    occluded.paste(fill, box)
    return occluded


def without_word(words: Sequence[str], position: int) -> str:
    return " ".join(words[:position] + words[position + 1 :])


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Half the L1 distance between two label distributions, in [0, 1]."""
    return 0.5 * sum(abs(p[label] - q[label]) for label in LABELS)


def top_label(probs: dict[str, float]) -> str:
    return max(probs, key=probs.get)


def follows(text_shift: float, image_shift: float) -> str:
    """``text``, ``image`` or ``neither``: which removal moves the label more."""
    if text_shift > image_shift + FOLLOWS_MARGIN:
        return "text"
    return "image" if image_shift > text_shift + FOLLOWS_MARGIN else "neither"


def score_pairs(classifier, pairs: Sequence[tuple[Image.Image, str]],
                batch_size: int) -> list[Probabilities]:
    """Each (image, text) pair's ``{slot: {label: p}}``, scored ``batch_size`` at a time."""
    return [prediction.probabilities
            for prediction in classifier.classify(pairs, "score", batch_size)]


def modality_variants(image: Image.Image, text: str, fill: tuple[int, int, int]
                      ) -> list[tuple[Image.Image, str]]:
    """The pair with its image blanked, then with its text removed."""
    return [(blank_image(image, fill), text), (image, "")]


@dataclass
class Explanation:
    """What drove one pair's labels: its probabilities whole and under each occlusion.

    ``to_dict`` is the JSON form (``llavac explain`` writes it, an HTTP route can return
    it); ``canvas`` is the image the region grid lies over (for :func:`heatmap_png`).
    """

    id: str
    text: str
    probabilities: Probabilities
    image_blanked: Probabilities
    text_removed: Probabilities
    words: list[str]
    word_probabilities: list[Probabilities]  # the pair without word i
    grid: int
    region_probabilities: list[Probabilities]  # the pair with cell i occluded, row by row
    canvas: Image.Image = field(repr=False)

    @property
    def labels(self) -> dict[str, str]:
        return {slot: top_label(probs) for slot, probs in self.probabilities.items()}

    def shift(self, slot: str, occlusion: str) -> float:
        """Total variation distance caused by ``image_blanked`` or ``text_removed``."""
        return total_variation(self.probabilities[slot], getattr(self, occlusion)[slot])

    def follows(self, slot: str) -> str:
        """``text`` or ``image``: the modality whose removal moves the slot more (by over
        ``FOLLOWS_MARGIN``), else ``neither``."""
        return follows(self.shift(slot, "text_removed"), self.shift(slot, "image_blanked"))

    def drops(self, slot: str, occluded: list[Probabilities]) -> list[float]:
        """How much the predicted label's probability falls under each occlusion."""
        label = self.labels[slot]
        before = self.probabilities[slot][label]
        return [before - probs[slot][label] for probs in occluded]

    def ranked_words(self, slot: str) -> list[tuple[str, float]]:
        """``(word, drop)`` from the word the label leans on most to the least."""
        pairs = zip(self.words, self.drops(slot, self.word_probabilities), strict=True)
        return sorted(pairs, key=lambda pair: -pair[1])

    def region_drops(self, slot: str) -> list[list[float]]:
        """The drop per grid cell, as ``grid`` rows of ``grid`` values."""
        flat = self.drops(slot, self.region_probabilities)
        return [flat[row * self.grid : (row + 1) * self.grid] for row in range(self.grid)]

    def to_dict(self) -> dict:
        slots = list(self.probabilities)
        word_drops = {slot: self.drops(slot, self.word_probabilities) for slot in slots}
        return {
            "id": self.id,
            "text": self.text,
            "labels": self.labels,
            "probabilities": self.probabilities,
            "modality": {slot: {
                "image_blanked": {"probabilities": self.image_blanked[slot],
                                  "shift": self.shift(slot, "image_blanked")},
                "text_removed": {"probabilities": self.text_removed[slot],
                                 "shift": self.shift(slot, "text_removed")},
                "follows": self.follows(slot),
            } for slot in slots},
            "words": [{"word": word, "position": i,
                       "drop": {slot: word_drops[slot][i] for slot in slots}}
                      for i, word in enumerate(self.words)],
            "regions": {"grid": self.grid, "canvas_size": list(self.canvas.size),
                        "drop": {slot: self.region_drops(slot) for slot in slots}},
        }


@dataclass
class Occlusions:
    """Every scored variant of one pair, in the order :meth:`explanation` reads them: the
    pair whole, its modality variants, one per word removed, one per grid cell occluded.

    Built apart from the scoring so that a caller with its own queue (the HTTP server's
    batcher) can score ``variants`` its way; :func:`explain` scores them in batches.
    """

    text: str
    words: list[str]
    grid: int
    canvas: Image.Image
    variants: list[tuple[Image.Image, str]]

    def explanation(self, id: str, scored: list[Probabilities]) -> Explanation:
        """The explanation, from ``scored``: one ``{slot: {label: p}}`` per variant."""
        if len(scored) != len(self.variants):
            raise ValueError(f"{len(scored)} scores for {len(self.variants)} variants")
        words = len(self.words)
        return Explanation(id, self.text, scored[0], scored[1], scored[2], self.words,
                           scored[3 : 3 + words], self.grid, scored[3 + words :], self.canvas)


def variant_count(text: str, grid: int) -> int:
    """How many variants (forward passes) explaining a pair with ``text`` costs."""
    return 3 + len(text.split()) + grid * grid


def occlusions(classifier, image: Image.Image, text: str, grid: int = DEFAULT_GRID
               ) -> Occlusions:
    """The occlusion variants of one (RGB image, text) pair for ``classifier`` (its
    processor's mean colour fills what is taken away, its ``image_mode`` sets the canvas)."""
    if grid < 1:
        raise ValueError(f"grid: expected a number of cells per side >= 1, got {grid}")
    fill = pad_fill(classifier.processor)
    canvas = model_canvas(image, fill, classifier.source.get("image_mode"))
    words = text.split()
    variants = [(image, text), *modality_variants(image, text, fill),
                *((image, without_word(words, i)) for i in range(len(words))),
                *((occlude_cell(canvas, box, fill), text)
                  for box in grid_cells(canvas.size, grid))]
    return Occlusions(text, words, grid, canvas, variants)


def explain(classifier, image: Image.Image, text: str, id: str = "0",
            grid: int = DEFAULT_GRID, batch_size: int = 16) -> Explanation:
    """Explain one (RGB image, text) pair: every occlusion variant, scored in batches of
    ``batch_size`` through ``classifier`` (a :class:`llavac.predict.Classifier`)."""
    pair = occlusions(classifier, image, text, grid)
    return pair.explanation(id, score_pairs(classifier, pair.variants, batch_size))
