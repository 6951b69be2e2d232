"""``llavac demo``: the whole pipeline on a fresh machine, in a few minutes on a CPU.

release -> ``data export`` -> ``train`` -> ``evaluate`` -> a metrics table and the artifacts.
Without ``--data`` it writes a small synthetic release in the MVSA-Single layout whose
multimodal label needs both the image and the text (see :mod:`llavac.data.synthetic`) and trains
the tiny LLaVA with the ``tiny_synthetic`` preset. With ``--data PATH --model M`` the same
flow runs on a real release with a real model and the paper's recipe. The published id lists
(``qmf``, ``cheema10``, ``clmlf``) name MVSA's pairs, so the synthetic release is split by
``random811`` (or ``none``) only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from llavac.args import ClassifierArgs, DataArgs, DemoConfig, EvalArgs, EvalConfig, TrainConfig
from llavac.config import ConfigKeyError
from llavac.console import log
from llavac.data.export import export_split, format_summary
from llavac.data.procedures import get_procedure
from llavac.data.synthetic import write_synthetic_release
from llavac.evaluation import evaluate
from llavac.train import train

SYNTHETIC = ("Note: the demo's data is synthetic, built so that the multimodal label needs both "
             "the image (its colour) and the text (a keyword); a tiny model learns it in a "
             "minute. Accuracy on real tweets needs a real model (LLaVA-1.5-7B on a GPU).")


def check_procedure(config: DemoConfig) -> None:
    """A registered procedure, and on the synthetic release one that is not a published id
    list: those name MVSA's pairs, and would pick an arbitrary subset of synthetic ones."""
    demo = config.demo
    procedure = get_procedure(demo.procedure, "demo.procedure")
    if demo.data is None and procedure.split == "published":
        raise ConfigKeyError("demo.procedure", f"demo.procedure: {demo.procedure} is a published "
                             "id list of MVSA's pairs: use random811 or none on the synthetic "
                             "release, or name an MVSA release with --data")


def run_demo(config: DemoConfig) -> str:
    """Run the demo into ``demo.output``; return the evaluation's summary table.

    ``config``'s training sections train the model (the command line puts the
    ``tiny_synthetic`` preset beneath them for a tiny model); ``demo.model`` names it.
    """
    check_procedure(config)
    demo = config.demo
    output = Path(demo.output)
    start = time.perf_counter()
    if not demo.data:
        log.info(SYNTHETIC)

    # 1,000 pairs: ~780 kept by the rule, ~78 held out for the test split.
    release = Path(demo.data) if demo.data else write_synthetic_release(output / "release",
                                                                         n=1000)
    log.info(f"\n== data: {release} -> {demo.procedure} split")
    split = export_split(release, procedure=demo.procedure, out=output / "split")
    log.info(format_summary(split.manifest, output / "split"))

    train_config = TrainConfig(
        model=dataclasses.replace(config.model, name=demo.model),
        data=DataArgs(path=str(output / "split"), strict=config.data.strict),
        lora=config.lora, train=dataclasses.replace(config.train, output=str(output / "train")))
    log.info(f"\n== train: {demo.model} ({train_config.train.tuning}) -> {output / 'train'}")
    train(train_config, overwrite=True)  # the demo's own folder: an interrupted demo restarts

    log.info("\n== evaluate: test split")
    evaluate(EvalConfig(
        model=ClassifierArgs(adapter=str(output / "train")),
        data=DataArgs(path=str(output / "split")),
        eval=EvalArgs(output=str(output / "eval"), progress=config.train.progress),
    ))
    minutes = (time.perf_counter() - start) / 60
    log.info(f"Done in {minutes:.1f} min. Artifacts:")
    for path, what in [
        (release, "the release (labelResultAll.txt + data/)"),
        (output / "split", "train / validation / test JSONL + manifest.json"),
        (output / "train", "adapter or model, processor, config.yaml, log.jsonl, loss.png"),
        (output / "eval", "metrics.json, predictions.jsonl, confusion_*.png, summary.md"),
    ]:
        log.info(f"  {path}  {what}")
    if not demo.data:
        log.info(SYNTHETIC)
    return (output / "eval" / "summary.md").read_text(encoding="utf-8")
