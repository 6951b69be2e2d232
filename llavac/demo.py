"""``llavac demo``: the whole pipeline on a fresh machine, in a few minutes on a CPU.

release -> ``data export`` -> ``train`` -> ``evaluate`` -> a metrics table and the artifacts.
Without ``--data`` it writes a small synthetic release in the MVSA-Single layout whose
multimodal label needs both the image and the text (see :mod:`llavac.synthetic`) and trains
the tiny LLaVA with the ``tiny_synthetic`` preset. With ``--data PATH --model M`` the same
flow runs on a real release with a real model and the paper's recipe.
"""

from __future__ import annotations

import time
from pathlib import Path

from llavac.args import ClassifierArgs, DataArgs, EvalArgs, EvalConfig, TrainConfig
from llavac.config import load_config
from llavac.console import log
from llavac.data.export import export_split
from llavac.evaluation import evaluate
from llavac.models import is_tiny_name
from llavac.synthetic import write_synthetic_release
from llavac.train import train

SYNTHETIC = ("Note: the demo's data is synthetic, built so that the multimodal label needs both "
             "the image (its colour) and the text (a keyword); a tiny model learns it in a "
             "minute. Accuracy on real tweets needs a real model (LLaVA-1.5-7B on a GPU).")


def run_demo(output: str | Path = "runs/demo", data: str | Path | None = None,
             model: str = "tiny-llava", procedure: str = "random811",
             overrides: list[str] = ()) -> dict:
    """Run the demo into ``output``; return the evaluation metrics."""
    output = Path(output)
    start = time.perf_counter()
    if not data:
        log.info(SYNTHETIC)

    # 1,000 pairs: ~780 kept by the rule, ~78 held out for the test split.
    release = Path(data) if data else write_synthetic_release(output / "release", n=1000)
    log.info(f"\n== data: {release} -> {procedure} split")
    export_split(release, procedure=procedure, out=output / "split")

    # A tiny random-init model learns with the tiny preset; a real one with the paper's.
    preset = "tiny_synthetic" if is_tiny_name(model) else None
    config = load_config(TrainConfig, preset, [
        f"model.name={model}", f"data.path={output / 'split'}", "data.procedure=null",
        f"train.output={output / 'train'}", *overrides,
    ])
    log.info(f"\n== train: {model} ({config.train.method}) -> {config.train.output}")
    train(config, overwrite=True)  # the demo's own folder: an interrupted demo starts over

    log.info("\n== evaluate: test split")
    metrics = evaluate(EvalConfig(
        model=ClassifierArgs(adapter=str(output / "train")),
        data=DataArgs(path=str(output / "split")),
        eval=EvalArgs(output=str(output / "eval"), progress=config.train.progress),
    ))
    minutes = (time.perf_counter() - start) / 60
    print("\n" + (output / "eval" / "summary.md").read_text(encoding="utf-8"))
    log.info(f"Done in {minutes:.1f} min. Artifacts:")
    for path, what in [
        (release, "the release (labelResultAll.txt + data/)"),
        (output / "split", "train / validation / test JSONL + manifest.json"),
        (output / "train", "adapter or model, processor, config.yaml, log.jsonl, loss.png"),
        (output / "eval", "metrics.json, predictions.jsonl, confusion_*.png, summary.md"),
    ]:
        log.info(f"  {path}  {what}")
    if not data:
        log.info(SYNTHETIC)
    return metrics
