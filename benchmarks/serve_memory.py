"""The server's memory under decompression bombs: one batch request of 32 PNGs of 6300 x 6300.

Each PNG is about 130 kB on the wire and 40 megapixels decoded (159 MB at Pillow's 4 bytes a
pixel): 0.2 decoded such a batch whole before it queued, about 15 GB. Starts
``python -m llavac.cli serve`` (tiny-llava) with an API key, twice:

1. the default pixel limit (in ``--smoke``, one just below the image's): the images are
   refused from their headers (413, ``serve.max_image_pixels``) and nothing is decoded;
2. the limits of 0.2 (``--max-image-pixels 40000000`` and a request budget that lets the
   whole batch in): every image is decoded, one at a time, shrunk while decoded, queued and
   classified.

For each it measures the server's resident memory before the request, its peak during the
request (the kernel's high-water mark, reset through ``/proc/PID/clear_refs`` just before)
and after it (polled until it settles). Targets: the peak at most 300 MB over before, and
afterwards within 50 MB of before.

    python benchmarks/serve_memory.py [--items 32] [--side 6300] [--smoke]

``--smoke``: 4 items of 2000 x 2000, a run of seconds. Last line: ``RESULT
default_status=... default_peak_rise_mb=... default_after_mb=... decoded_status=...
decoded_peak_rise_mb=... decoded_after_mb=...``; the exit code is non-zero if a target is
missed.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tests' server helper: the benchmark starts the server exactly as they do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import add_smoke_flag, banner, result_line, target  # noqa: E402
from serve_process import running_server  # noqa: E402

API_KEY = "memory-test-key"
PEAK_RISE_MB, SETTLED_MB = 300, 50
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server inherits it: one torch thread


def status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def bomb_batch(items: int, side: int) -> list[dict]:
    """``items`` copies of one small PNG of ``side`` x ``side`` pixels, as a batch body."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (40, 120, 200)).save(buffer, "PNG")
    print(f"one PNG: {side}x{side} = {side * side / 1e6:.1f} M pixels, "
          f"{len(buffer.getvalue()) / 1e3:.0f} kB")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return [{"image_base64": encoded, "text": f"item {i}"} for i in range(items)]


def settled_rss_mb(pid: int, before: float, timeout: float = 30.0) -> float:
    """The RSS once it is back within ``SETTLED_MB`` of ``before``, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        rss = status_kb(pid, "VmRSS") / 1024
        if rss - before <= SETTLED_MB or time.monotonic() > deadline:
            return rss
        time.sleep(0.2)


def measure(key: str, name: str, batch: list[dict], server_args: list[str]) -> dict:
    with running_server("tiny-llava", server_args, api_key=API_KEY) as server:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        small = [{**batch[0], "image_base64": _tiny_png()}]
        httpx.post(server.url + "/v1/classify/batch", json=small, headers=headers, timeout=120)
        time.sleep(1.0)  # the warm-up's memory settles
        before = status_kb(server.pid, "VmRSS") / 1024
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the high-water mark
        started = time.perf_counter()
        response = httpx.post(server.url + "/v1/classify/batch", json=batch, headers=headers,
                              timeout=1800)
        seconds = time.perf_counter() - started
        peak = status_kb(server.pid, "VmHWM") / 1024
        after = settled_rss_mb(server.pid, before)
    detail = response.json().get("error", "") if response.status_code != 200 else \
        f"{len(response.json()['predictions'])} predictions"
    print(f"-- {name}: {response.status_code} in {seconds:.1f} s ({detail[:110]})")
    print(f"   RSS before {before:.0f} MB, peak {peak:.0f} MB (+{peak - before:.0f}), "
          f"after {after:.0f} MB ({after - before:+.0f})")
    target(f"{key}_peak_rise_mb", peak - before, "<=", PEAK_RISE_MB)
    target(f"{key}_after_mb", after - before, "<=", SETTLED_MB)
    return {"status": response.status_code, "peak_rise_mb": peak - before,
            "after_mb": after - before, "seconds": seconds}


def _tiny_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "grey").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--side", type=int, default=6300)
    add_smoke_flag(parser)  # 4 items of 2000 x 2000
    args = parser.parse_args(argv)
    items, side = (4, 2000) if args.smoke else (args.items, args.side)
    banner(f"serve memory: one batch of {items} PNGs of {side}x{side}")
    batch = bomb_batch(items, side)
    pixels = side * side
    default = measure("default", "defaults", batch,
                      ["--max-image-pixels", str(min(pixels - 1, 2**24))])
    decoded = measure("decoded", "0.2's limits: every image decoded", batch, [
        "--max-image-pixels", str(max(pixels, 40_000_000)),
        f"serve.max_request_pixels={items * max(pixels, 40_000_000)}"])
    figures = {f"{name}_{key}": value for name, run in (("default", default),
                                                        ("decoded", decoded))
               for key, value in run.items()}
    print(result_line(items=items, side=side, **figures))
    missed = [run for run in (default, decoded) if run["peak_rise_mb"] > PEAK_RISE_MB
              or run["after_mb"] > SETTLED_MB]
    return 1 if missed or default["status"] != 413 or decoded["status"] != 200 else 0


if __name__ == "__main__":
    sys.exit(main())
