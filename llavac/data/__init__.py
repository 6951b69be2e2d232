"""The data layer: MVSA releases and own data in, records and splits out.

    read_source(path)   -> Source   a release folder or own-data file, problems counted
    load_split(path, procedure=..., fold=..., seed=..., splits_dir=..., strict=...) -> Split
    load_data(DataArgs) -> Split    the same, from a config's data section
    open_rgb(path, ImageLimits) -> PIL image, the one place images are opened (PNG, JPEG,
                        WebP, GIF, BMP; a pixel limit; shrunk early for the model)
    to_hf_dataset(records) -> datasets.Dataset

``llavac data check`` and ``llavac data export`` are ``check.check_path`` and
``export.export_split``.
"""

from llavac.data.hf import to_hf_dataset
from llavac.data.images import (
    ALLOWED_FORMATS,
    ImageFormatRefused,
    ImageLimits,
    ImageTooLarge,
    NotAnImage,
    UnreadableImage,
    check_images,
    open_rgb,
)
from llavac.data.load import data_image_limits, load_data, load_split, read_source
from llavac.data.procedures import PROCEDURES
from llavac.data.records import Problem, Record, Source, Split
from llavac.data.text import decode_bytes, read_text

__all__ = [
    "ALLOWED_FORMATS",
    "ImageFormatRefused",
    "ImageLimits",
    "ImageTooLarge",
    "NotAnImage",
    "PROCEDURES",
    "Problem",
    "Record",
    "Source",
    "Split",
    "UnreadableImage",
    "check_images",
    "data_image_limits",
    "decode_bytes",
    "load_data",
    "load_split",
    "open_rgb",
    "read_source",
    "read_text",
    "to_hf_dataset",
]
