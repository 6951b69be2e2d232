"""``python -m llavac.serve [--config YAML] [flags] [key=value ...]``: ``llavac serve``.

The same parser and flag table as the ``llavac serve`` command; kept as a module entry point
so tests and ``benchmarks/load_serve.py`` can start a server with the interpreter they run
under, whatever is installed on the PATH.
"""

from __future__ import annotations

import sys

from llavac.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
