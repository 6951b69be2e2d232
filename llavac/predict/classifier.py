"""The classifier: a base model (+ a fine-tuned adapter) loaded once, predicting in batches.

``Classifier.from_pretrained`` accepts what training writes: a run folder (``config.yaml`` +
``adapter/`` or ``model/`` + ``processor/``) is enough on its own, because the run's config
names the base model, the seed of a tiny base model (whose random weights the adapter was
trained on) and the prompt variant. A bare peft adapter folder or a plain base model (zero-
shot) works too.

A run folder calibrated by ``llavac calibrate`` holds ``calibration.json``: one temperature
per slot, applied to the scored probabilities (temperature scaling, Guo et al. 2017; it never
changes the most likely label). ``min_confidence`` marks the slots whose (calibrated) top
probability falls below it as ``"uncertain"`` (abstention) and keeps their probabilities.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from llavac.args import ClassifierArgs, PredictConfig
from llavac.console import Progress
from llavac.data import UnreadableImage
from llavac.models import (
    apply_inputs,
    load_model,
    load_processor,
    model_facts,
    model_family,
    model_type,
    peft_wrapping,
    resolve_dtype,
    resolve_inputs,
)
from llavac.models.heads import attach_heads, detach_heads, load_heads
from llavac.predict.batching import PromptBatch, encode_prompts, to_model
from llavac.predict.generation import answer_token_budget, generate_answers
from llavac.predict.head_scoring import check_generates, head_probabilities
from llavac.predict.loader import PairStream, in_order
from llavac.predict.prediction import Prediction
from llavac.predict.scoring import LabelScorer
from llavac.predict.temperature import apply_temperature
from llavac.prompt import PromptFormat
from llavac.runs.folder import RunFolder, recorded_inputs

METHODS = ("score", "generate")


@dataclass
class ModelSource:
    """What a classifier is loaded from: a base model and, optionally, trained weights (a
    training run folder, a bare peft adapter) or an exported folder as the base model."""

    name: str  # the base model
    folder: RunFolder | None  # the --adapter folder; None: zero-shot or an exported folder
    config: dict  # the run's config.yaml, or what llavac.json records ({} for neither)

    @property
    def model(self) -> dict:
        return self.config.get("model", {})

    @property
    def seed(self) -> int:
        return self.model.get("seed", 0)

    @property
    def exported(self) -> RunFolder | None:
        """The folder ``llavac export`` wrote, when the base model is one."""
        folder = RunFolder(self.name)
        return folder if folder.is_export else None

    @property
    def weights(self) -> Path | None:
        return self.folder.weights() if self.folder is not None else None

    @property
    def prompt(self) -> str:
        return self.config.get("train", {}).get("prompt") or "full"

    @property
    def trained_processor(self) -> Path | None:
        """The processor a training run saved (it may differ from the base model's)."""
        if self.folder is None or not self.folder.has_config:
            return None
        return self.folder.processor if self.folder.processor.is_dir() else None

    @property
    def head_slots(self) -> tuple[str, ...] | None:
        """The slots of a head run's classification heads (``train.objective=head``): the
        prompt's."""
        if self.config.get("train", {}).get("objective") != "head":
            return None
        return PromptFormat.from_name(self.prompt).slots

    def inputs(self, image_mode: str | None, system: str | None) -> tuple[str | None, ...]:
        """``(image_mode, system)``: the given ones, else what the training run recorded.
        ``None`` (no run): the family's default."""
        if not self.config:
            return image_mode, system
        recorded_mode, recorded_system = recorded_inputs(self.config)
        return image_mode or recorded_mode, system or recorded_system

    def calibration(self) -> RunFolder | None:
        """Where ``calibration.json`` lies: the run folder, or the exported folder."""
        return self.folder or self.exported

    @classmethod
    def resolve(cls, model: str | None, adapter: str | Path | None) -> ModelSource:
        """The base model and weights for ``model`` and / or ``adapter``."""
        folder = RunFolder(adapter) if adapter is not None else None
        if folder is not None:
            folder.weights()  # names the folder when it holds no weights
        config = folder.config() if folder is not None else {}
        if model is None and folder is not None and folder.is_bare_adapter:
            model = folder.peft_base_model()
        model = model or config.get("model", {}).get("name")
        facts = RunFolder(model).export_facts() if folder is None and model else None
        if facts is not None:
            config = {"train": {"prompt": facts["prompt"]},
                      "model": {key: facts.get(key) for key in ("image_mode", "system")}}
        if not model:
            raise ValueError(
                "name the base model: the adapter is not a run folder and its "
                "adapter_config.json names no base_model_name_or_path"
                if folder is not None else "name a base model (--model) or a training run "
                "folder (--adapter)"
            )
        return cls(model, folder, config)

    def processor(self):
        """The processor a training run saved, else the base model's; no weights load."""
        saved = self.trained_processor
        if saved is not None:
            return load_processor(self.name, saved=saved)
        return load_processor(self.name, self.seed)

    def load(self, dtype: str | None, device: str):
        """``(model, processor)``: the base model with the weights merged in."""
        from transformers import AutoModelForImageTextToText

        weights = self.weights
        if weights is not None and weights.name == "model":  # a full fine-tune
            model = AutoModelForImageTextToText.from_pretrained(
                weights, dtype=resolve_dtype(dtype), device_map=device)
            return model, self.processor()
        model, processor = load_model(self.name, dtype=dtype, device_map=device, seed=self.seed)
        if weights is None:
            load_heads(Path(self.name), model)  # an exported head model's, if it is one
            return model, processor
        from peft import PeftModel

        if self.head_slots:  # peft loads the trained heads into them (modules_to_save)
            attach_heads(model, self.head_slots)
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, weights).merge_and_unload()
        return model, (self.processor() if self.trained_processor else processor)


def model_settings(args: ClassifierArgs) -> dict:
    """What decides the labels of the classifier ``args`` names (the keys of
    :attr:`Classifier.settings`), resolved as :meth:`Classifier.from_args` resolves it but
    without loading the weights: what a corpus job records, so that a resume can prove it is
    the same job."""
    source = ModelSource.resolve(args.name, args.adapter)
    image_mode, system = resolve_inputs(model_type(source.name),
                                        *source.inputs(args.image_mode, args.system))
    adapter = str(Path(args.adapter).resolve()) if args.adapter else None
    return {"model": source.name, "adapter": adapter, "seed": source.seed,
            "dtype": args.dtype or source.model.get("dtype"),
            "prompt": args.prompt or source.prompt, "system": system, "image_mode": image_mode,
            "temperatures": read_temperatures(source) if args.calibrated else None}


def job_settings(config: PredictConfig, classifier: Classifier | None = None) -> dict:
    """What decides the labels of a job (its recorded settings): the classifier's, as loaded
    (``classifier``) or as ``config.model`` resolves without loading it, and the job's."""
    job = config.predict
    model = classifier.settings if classifier is not None else model_settings(config.model)
    return {**model, "method": job.method, "min_confidence": job.min_confidence,
            "input": str(Path(job.input).resolve())}


def model_inputs(args: ClassifierArgs) -> tuple[object, PromptFormat]:
    """``(processor, prompt format)`` exactly as :meth:`Classifier.from_args` sets them up,
    without loading the weights: what a CPU worker needs to prepare a 7B model's inputs."""
    settings = model_settings(args)
    source = ModelSource.resolve(args.name, args.adapter)
    processor = apply_inputs(source.processor(), settings["image_mode"], settings["system"])
    return processor, PromptFormat.from_name(settings["prompt"], settings["system"])


def read_temperatures(source: ModelSource) -> dict[str, float] | None:
    """The per-slot temperatures of the run's (or the export's) ``calibration.json``."""
    folder = source.calibration()
    return folder.temperatures() if folder is not None else None


class Classifier:
    """A vision-language model that labels (image, text) pairs as LLaVAC does."""

    def __init__(self, model, processor, prompt: str | PromptFormat = "full",
                 source: dict | None = None, temperatures: dict[str, float] | None = None,
                 system: str = "none"):
        # A head run's classification heads (llavac.models.heads), kept beside the model so
        # that it stays the plain transformers model; None: the answer is scored.
        self.heads = detach_heads(model)
        self.model = model.eval()
        self.temperatures = temperatures  # {slot: T} from calibration.json; None: raw
        self.processor = processor
        # A PromptFormat: a prompt variant of the robustness study (llavac.studies.robustness).
        self.fmt = (prompt if isinstance(prompt, PromptFormat)
                    else PromptFormat.from_name(prompt, system))
        self.scorer = LabelScorer(self.model, processor, self.fmt)
        self.max_new_tokens = answer_token_budget(processor.tokenizer, self.fmt,
                                                  self.scorer.answer_separator)
        self.source = {**(source or {}), "prompt": self.fmt.name, "system": self.fmt.system,
                       **model_facts(model)}

    @property
    def settings(self) -> dict:
        """What decides this classifier's labels: base model, adapter, seed, dtype, prompt,
        system sentence, image mode and temperatures (a corpus job records them)."""
        adapter = self.source.get("adapter")
        return {"model": self.source.get("model") or self.source.get("name_or_path"),
                "adapter": str(Path(adapter).resolve()) if adapter else None,
                **{key: self.source.get(key) for key in ("seed", "dtype", "prompt", "system",
                                                          "image_mode", "temperatures")}}

    @classmethod
    def from_args(cls, args: ClassifierArgs) -> Classifier:
        """The classifier a config's ``model`` section names."""
        return cls.from_pretrained(args.name, args.adapter, args.prompt, args.dtype,
                                   args.device, args.image_mode, args.system,
                                   calibrated=args.calibrated)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        adapter: str | Path | None = None,
        prompt: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        image_mode: str | None = None,
        system: str | None = None,
        calibrated: bool = True,
    ) -> Classifier:
        """Load a base model, optionally with a fine-tuned adapter or a fully fine-tuned model.

        ``adapter``: a training run folder (its ``config.yaml`` supplies the base model name,
        the tiny-model seed, the dtype, the prompt variant, the image mode and the system
        choice; explicit arguments win) or a bare peft adapter folder (the base model then
        comes from ``model`` or the adapter's ``base_model_name_or_path``). LoRA weights are
        merged into the base model: prediction runs at the base model's speed. ``device``
        defaults to CUDA when available. ``image_mode`` / ``system`` left unset and not
        recorded by a run: the model family's defaults (:mod:`llavac.models.inputs`).
        ``calibrated``: apply the adapter folder's ``calibration.json`` when it has one.
        """
        source = ModelSource.resolve(model, adapter)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded, processor = source.load(dtype or source.model.get("dtype"), device)
        image_mode, system = resolve_inputs(model_family(loaded),
                                            *source.inputs(image_mode, system))
        apply_inputs(processor, image_mode, system)  # the inputs training saw, in every stage
        temperatures = read_temperatures(source) if calibrated else None
        facts = {"model": source.name, "adapter": str(adapter) if adapter else None,
                 "seed": source.seed, "image_mode": image_mode, "temperatures": temperatures}
        return cls(loaded, processor, prompt or source.prompt, facts, temperatures=temperatures,
                   system=system)

    # -- prediction ----------------------------------------------------------------------

    def predict(self, records: Iterable, method: str = "score", batch_size: int = 16,
                progress: bool = True, min_confidence: float | None = None,
                num_workers: int = 0) -> list[Prediction]:
        """Predict ``Record``-like objects (``id``, ``text``, ``image`` path), in order.

        ``min_confidence``: label ``"uncertain"`` the slots whose top probability is below it.
        """
        return list(self.predict_iter(records, method, batch_size, progress, min_confidence,
                                      num_workers))

    def predict_iter(self, records: Iterable, method: str = "score", batch_size: int = 16,
                     progress: bool = True, min_confidence: float | None = None,
                     num_workers: int = 0) -> Iterator[Prediction]:
        """Yield the prediction of each ``Record``-like object as soon as it and every
        earlier one are done, in input order. ``records`` is read once, lazily (a generator
        over a corpus is fine); ``num_workers`` DataLoader workers open and preprocess the
        images (they need a list, or a generator that is safe to copy into each worker). An
        image that does not open raises ``UnreadableImage``; ``llavac.predict.corpus``
        skips and reports it instead."""
        check_abstention(method, min_confidence)
        stream = PairStream(lambda: records, self.processor, self.fmt, batch_size)
        total = len(records) if isinstance(records, Sized) else None
        with Progress(total, f"predicting ({method})", enabled=progress) as bar:
            for ready in self.predict_stream(stream, method, num_workers):
                for _, outcome in ready:
                    if not isinstance(outcome, Prediction):
                        raise UnreadableImage(outcome.detail)
                    yield outcome.abstain(min_confidence)
                bar.update(len(ready))

    def predict_stream(self, stream, method: str, num_workers: int = 0
                       ) -> Iterator[list[tuple[int, object]]]:
        """Run a ``loader.PairStream`` through the model: per model batch, the rows whose turn
        has come as ``(ordinal, Prediction | Problem | None)`` (None: done before a resume),
        in ordinal order. Pinned memory and asynchronous copies on CUDA."""
        self._check_method(method)
        pin = self.model.device.type == "cuda"
        loader = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin)
        return in_order(self.predict_items(loader, method, non_blocking=pin))

    def predict_items(self, items: Iterable, method: str, non_blocking: bool = False
                      ) -> Iterator[list[tuple[int, object]]]:
        """Per ``loader.Item``, its rows as ``(ordinal, Prediction | Problem | None)``, in the
        order the item holds them (skipped rows first)."""
        self._check_method(method)
        for item in items:
            if item.error is not None:
                raise ValueError(item.error)
            done = []
            if item.ids:
                batch = to_model(item.prompts, item.encoded, self.model, non_blocking)
                done = zip(item.ordinals, self._predict_batch(item.ids, batch, method),
                           strict=True)
            yield [*item.skipped, *done]

    def classify(self, items: Sequence[tuple], method: str = "score", batch_size: int = 16,
                 min_confidence: float | None = None) -> list[Prediction]:
        """Predict ``(PIL image, text)`` pairs (for serving); ids are the positions ``"0"``, ..."""
        self._check_method(method)
        check_abstention(method, min_confidence)
        predictions = []
        for start in range(0, len(items), batch_size):
            images, texts = zip(*items[start : start + batch_size], strict=True)
            batch = encode_prompts(self.processor, self.fmt, images, list(texts), self.model)
            ids = [str(i) for i in range(start, start + len(texts))]
            predictions += self._predict_batch(ids, batch, method)
        return [prediction.abstain(min_confidence) for prediction in predictions]

    def _check_method(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use {' or '.join(METHODS)}")
        check_generates(self.heads, method)

    def _predict_batch(self, ids: list[str], batch: PromptBatch, method: str) -> list[Prediction]:
        """The one place a prompt batch becomes ``Prediction``s: the answer's label scores
        or generated text, or a head run's classification heads."""
        if method == "score":
            scored = (head_probabilities(self.model, self.heads, batch) if self.heads
                      else self.scorer.score(batch))
            return [
                Prediction.from_labels(
                    id, {slot: max(p, key=p.get) for slot, p in probs.items()},
                    probabilities=self._calibrated(probs),
                )
                for id, probs in zip(ids, scored, strict=True)
            ]
        answers = generate_answers(self.model, self.processor.tokenizer, batch,
                                   self.max_new_tokens)
        return [Prediction.from_labels(id, self.fmt.parse(answer), answer=answer)
                for id, answer in zip(ids, answers, strict=True)]

    def _calibrated(self, probs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """One pair's ``{slot: {label: p}}`` with each slot's temperature applied, if any."""
        if not self.temperatures:
            return probs
        scaled = dict(probs)
        for slot, p in probs.items():
            if slot in self.temperatures:
                values = apply_temperature([list(p.values())], self.temperatures[slot])[0]
                scaled[slot] = dict(zip(p, map(float, values), strict=True))
        return scaled


def check_abstention(method: str, min_confidence: float | None) -> None:
    """Abstaining reads probabilities, which only ``score`` gives."""
    if min_confidence is not None and method != "score":
        raise ValueError("min_confidence needs probabilities: predict with method "
                         "'score' (generate gives none)")
