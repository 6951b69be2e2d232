"""Prediction: label scoring (default) or greedy generation + strict parsing, batched.

    Classifier.from_pretrained(model, adapter=None, prompt=None, dtype=None, device=None,
                               image_mode=None, system=None)
    Classifier.predict(records, method="score", batch_size=16) -> list[Prediction]
    Classifier.predict_iter(records, ...) -> Iterator[Prediction]  # lazily, in input order
    Classifier.classify([(image, text), ...], method="score") -> list[Prediction]
    Classifier.from_args(ClassifierArgs)  # the same, from a config's model section

``scoring`` explains why and how labels are scored, ``generation`` the paper's parse path,
``batching`` the prompt batches both share, ``prediction`` what they give (``Prediction``),
``view`` one example as the model sees it
(``llavac prompt``). ``corpus.predict_corpus(PredictConfig)`` is the streamed, resumable
corpus job (``loader``, ``outfile``, ``summary``), on this machine or on a Ray cluster
(``ray_job``, ``ray_stages``, ``blocks``).
"""

from llavac.predict.prediction import Prediction, write_predictions

__all__ = ["METHODS", "Classifier", "Prediction", "write_predictions"]


def __getattr__(name: str):
    """The classifier's names, imported on first use: the Ray engine's read and commit
    workers import modules of this package that need no torch, and importing torch into
    each of them would cost seconds per worker process."""
    if name in ("METHODS", "Classifier"):
        from llavac.predict import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
