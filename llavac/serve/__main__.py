"""``python -m llavac.serve --model NAME [--adapter DIR] [--port N]``: the server from a shell.

Kept separate from the ``llavac`` CLI so the server can be started (by tests, by the load
benchmark) without depending on how the CLI is wired.
"""

from __future__ import annotations

import argparse
import logging

from llavac.serve.inputs import ServeLimits
from llavac.serve.server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llavac.serve", description=__doc__)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options on ``parser`` (also used for the ``llavac serve`` subcommand)."""
    defaults = ServeLimits()
    parser.add_argument("--model", help="hub id, local folder or tiny-llava (may be left out "
                        "when --adapter is a training run folder)")
    parser.add_argument("--adapter", help="peft adapter or training-run folder")
    parser.add_argument("--prompt", help="prompt variant: full | multimodal-only | slot order")
    parser.add_argument("--dtype", help="float32 | bf16 | fp16 | auto")
    parser.add_argument("--device", help="cpu | cuda | cuda:0 ...")
    parser.add_argument("--method", default="score", choices=["score", "generate"])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-body-mb", type=float, default=defaults.max_body_bytes / 2**20)
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars)
    parser.add_argument("--max-batch-items", type=int, default=defaults.max_batch_items,
                        help="longest list /v1/classify/batch accepts")
    parser.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    parser.add_argument("--max-batch-size", type=int, default=8,
                        help="most examples the queue groups into one model call")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="how long the queue waits to fill a batch")
    parser.add_argument("--log-level", default="info")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve with parsed ``args`` (from :func:`add_arguments`); blocks until stopped."""
    if not args.model and not args.adapter:
        raise SystemExit("give --model, or --adapter with a training run folder")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    limits = ServeLimits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_text_chars=args.max_text_chars,
        max_batch_items=args.max_batch_items,
        max_image_pixels=args.max_image_pixels,
    )
    serve(
        args.model, args.adapter, args.host, args.port, prompt=args.prompt, dtype=args.dtype,
        device=args.device, method=args.method, limits=limits,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        log_level=args.log_level.lower(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
