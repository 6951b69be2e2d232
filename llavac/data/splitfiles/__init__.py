"""The published MVSA splits as compact id lists (see README.md here); read by
``llavac.data.published``, written by ``python -m llavac.data.splitfiles.build``."""
