"""Silence third-party deprecation warnings a user can do nothing about, where they arise.

peft 0.21 reads ``model.is_gradient_checkpointing`` every time it wraps a model
(``PeftModel.__init__``: ``get_peft_model`` in training, ``PeftModel.from_pretrained`` in
prediction). transformers 5 deprecated that property for ``is_activation_checkpointing`` and
warns on each read. Only that exact warning, only around those calls, is ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around a call that wraps a transformers model in peft."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield
