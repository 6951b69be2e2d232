"""llavac: a vision-language model as a multimodal sentiment classifier (LLaVAC)."""

__version__ = "0.2.0"
