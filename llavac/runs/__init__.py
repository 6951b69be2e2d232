"""Run folders: the one type that knows the layout of what training, export and the other
commands write (:mod:`llavac.runs.folder`)."""

from llavac.runs.folder import RunFolder

__all__ = ["RunFolder"]
