"""Records as a Hugging Face ``datasets.Dataset``, for users who train with their own loop."""

from __future__ import annotations

from dataclasses import asdict, fields

from llavac.data.records import Record


def to_hf_dataset(records: list[Record], decode_images: bool = False):
    """One row per record with the ``Record`` columns; ``image`` is the path, or with
    ``decode_images`` a ``datasets.Image`` feature that loads the file on access."""
    import datasets  # imported here: the rest of the data layer does not need it

    rows = [asdict(record) for record in records]
    columns = {f.name: [row[f.name] for row in rows] for f in fields(Record)}
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    dataset = datasets.Dataset.from_dict(columns, features=features)
    return dataset.cast_column("image", datasets.Image()) if decode_images else dataset
