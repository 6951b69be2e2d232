"""The region drops of one slot drawn over the image, as PNG bytes (Pillow only, no figure
library: the HTTP server can draw one per request).

Red cells supported the predicted label (occluding them lowers its probability), blue cells
argued against it. The colour's strength is relative to the strongest cell, but never
stronger than a drop of ``MIN_SCALE`` deserves, so a map where nothing matters stays pale.
A caption under the image names the slot, the label and the strongest drop.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from llavac.explain.occlusion import Explanation, grid_cells

SIDE = 336  # the drawn image's longer side (LLaVA-1.5's input size)
MIN_SCALE = 0.05  # a drop this large (or larger) can get full colour
MAX_ALPHA = 170  # of 255: the image stays visible under the strongest cell
SUPPORTS, OPPOSES = (220, 30, 30), (30, 90, 220)
CAPTION_HEIGHT = 18


def heatmap_png(explanation: Explanation, slot: str) -> bytes:
    """``slot``'s region drops over ``explanation.canvas``, captioned, as PNG bytes."""
    canvas = explanation.canvas
    scale = SIDE / max(canvas.size)
    size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
    base = canvas.convert("RGBA").resize(size, Image.Resampling.BICUBIC)
    drops = [drop for row in explanation.region_drops(slot) for drop in row]
    strongest = max(drops, key=abs)
    norm = max(abs(strongest), MIN_SCALE)
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for drop, box in zip(drops, grid_cells(size, explanation.grid), strict=True):
        alpha = round(MAX_ALPHA * min(1.0, abs(drop) / norm))
        colour = SUPPORTS if drop > 0 else OPPOSES
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(*colour, alpha))
    drawn = Image.new("RGB", (size[0], size[1] + CAPTION_HEIGHT), "white")
    drawn.paste(Image.alpha_composite(base, overlay).convert("RGB"), (0, 0))
    label = explanation.labels[slot]
    ImageDraw.Draw(drawn).text(
        (4, size[1] + 3), f"{slot}: {label} {explanation.probabilities[slot][label]:.2f}; "
        f"strongest cell {strongest:+.2f}", fill="black")
    out = io.BytesIO()
    drawn.save(out, format="PNG")
    return out.getvalue()
