"""Prediction: label scoring (default) or greedy generation + strict parsing, batched.

    Classifier.from_pretrained(model, adapter=None, prompt=None, dtype=None, device=None,
                               image_mode=None, system=None)
    Classifier.predict(records, method="score", batch_size=16) -> list[Prediction]
    Classifier.predict_iter(records, ...) -> Iterator[Prediction]  # lazily, in input order
    Classifier.classify([(image, text), ...], method="score") -> list[Prediction]
    Classifier.from_args(ClassifierArgs)  # the same, from a config's model section

``scoring`` explains why and how labels are scored, ``generation`` the paper's parse path,
``batching`` the prompt batches both share, ``view`` one example as the model sees it
(``llavac prompt``). ``corpus.predict_corpus(PredictConfig)`` is the streamed, resumable,
sharded corpus job (``loader``, ``outfile``, ``shards``).
"""

from llavac.predict.classifier import (
    METHODS,
    Classifier,
    Prediction,
    write_predictions,
)

__all__ = ["METHODS", "Classifier", "Prediction", "write_predictions"]
