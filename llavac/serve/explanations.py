"""``POST /v1/explain``: the occlusion explanation of one pair (:mod:`llavac.explain`), served.

An explanation scores ``3 + words + grid**2`` variants of the pair (about 50 for a tweet on
the default 6 x 6 grid), so it is bounded before anything is decoded: the grid by
``serve.max_explain_grid``, the variants by ``serve.max_explain_variants`` (and by
``serve.max_queue``, which holds them while they wait). The variants join the queue of the
classify requests and are scored by the same batcher, ``serve.max_batch_size`` at a time:
an explanation takes its place in the queue like a batch request of as many pairs, and a
full queue refuses it with 503.

Its variants are copies of the image, one per grid cell, and for LLaVA-1.5 each is the
image padded to a square of its longer side: a panorama decoded at 768 px high would make
each copy hundreds of megabytes. So the image is explained with its *longer* side shrunk to
the early downscale's side (768 px for LLaVA-1.5, whose processor then resizes to 336), the
whole pair included so that every variant is compared with the same image: at most 64
copies of 768 x 768 px, about 110 MB. And one explanation at a time holds variants, from
building them until they are scored; others wait their turn holding only their decoded
image, as classify requests do. The model runs one batch at a time anyway, so this costs
explanations little and classify requests nothing: their items still join the batches in
between. (A photo larger than that side may therefore get probabilities a little apart
from ``/v1/classify``'s, which sees it at its decoded size.)

The heatmap travels as numbers (one drop per cell per slot, about 2 kB of JSON for three
slots on the default grid), not as a picture: the client already has the image, and a
336 px PNG per slot would be a hundred times larger. The page draws the cells over the
image on a canvas.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from starlette.concurrency import run_in_threadpool

from llavac.explain import DEFAULT_GRID, occlusions, variant_count
from llavac.predict.loader import release_memory
from llavac.serve.errors import ApiError
from llavac.serve.inputs import RELEASE_AFTER_PIXELS, Upload, decode_uploads
from llavac.serve.limits import ServeLimits

# One explanation at a time holds its variants; one lock per event loop (tests run apps on
# several).
_holding_variants: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    WeakKeyDictionary())


def _one_at_a_time() -> asyncio.Lock:
    return _holding_variants.setdefault(asyncio.get_running_loop(), asyncio.Lock())


def explain_grid(value: str | None, limits: ServeLimits) -> int:
    """The ``?grid=N`` query parameter: cells per side, 1 to ``serve.max_explain_grid``."""
    if value is None:
        return DEFAULT_GRID
    try:
        grid = int(value)
    except ValueError:
        grid = 0
    if not 1 <= grid <= limits.max_explain_grid:
        raise ApiError(422, f"grid must be a whole number of cells per side in 1.."
                       f"{limits.max_explain_grid}, got {value!r}", "grid")
    return grid


def check_cost(text: str, grid: int, limits: ServeLimits) -> int:
    """The variants explaining ``text`` on ``grid`` costs; 413 past the server's limit."""
    variants = variant_count(text, grid)
    if variants > limits.max_explain_variants:
        raise ApiError(413, f"explaining this pair takes {variants} forward passes (3 + "
                       f"{len(text.split())} words + {grid}x{grid} cells); the limit is "
                       f"{limits.max_explain_variants} (serve.max_explain_variants, max_queue): "
                       "send a shorter text or a smaller grid", "text")
    return variants


async def explain_upload(upload: Upload, grid: int, state) -> dict:
    """The explanation of one upload as JSON (:meth:`Explanation.to_dict` without the id,
    which names nothing here), plus the number of variants scored."""
    if state.args.method != "score":
        raise ApiError(422, "explanations read probabilities: the server runs method "
                       f"{state.args.method!r}", None)
    variants = check_cost(upload.text, grid, state.limits)
    [(image, text)], pixels = await decode_uploads([upload], state)
    side = state.image_limits.short_side  # None: a model without an image processor
    if side is not None:
        image.thumbnail((side, side))  # the longer side too (see the module docstring)
    try:
        async with _one_at_a_time():
            pair = await run_in_threadpool(occlusions, state.classifier, image, text, grid)
            predictions = await state.batcher.submit(pair.variants)
            explanation = pair.explanation("", [p.probabilities for p in predictions])
        return {"variants": variants,
                **{k: v for k, v in explanation.to_dict().items() if k != "id"}}
    finally:
        if pixels >= RELEASE_AFTER_PIXELS:
            await run_in_threadpool(release_memory)
