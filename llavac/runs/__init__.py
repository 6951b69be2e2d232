"""Run folders and what is recorded about them: the one type that knows the layout of what
training, export and the other commands write (:mod:`llavac.runs.folder`), provenance and
result hashes (:mod:`llavac.runs.info`), the leakage guard (:mod:`llavac.runs.leakage`) and
export to a standalone model folder (:mod:`llavac.runs.export`)."""

from llavac.runs.folder import RunFolder

__all__ = ["RunFolder"]
