"""Prompt variants: other wordings (and slot orders) of the LLaVAC question, read from YAML.

Used by ``llavac robustness`` (one evaluation per variant) and by ``train.prompt_variants``
(each training example asks one variant, drawn at random). The shipped set is
``llavac/configs/prompt_variants.yaml``; a file of the same shape replaces it.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import yaml

from llavac.config import PRESETS
from llavac.prompt.format import PromptFormat

VARIANTS_FILE = PRESETS / "prompt_variants.yaml"
ORIGINAL = "original"  # the run's own prompt: the reference every other variant is compared with
_KEYS = {"name", "instruction", "slots"}


def load_variants(path: str | Path | None, base: PromptFormat) -> dict[str, PromptFormat]:
    """``{name: PromptFormat}`` from a variants file (None: the shipped one), each variant a
    change of ``base`` (the run's own prompt). Bad entries are one error naming the file."""
    path = Path(path) if path else VARIANTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt variants file")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'variants' list")
    variants = {}
    for index, entry in enumerate(entries):
        name, fmt = _variant(entry, base, f"{path}: variants[{index}]")
        if name in variants:
            raise ValueError(f"{path}: variant name {name!r} appears twice")
        variants[name] = fmt
    if variants.get(ORIGINAL) != base:
        raise ValueError(f"{path}: needs a variant named {ORIGINAL!r} with no instruction or "
                         "slots (the run's own prompt, the reference for the others)")
    return variants


def _variant(entry, base: PromptFormat, where: str) -> tuple[str, PromptFormat]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError(f"{where}: expected a mapping with a 'name', got {entry!r}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    fmt = base
    try:
        if "slots" in entry:
            fmt = dataclasses.replace(fmt, slots=PromptFormat.from_name(entry["slots"]).slots)
        if "instruction" in entry:
            fmt = dataclasses.replace(fmt, instruction=str(entry["instruction"]))
            fmt.question_parts("probe")  # a placeholder other than {labels} / {slots} fails here
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"{where} ({entry['name']}): {error!r}; an instruction may use "
                         "{labels} and {slots} only") from None
    return entry["name"], fmt


def draw_variant(variants: tuple[PromptFormat, ...], seed: int, example_id: str) -> PromptFormat:
    """The variant one training example asks: random, but fixed by the training seed and the
    example's id, so a resumed run or another data order asks the same question."""
    return random.Random(f"{seed}:{example_id}").choice(variants)
