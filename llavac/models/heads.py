"""Classification heads (``train.objective=head``): one linear layer per slot on the final
hidden state at the last prompt token.

The prompt is the one the answer objective asks, with its generation prompt, so the last
prompt token is the position that would predict the answer's first word; its final hidden
state (after the language model's last norm) is what each slot's layer maps to the three
labels, in the order of ``LABELS``.

Where the heads live:
- in training, as the submodule :data:`HEADS_ATTR` of the transformers model, listed in
  peft's ``modules_to_save``: the Trainer's checkpoints, resume and ``adapter/`` hold them
  with the LoRA weights, and ``PeftModel.from_pretrained`` loads them back onto a model the
  heads were attached to first;
- in an exported folder, as ``heads.safetensors`` beside the merged model (whose own files
  stay loadable by plain transformers), with the slots in its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llavac.labels import LABELS, SLOTS

HEADS_ATTR = "llavac_heads"  # the submodule name on the transformers model
HEADS_FILE = "heads.safetensors"  # in an exported folder


class SlotHeads(nn.Module):
    """``{slot: Linear(hidden, len(LABELS))}``; ``forward`` gives ``(batch, slots, labels)``
    logits, the slots in ``self.slots`` order."""

    def __init__(self, hidden_size: int, slots: tuple[str, ...]):
        super().__init__()
        unknown = [slot for slot in slots if slot not in SLOTS]
        if unknown or not slots:
            raise ValueError(f"head slots {list(slots)}: choose from {', '.join(SLOTS)}")
        self.slots = tuple(slots)
        self.layers = nn.ModuleDict({slot: nn.Linear(hidden_size, len(LABELS)) for slot in slots})

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.layers[slot](hidden) for slot in self.slots], dim=1)


def attach_heads(model: nn.Module, slots: tuple[str, ...]) -> SlotHeads:
    """New heads for ``slots`` on the transformers ``model`` (in its dtype and device), at
    :data:`HEADS_ATTR`; initialised from the global seed, like the LoRA matrices."""
    text = model.config.get_text_config()
    heads = SlotHeads(text.hidden_size, slots).to(model.device, dtype=model.dtype)
    setattr(model, HEADS_ATTR, heads)
    return heads


def detach_heads(model: nn.Module) -> SlotHeads | None:
    """Remove and return the heads of a (merged) model, so that the model saves and runs as
    the plain transformers model; ``None`` when it has none."""
    return model._modules.pop(HEADS_ATTR, None)


def head_logits(model: nn.Module, heads: nn.Module, inputs: dict,
                position_ids: torch.Tensor) -> torch.Tensor:
    """``(batch, slots, labels)`` logits of a left-padded prompt batch: the model's final
    hidden state at the last column (every prompt's last token) through ``heads``.

    ``logits_to_keep=1`` spares projecting every position onto the vocabulary; the hidden
    states' last entry is the normed final one (transformers ties it to
    ``last_hidden_state``)."""
    out = model(**inputs, position_ids=position_ids, output_hidden_states=True,
                logits_to_keep=1, use_cache=False)
    return heads(out.hidden_states[-1][:, -1])


def save_heads(heads: SlotHeads, folder: Path) -> Path:
    """``folder/heads.safetensors``: the layers' weights, the slots in the metadata."""
    path = Path(folder) / HEADS_FILE
    tensors = {name: value.detach().contiguous().cpu()
               for name, value in heads.state_dict().items()}
    save_file(tensors, path, metadata={"slots": json.dumps(list(heads.slots))})
    return path


def load_heads(folder: Path, model: nn.Module) -> SlotHeads | None:
    """The heads an exported ``folder`` holds, attached to ``model``; ``None`` without them."""
    path = Path(folder) / HEADS_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as file:
        slots = tuple(json.loads(file.metadata()["slots"]))
    heads = attach_heads(model, slots)
    heads.load_state_dict(load_file(path))
    return heads
