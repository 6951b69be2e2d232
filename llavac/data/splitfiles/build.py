"""Derive the shipped split lists from the original published split files.

    python -m llavac.data.splitfiles.build SPLITS_DIR [--out DIR]

SPLITS_DIR has the published layout ``<cheema2021|clmlf|qmf>/<mvsa_single|mvsa_multiple>/``
(each registered procedure with original files names its folder); every split found there is
written as ``<procedure>/<corpus>.tsv`` under DIR (default: this package folder, so running it
refreshes what llavac ships).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llavac.data.procedures import PROCEDURES
from llavac.data.published import SHIPPED, write_shipped


def build(splits_dir: Path, out: Path = SHIPPED) -> list[Path]:
    """Write one list per published (procedure, corpus) under ``splits_dir``; return the paths."""
    written = []
    for procedure in PROCEDURES.values():
        if procedure.original is None:
            continue
        folder = Path(splits_dir) / procedure.original[0]
        for corpus in sorted(p.name for p in folder.glob("mvsa_*")):
            path = Path(out) / procedure.name / f"{corpus}.tsv"
            write_shipped(procedure.read_original(splits_dir, corpus), path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args(argv)
    for path in build(args.splits_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
