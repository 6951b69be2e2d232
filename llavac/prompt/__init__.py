"""The prompt: the question, the answer and its parser (:mod:`llavac.prompt.format`), and the
other wordings and slot orders that prompt robustness asks in (:mod:`llavac.prompt.variants`)."""

from llavac.prompt.format import V1_SYSTEMS, PromptFormat, render

__all__ = ["V1_SYSTEMS", "PromptFormat", "render"]
