"""Bounded load test of the HTTP server: correctness under concurrency, then speed and memory.

Starts ``python -m llavac.serve`` on 127.0.0.1 itself (tiny-llava by default), sends
``--requests`` requests ``--concurrency`` at a time, a third of them malformed in assorted
ways, and checks that every valid request got 200 with valid labels, every malformed one a
4xx with a JSON error, and that the server is still healthy afterwards. Memory growth is the
server's RSS after the run minus after a warm-up burst (up to 100 valid requests at full
concurrency), so model loading and the allocator's first growth are not counted.
The run is bounded in count and in time (``--deadline-s``) and stops the server by itself.

    python benchmarks/load_serve.py [--requests 500] [--concurrency 50]

Last line: ``RESULT requests=... ok=... client_errors=... server_errors=... rss_growth_mb=...
rps=...``; the exit code is non-zero if any answer was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from llavac.labels import LABELS
from llavac.serve.process import running_server

SLOTS = ("text", "image", "multimodal")
MAX_BODY_MB = 1.0  # the server under test gets a small body limit so oversize cases are cheap


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_images(rng: random.Random, count: int = 8) -> list[bytes]:
    images = []
    for index in range(count):
        size = (rng.randint(24, 200), rng.randint(24, 200))
        noise = Image.effect_noise(size, rng.uniform(10, 80)).convert("RGB")
        tint = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        Image.blend(noise, tint, 0.5).save(buffer, "PNG" if index % 2 else "JPEG")
        images.append(buffer.getvalue())
    return images


def build_requests(n: int, malformed_share: float, rng: random.Random) -> list[tuple]:
    """``(kind, expect_ok, httpx request kwargs)`` for each request, shuffled."""
    images = make_images(rng)
    b64 = [base64.b64encode(image).decode() for image in images]
    truncated = images[1][: len(images[1]) // 2]
    words = "love hate fine great awful sunny rainy happy sad ok meh wow".split()

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))

    def valid() -> tuple:
        i = rng.randrange(len(images))
        if rng.random() < 0.5:
            return "valid-multipart", True, {
                "files": {"image": ("x.img", images[i], "application/octet-stream")},
                "data": {"text": text()}}
        return "valid-json", True, {"json": {"image_base64": b64[i], "text": text()}}

    over_limit = b"A" * int(MAX_BODY_MB * 2**20 + 1000)
    malformed = [
        ("not-image", {"files": {"image": ("a.png", b"GIF89 nope" * 20, "image/png")},
                       "data": {"text": "x"}}),
        ("truncated", {"files": {"image": ("a.png", truncated, "image/png")},
                       "data": {"text": "x"}}),
        ("bad-base64", {"json": {"image_base64": "%%%===", "text": "x"}}),
        ("no-text", {"json": {"image_base64": b64[0]}}),
        ("no-image", {"files": {"text": (None, "only text")}}),
        ("text-too-long", {"json": {"image_base64": b64[0], "text": "z" * 2001}}),
        ("invalid-json", {"content": b'{"image_base64": ', "headers":
                          {"content-type": "application/json"}}),
        ("wrong-type", {"content": b"hello", "headers": {"content-type": "text/plain"}}),
        ("body-too-large", {"content": over_limit, "headers":
                            {"content-type": "application/json"}}),
        ("batch-too-long", {"json": [{"image_base64": b64[0], "text": "x"}] * 33,
                            "url": "/v1/classify/batch"}),
    ]
    n_bad = round(n * malformed_share)
    plan = [valid() for _ in range(n - n_bad)]
    plan += [(kind, False, kwargs) for kind, kwargs in
             (malformed[i % len(malformed)] for i in range(n_bad))]
    rng.shuffle(plan)
    return plan


def check_answer(response: httpx.Response, expect_ok: bool) -> str | None:
    """``None`` when the answer is what the request deserved, else what was wrong."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} with a non-JSON body"
    if expect_ok:
        if response.status_code != 200:
            return f"valid request got {response.status_code}: {body}"
        for slot in SLOTS:
            if body.get(f"{slot}_label") not in LABELS:
                return f"bad {slot} label {body.get(f'{slot}_label')!r}"
            if abs(sum(body["probabilities"][slot].values()) - 1) > 1e-3:
                return f"{slot} probabilities do not sum to 1"
        return None
    if not 400 <= response.status_code < 500:
        return f"malformed request got {response.status_code}"
    if set(body) != {"error", "field"}:
        return f"error body has keys {sorted(body)}"
    return None


async def run_load(url: str, plan: list[tuple], concurrency: int, deadline_s: float) -> dict:
    semaphore = asyncio.Semaphore(concurrency)
    results: list[tuple[str, int, float, str | None]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(kind: str, expect_ok: bool, kwargs: dict) -> None:
            kwargs = dict(kwargs)
            path = kwargs.pop("url", "/v1/classify")
            async with semaphore:
                started = time.perf_counter()
                try:
                    response = await client.post(path, **kwargs)
                    status, problem = response.status_code, check_answer(response, expect_ok)
                except httpx.HTTPError as error:
                    status, problem = 0, f"transport error: {error!r}"
                results.append((kind, status, time.perf_counter() - started, problem))

        started = time.perf_counter()
        tasks = [asyncio.create_task(one(*request)) for request in plan]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        elapsed = time.perf_counter() - started
    return {"results": results, "elapsed": elapsed, "unfinished": len(pending)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--malformed-share", type=float, default=1 / 3)
    parser.add_argument("--deadline-s", type=float, default=300.0,
                        help="stop waiting for answers after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    plan = build_requests(args.requests, args.malformed_share, random.Random(args.seed))
    server_args = ["--max-body-mb", str(MAX_BODY_MB)]
    with running_server(args.model, server_args) as server:
        # warm up at full concurrency so allocator pools and batch shapes settle first
        warmup = [request for request in plan if request[1]][: min(100, args.requests)]
        if warmup:
            asyncio.run(run_load(server.url, warmup, args.concurrency, 120))
        rss_before = rss_mb(server.pid)
        run = asyncio.run(run_load(server.url, plan, args.concurrency, args.deadline_s))
        rss_after = rss_mb(server.pid)
        try:
            alive = server.get_json("/health")["status"] == "ok"
        except OSError:
            alive = False
        server_log = server.log()

    results = run["results"]
    ok = sum(1 for _, status, _, problem in results if status == 200 and problem is None)
    client_errors = sum(1 for _, status, _, _ in results if 400 <= status < 500)
    server_errors = sum(1 for _, status, _, _ in results if status >= 500 or status == 0)
    problems = [(kind, problem) for kind, _, _, problem in results if problem]
    latencies = sorted(latency * 1000 for _, _, latency, _ in results)
    valid_lat = sorted(lat * 1000 for kind, _, lat, _ in results if kind.startswith("valid"))
    rps = len(results) / run["elapsed"] if run["elapsed"] else float("nan")

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    by_kind: dict[str, list[int]] = {}
    for kind, status, _, _ in results:
        by_kind.setdefault(kind, []).append(status)
    for kind, statuses in sorted(by_kind.items()):
        print(f"{kind:16s} n={len(statuses):4d} statuses={sorted(set(statuses))}")
    for kind, problem in problems[:10]:
        print(f"PROBLEM {kind}: {problem}")
    if problems and server_log.strip():
        print("server log (tail):\n" + server_log[-3000:])
    print(f"server alive after the run: {alive}; unfinished at the deadline: {run['unfinished']}")
    print(f"latency ms: all p50={pct(latencies, .5):.1f} p95={pct(latencies, .95):.1f}; "
          f"valid p50={pct(valid_lat, .5):.1f} p95={pct(valid_lat, .95):.1f} "
          f"(mean {statistics.fmean(valid_lat) if valid_lat else float('nan'):.1f})")
    print(f"server RSS: {rss_before:.1f} MiB after warm-up -> {rss_after:.1f} MiB after the run")
    print(f"RESULT requests={len(results)} ok={ok} client_errors={client_errors} "
          f"server_errors={server_errors} rss_growth_mb={rss_after - rss_before:.1f} "
          f"rps={rps:.1f}")
    failed = problems or not alive or run["unfinished"] or len(results) != len(plan)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
