"""Does training with prompt variants (train.prompt_variants) narrow the spread between
variants? The tiny LLaVA on the synthetic task, trained twice from the same seed (fixed
prompt, then variants drawn per example), each evaluated by ``llavac robustness`` on the
held-out test part.

    python benchmarks/robustness_training.py [--output runs/robustness_training] [--seeds 0]
                                             [--smoke]

Prints one ``RESULT`` line per training seed: the multimodal accuracy of the original
prompt and the spread (best minus worst variant) of multimodal accuracy for both runs.
``--smoke``: 60 pairs, 2 training steps per run, in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from llavac.args import ClassifierArgs, DataArgs, RobustnessArgs, RobustnessConfig, TrainConfig
from llavac.config import load_config
from llavac.prompt.variants import VARIANTS_FILE
from llavac.studies.robustness import robustness
from llavac.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_flag, banner, synthetic_release  # noqa: E402


def measure(data: Path, output: Path, seed: int, variants: bool, smoke: bool) -> dict:
    run = output / f"{'variants' if variants else 'fixed'}-seed{seed}"
    overrides = [f"data.path={data}", f"train.output={run}", f"train.seed={seed}",
                 "train.progress=false", *(["train.max_steps=2"] if smoke else [])]
    if variants:
        overrides.append(f"train.prompt_variants={VARIANTS_FILE}")
    train(load_config(TrainConfig, "tiny_synthetic", overrides))
    return robustness(RobustnessConfig(
        model=ClassifierArgs(adapter=str(run)), data=DataArgs(str(data), "random811"),
        robustness=RobustnessArgs(output=str(run / "robustness"), progress=False),
    ))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/robustness_training"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    banner("robustness_training")
    if args.smoke:
        args.output = Path(tempfile.mkdtemp(prefix="robustness_training_"))
    data = synthetic_release(args.output, args.smoke)
    for seed in args.seeds:
        line = [f"seed={seed}"]
        for variants in (False, True):
            result = measure(data, args.output, seed, variants, args.smoke)
            name = "variants" if variants else "fixed"
            rows = {row["name"]: row["slots"]["multimodal"] for row in result["variants"]}
            line += [f"{name}_original_acc={rows['original']['accuracy']:.4f}",
                     f"{name}_spread_acc={result['spread']['multimodal']['accuracy']:.4f}",
                     f"{name}_worst_acc={min(r['accuracy'] for r in rows.values()):.4f}"]
            print(Path(result["model"]["adapter"]) / "robustness" / "robustness.md")
            print((Path(result["model"]["adapter"]) / "robustness" / "robustness.md").read_text())
        print("RESULT " + " ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
