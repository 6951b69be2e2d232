"""``llavac export RUN --output DIR``: a training run as one folder anyone can load.

A run folder needs llavac to load (a LoRA adapter on a base model, possibly a tiny model
built in-process). The exported folder does not: the adapter is merged into the model, which
is saved with ``save_pretrained`` beside the processor, so ``AutoModelForImageTextToText`` /
``AutoProcessor.from_pretrained(DIR)`` load it with plain transformers. Next to it:

- ``llavac.json``: the prompt variant, its slots and labels, the question and answer format,
  the base model and the source run (``Classifier.from_pretrained(DIR)`` reads the prompt
  from it, so ``llavac serve --model DIR`` predicts exactly what the run folder did);
- ``heads.safetensors``: a head run's classification heads (``train.objective=head``);
- ``calibration.json``: copied from the run when it has one (per-slot temperatures);
- ``README.md``: a model card written through ``huggingface_hub.ModelCard``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llavac.durable import fsync_path, fsync_tree
from llavac.evaluation.metrics import HEADLINE
from llavac.labels import LABELS
from llavac.models.heads import save_heads
from llavac.predict import Classifier
from llavac.runs.folder import CONFIG_FILE, EXPORT_FILE, RunFolder

CITATION = """@article{chayintr2025llavac,
  title   = {LLaVAC: Fine-tuning LLaVA as a Multimodal Sentiment Classifier},
  author  = {Chay-intr, T. and Chen, Y. and Viriyayudhakorn, K. and Theeramunkong, T.},
  journal = {arXiv preprint arXiv:2502.02938},
  year    = {2025}
}"""


def export_run(run: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the merged model, processor, prompt format, calibration and card of ``run``.

    The export is written into a new folder beside ``output`` and swapped in only once it is
    whole and on disk, so an earlier export stays usable until then, and a crash leaves it
    or the new one (at worst both, under names starting with ``.<output>.``). ``overwrite``
    replaces an earlier export; a non-empty folder that is not one is never deleted.
    """
    run, output = Path(run), Path(output)
    if not RunFolder(run).has_config:
        raise FileNotFoundError(f"{run}: not a training run folder (no {CONFIG_FILE})")
    if output.resolve() == run.resolve() or output.resolve() in run.resolve().parents:
        raise ValueError(f"--output {output}: would replace the run folder {run} itself")
    _claim_output(output, overwrite)
    classifier = Classifier.from_pretrained(adapter=run, device="cpu")  # LoRA merged here
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".new", dir=output.parent))
    try:
        _write_export(classifier, run, staging)
        fsync_tree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, output)
    return output


def _claim_output(output: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``output`` unless ``overwrite`` and it holds an earlier export."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not overwrite:
        raise ValueError(f"--output {output}: exists and is not empty (--overwrite replaces "
                         "an earlier export)")
    if not RunFolder(output).is_export:
        raise ValueError(f"--output {output}: holds files but no {EXPORT_FILE}, so it is not an "
                         "export and --overwrite leaves it alone: choose another folder")


def _write_export(classifier, run: Path, folder: Path) -> None:
    classifier.model.save_pretrained(folder)
    if classifier.heads is not None:
        save_heads(classifier.heads, folder)
    classifier.processor.save_pretrained(folder)
    facts = export_facts(classifier, run)
    exported, trained = RunFolder(folder), RunFolder(run)
    exported.write_export_facts(facts)
    trained.copy_calibration(exported)
    model_card(facts, trained.manifest(), _run_metrics(run)).save(
        folder / "README.md")


def _swap_in(staging: Path, output: Path) -> None:
    """Put the finished ``staging`` folder at ``output``; the earlier one, if any, is moved
    aside first and deleted last."""
    old = None
    if output.exists():
        old = staging.with_name(staging.name.removesuffix(".new") + ".old")
        os.rename(output, old)
    os.rename(staging, output)
    fsync_path(output.parent)
    if old is not None:
        shutil.rmtree(old)


def export_facts(classifier, run: Path) -> dict:
    """What ``llavac.json`` holds: enough to ask the question and read the answer."""
    fmt = classifier.fmt
    question, after = fmt.question_parts("{text}")
    return {
        "format": 1,
        "prompt": fmt.name,
        "slots": list(fmt.slots),
        "labels": list(LABELS),
        "question": {"before_image": question, "after_image": after},
        "answer_example": fmt.answer({slot: LABELS[-1] for slot in fmt.slots}),
        # How the inputs were made in training: the saved processor already pads (or crops)
        # as the run did; the system choice decides the conversation around the question.
        "image_mode": classifier.source.get("image_mode"),
        "system": classifier.source.get("system"),
        "method": "score",  # score the label candidates: probabilities, never unparseable
        "base_model": classifier.source.get("model"),
        "seed": classifier.source.get("seed"),
        "source_run": str(run.resolve()),
        "dtype": classifier.source.get("dtype"),
        "calibrated": RunFolder(run).temperatures() is not None,
        "training": _training(run),
    }


def _training(run: Path) -> dict:
    """How the run was trained (method, objective, LoRA variant), for the card."""
    config = RunFolder(run).config()
    train, lora = config.get("train") or {}, config.get("lora") or {}
    tuning = train.get("tuning", "lora")
    return {"tuning": tuning, "objective": train.get("objective", "answer"),
            "lora_variant": lora.get("variant", "lora") if tuning != "full" else None,
            "slots": train.get("slots")}


def _run_metrics(run: Path) -> dict:
    """The run's evaluation, when one was written into it (``metrics.json`` or ``*/``)."""
    for path in [run / "metrics.json", *sorted(run.glob("*/metrics.json"))]:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


def _metric_rows(metrics: dict) -> list[str]:
    """Markdown rows ``slot | metric | value [CI]``; a CI is shown when the file has one."""
    rows = []
    for slot, values in (metrics.get("slots") or {}).items():
        for name in (metric.name for metric in HEADLINE):
            if name not in values:
                continue
            ci = values.get(f"{name}_ci") or (values.get("ci") or {}).get(name)
            shown = f"{values[name]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            rows.append(f"| {slot} | {name} | {shown} |")
    return rows


def model_card(facts: dict, manifest: dict, metrics: dict):
    """The exported folder's ``README.md`` as a :class:`huggingface_hub.ModelCard`."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(base_model=facts["base_model"], license="apache-2.0",
                         library_name="transformers", pipeline_tag="image-text-to-text",
                         tags=["llavac", "multimodal-sentiment", "sentiment-analysis"])
    sections = [f"# LLaVAC sentiment classifier ({facts['base_model']})",
                *_card_tiny(facts["base_model"]),
                _card_use(facts), _card_data(manifest) + _card_training(facts["training"]),
                _card_metrics(metrics),
                _CARD_LIMITS, f"## Citation\n\n```bibtex\n{CITATION}\n```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _card_use(facts: dict) -> str:
    slots = ", ".join(facts["slots"])
    return (
        "A vision-language model fine-tuned as a multimodal sentiment classifier, following "
        "LLaVAC (Chay-intr et al., arXiv 2502.02938). Given an image and a short text, it "
        f"answers one label ({', '.join(facts['labels'])}) for each of: {slots}, in that "
        f"order, e.g. `{facts['answer_example']}`.\n\n## Intended use\n\nSentiment of social "
        "media posts that pair an image with a short text, in research and in moderated "
        "analytics. The LoRA adapter is merged: load it with `AutoModelForImageTextToText` "
        "and `AutoProcessor` from this folder. The question is in `llavac.json` (prompt "
        f"`{facts['prompt']}`); `llavac serve --model <this folder>` serves it over HTTP.")


def _card_tiny(base_model: str) -> list[str]:
    """A warning above everything else when the base model is a built-in tiny one."""
    from llavac.models import is_tiny_name

    if not is_tiny_name(base_model):
        return []
    return [f"**Not a real model.** The base model `{base_model}` is one of llavac's tiny, "
            "randomly initialised models, built for tests and demos: its labels and metrics "
            "say nothing about LLaVAC or about sentiment."]


def _card_data(manifest: dict) -> str:
    data = manifest.get("data") or {}
    # Folders by name only: the machine's own paths are not the model's business.
    lines = [f"- {key}: {Path(value).name if key in ('source', 'split_files') else value}"
             for key, value in data.items()
             if value is not None and not isinstance(value, (dict, list))]
    return "## Training data and procedure\n\n" + ("\n".join(lines) or
                                                    "- not recorded in the run") + (
        "\n\nFine-tuned with the LLaVA task-LoRA recipe (transformers Trainer + peft), "
        f"answer-only loss; the run's `{CONFIG_FILE}` has every setting.")


def _card_training(training: dict) -> str:
    """How the card's model was trained: the objective and the adapter variant."""
    if training["objective"] == "head":
        how = ("the head objective: one linear layer per slot on the final hidden state of "
               "the last prompt token, cross-entropy on the three labels (`heads.safetensors`; "
               "its answer is read from the heads, never generated)")
    else:
        how = "the structured-answer objective of the paper (answer-only loss)"
    adapter = (f"LoRA variant `{training['lora_variant']}`" if training["lora_variant"]
               else "full fine-tuning")
    return f"\n\nTrained with {how}; {adapter} (`train.tuning={training['tuning']}`)."


def _card_metrics(metrics: dict) -> str:
    rows = _metric_rows(metrics)
    if not rows:
        return "## Metrics\n\nNo evaluation was stored with the run."
    where = f"{metrics.get('part', '?')} part, method {metrics.get('method', '?')}"
    return ("## Metrics\n\n" + f"On the {where} (95 % bootstrap CI in brackets where "
            "computed).\n\n| slot | metric | value |\n|---|---|---|\n" + "\n".join(rows))


_CARD_LIMITS = (
    "## Limitations\n\nTrained on Twitter posts (MVSA), in English: other languages, domains "
    "and image styles shift its accuracy. Sarcasm and posts whose image and text disagree are "
    "the hardest cases. Labels are three coarse classes, not a measure of intensity; do not "
    "use it to make decisions about individual people.")
