"""A small synthetic release in the MVSA-Single (or MVSA-Multiple) layout, for the demo, tests

The task is built so that the multimodal label needs both modalities: the text label is
carried by one keyword, the image label by the image's colour, and the multimodal label is
the Xu & Mao rule of the two (pairs whose labels conflict are dropped by the reader, as in
MVSA). Over the seven kept label pairs a text-only or image-only classifier can be right on
at most 5 of 7 (71 %), so a model above that uses both.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from llavac.labels import LABELS

KEYWORDS = {
    "negative": ["bad", "sad", "hate", "terrible", "awful", "angry"],
    "neutral": ["ok", "fine", "normal", "usual", "average"],
    "positive": ["good", "great", "happy", "love", "wonderful", "amazing"],
}
FILLER = "today people news time day this that the new old big small here there".split()
COLOURS = {  # mean RGB of an image with that label
    "negative": (40, 60, 170),
    "neutral": (128, 128, 128),
    "positive": (230, 170, 40),
}


def synthetic_image(label: str, rng: random.Random, size: int) -> Image.Image:
    """A noisy image of the label's colour, with a patch of another colour as a distractor."""
    base = [c + rng.randint(-25, 25) for c in COLOURS[label]]
    noise = bytes(
        max(0, min(255, base[i % 3] + rng.randint(-30, 30))) for i in range(size * size * 3)
    )
    image = Image.frombytes("RGB", (size, size), noise)
    other = COLOURS[rng.choice([lab for lab in LABELS if lab != label])]
    side = size // 4
    x, y = rng.randrange(size - side), rng.randrange(size - side)
    image.paste(other, (x, y, x + side, y + side))
    return image


def synthetic_text(label: str, rng: random.Random) -> str:
    words = rng.sample(FILLER, 4)
    words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
    return " ".join(words)


def write_synthetic_release(folder: str | Path, n: int = 600, seed: int = 0,
                            image_size: int = 48, annotators: int = 1) -> Path:
    """Write ``n`` image + text pairs as ``labelResultAll.txt`` and ``data/<id>.jpg|txt``.

    Text and image labels are drawn independently and uniformly, so about 2 in 9 pairs
    conflict (positive with negative) and are dropped by the Xu & Mao rule when read.
    ``annotators=3`` writes the MVSA-Multiple layout (three ``text,image`` columns): two
    annotators give the drawn labels, one random labels, so the majority is the drawn pair.
    """
    if annotators not in (1, 3):
        raise ValueError(f"annotators: 1 (MVSA-Single) or 3 (MVSA-Multiple), got {annotators}")
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    dissent = random.Random(f"{seed}:dissent")  # its own stream: the pairs match annotators=1
    rows = ["\t".join(["ID"] + ["text,image"] * annotators)]
    for i in range(1, n + 1):
        text_label, image_label = rng.choice(LABELS), rng.choice(LABELS)
        (folder / "data" / f"{i}.txt").write_text(synthetic_text(text_label, rng) + "\n")
        synthetic_image(image_label, rng, image_size).save(folder / "data" / f"{i}.jpg",
                                                           quality=90)
        votes = [f"{text_label},{image_label}"] * min(annotators, 2)
        if annotators == 3:
            votes.insert(dissent.randrange(3),
                         f"{dissent.choice(LABELS)},{dissent.choice(LABELS)}")
        rows.append("\t".join([str(i), *votes]))
    (folder / "labelResultAll.txt").write_text("\n".join(rows) + "\n")
    return folder
