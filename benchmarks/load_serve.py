"""Load test of the HTTP server: a steady soak with malformed requests, then a 10x burst.

Starts ``python -m llavac.cli serve`` on 127.0.0.1 itself (tiny-llava by default) with an API key,
a bounded queue and a per-key rate limit, warms it up, then sends open-loop traffic (each
request leaves at its scheduled time, whether or not earlier ones were answered, as real
clients do):

1. soak: ``--rate`` requests per second for ``--soak-s`` seconds, ``--malformed-share`` of
   them malformed in assorted ways. Every valid request must get 200 with valid labels, every
   malformed one a 4xx JSON error; the server's RSS growth over the soak is reported.
2. burst: ``--burst-factor`` times the rate for ``--burst-s`` seconds. The excess must be shed
   fast with 429 (rate limit) or 503 (queue full) + ``Retry-After``, never a 500 or a hang;
   afterwards ``/health`` answers and a new request succeeds.

    python benchmarks/load_serve.py [--rate 10] [--soak-s 60] [--burst-s 10] [--smoke]

``--smoke`` sends a few requests of every kind (2 s of soak, 1 s of burst against a rate limit
of twice the soak's rate, so some are shed); its exit code still fails on a wrong answer,
but not on the RSS growth.

Last line: ``RESULT soak_p50_ms=... soak_p95_ms=... soak_p99_ms=... burst_p50_ms=...
burst_p95_ms=... burst_p99_ms=... shed_429=... shed_503=... server_errors_non503=...
rss_growth_mb=... ...``; the exit code is non-zero if any answer was wrong (targets:
server_errors_non503=0, rss_growth_mb <= 20).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from llavac.labels import LABELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tests' server helper: the benchmark starts the server exactly as they do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import add_smoke_flag, banner, target  # noqa: E402
from serve_process import running_server  # noqa: E402

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


# One torch thread in the server (inherited): on a small shared machine two OpenMP threads
# spin against the other processes and made every model call ~50x slower here.
os.environ.setdefault("OMP_NUM_THREADS", "1")
API_KEY = "load-test-key"
SHED = (429, 503)


async def run_phase(url: str, plan: list[tuple], rate: float, deadline_s: float) -> dict:
    """Send ``plan`` open-loop at ``rate`` per second; ``(kind, status, seconds, problem)``."""
    results: list[tuple[str, int, float, str | None]] = []
    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout,
    # so a request is never sent on a connection the server is closing at that moment.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200,
                          keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers=headers) as client:

        async def one(delay: float, kind: str, expect_ok: bool, request) -> None:
            await asyncio.sleep(delay)  # the request's scheduled departure
            started = time.perf_counter()
            try:
                response = await client.send(request)
                status, problem = response.status_code, check_answer(response, expect_ok)
            except httpx.HTTPError as error:
                status, problem = 0, f"transport error: {error!r}"
            results.append((kind, status, time.perf_counter() - started, problem))

        # Bodies are encoded before the clock starts: the client shares the machine's cores
        # with the server, and encoding 10 MB of multipart on the fly starved both.
        built = [(kind, ok, client.build_request("POST", kwargs.pop("url", "/v1/classify"),
                                                 **kwargs))
                 for kind, ok, kwargs in ((k, ok, dict(kw)) for k, ok, kw in plan)]
        started = time.perf_counter()
        tasks = [asyncio.create_task(one(i / rate, *request)) for i, request in enumerate(built)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        elapsed = time.perf_counter() - started
    return {"results": results, "elapsed": elapsed, "unfinished": len(pending)}


def check_answer(response: httpx.Response, expect_ok: bool) -> str | None:
    """``None`` when the answer is one the request may get, else what was wrong. Shedding
    (429 / 503 with ``Retry-After``) is allowed for any request; the soak checks it apart."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} with a non-JSON body"
    if response.status_code in SHED:
        ok = set(body) == {"error", "field"} and "retry-after" in response.headers
        return None if ok else f"{response.status_code} without Retry-After or JSON error"
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


def percentiles(run: dict) -> tuple[float, float, float]:
    """p50 / p95 / p99 in ms of the valid requests that were answered 200."""
    values = sorted(seconds * 1000 for kind, status, seconds, _ in run["results"]
                    if kind.startswith("valid") and status == 200)
    if not values:
        return (float("nan"),) * 3
    return tuple(values[min(len(values) - 1, int(q * len(values)))] for q in (.5, .95, .99))


def summarise(name: str, run: dict) -> dict:
    """Per-phase counts, printed; returns the figures RESULT takes."""
    results = run["results"]
    by_kind: dict[str, list[int]] = {}
    for kind, status, _, _ in results:
        by_kind.setdefault(kind, []).append(status)
    print(f"-- {name}: {len(results)} answered in {run['elapsed']:.1f} s, "
          f"{run['unfinished']} unfinished")
    for kind, statuses in sorted(by_kind.items()):
        print(f"{kind:16s} n={len(statuses):4d} statuses={sorted(set(statuses))}")
    for kind, _, _, problem in [r for r in results if r[3]][:10]:
        print(f"PROBLEM {name} {kind}: {problem}")
    p50, p95, p99 = percentiles(run)
    print(f"valid 200 latency ms: p50={p50:.1f} p95={p95:.1f} p99={p99:.1f}")
    statuses = [status for _, status, _, _ in results]
    print(f"mean time inside the server per classify request: {run['server_mean_ms']:.1f} ms")
    return {"p50": p50, "p95": p95, "p99": p99, "server_mean": run["server_mean_ms"],
            **{f"shed_{code}": statuses.count(code) for code in SHED},
            "errors": sum(1 for s in statuses if (s >= 500 and s != 503) or s == 0),
            "problems": sum(1 for r in results if r[3]), "unfinished": run["unfinished"]}


def server_seconds(server) -> tuple[float, float]:
    """(sum, count) of the server's own ``llavac_request_seconds`` for ``/v1/classify``: the
    time inside the server, without the client's share of this machine's cores."""
    from prometheus_client.parser import text_string_to_metric_families

    request = httpx.get(server.url + "/metrics", timeout=60,
                        headers={"Authorization": f"Bearer {API_KEY}"})
    totals = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(request.text):
        for sample in family.samples:
            kind = sample.name.removeprefix("llavac_request_seconds_")
            if kind in totals and sample.labels.get("route") == "/v1/classify":
                totals[kind] = sample.value
    return totals["sum"], totals["count"]


def timed_phase(server, plan: list[tuple], rate: float, deadline_s: float) -> dict:
    """One phase, plus the server-side mean time of its classify requests."""
    before = server_seconds(server)
    run = asyncio.run(run_phase(server.url, plan, rate, deadline_s))
    after = server_seconds(server)
    count = after[1] - before[1]
    run["server_mean_ms"] = 1000 * (after[0] - before[0]) / count if count else float("nan")
    return run


def recovered(server, deadline_s: float = 30.0) -> bool:
    """After the burst: /health answers and a new valid request gets 200. A shed answer
    (the key's rate limit may still be spent) is retried after its ``Retry-After``, as a
    well-behaved client does, until ``deadline_s``."""
    image = make_images(random.Random(1), 1)[0]
    deadline = time.monotonic() + deadline_s
    try:
        if server.get_json("/health")["status"] != "ok":
            return False
        while True:
            response = httpx.post(server.url + "/v1/classify", timeout=60,
                                  headers={"Authorization": f"Bearer {API_KEY}"},
                                  files={"image": ("x.png", image, "image/png")},
                                  data={"text": "after the burst"})
            retry_after = float(response.headers.get("retry-after", 0))
            if response.status_code not in SHED or time.monotonic() + retry_after > deadline:
                return response.status_code == 200
            time.sleep(retry_after)
    except (OSError, httpx.HTTPError):
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--rate", type=float, default=10.0, help="soak requests per second")
    parser.add_argument("--soak-s", type=float, default=60.0)
    parser.add_argument("--burst-s", type=float, default=10.0)
    parser.add_argument("--burst-factor", type=float, default=10.0)
    parser.add_argument("--malformed-share", type=float, default=0.2)
    parser.add_argument("--max-queue", type=int, default=64, help="the server's queue bound")
    parser.add_argument("--rate-limit-factor", type=float, default=4.0,
                        help="the server's per-key rate limit, in multiples of --rate")
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rate, args.soak_s, args.burst_s, args.burst_factor = 5.0, 2.0, 1.0, 6.0
        args.malformed_share, args.rate_limit_factor = 0.5, 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    banner("load_serve")
    rng = random.Random(args.seed)
    soak = build_requests(round(args.rate * args.soak_s), args.malformed_share, rng)
    burst_rate = args.rate * args.burst_factor
    burst = build_requests(round(burst_rate * args.burst_s), args.malformed_share, rng)
    server_args = ["--max-body-mb", str(MAX_BODY_MB), "--max-queue", str(args.max_queue),
                   "--rate-limit", str(args.rate * args.rate_limit_factor)]
    with running_server(args.model, server_args, api_key=API_KEY) as server:
        warmup = [request for request in soak if request[1]][:100]
        asyncio.run(run_phase(server.url, warmup, args.rate * 2, 120))
        rss_before = rss_mb(server.pid)
        soak_run = timed_phase(server, soak, args.rate, args.soak_s + 120)
        rss_after = rss_mb(server.pid)
        burst_run = timed_phase(server, burst, burst_rate, args.burst_s + 120)
        alive = recovered(server)
    soak_figures, burst_figures = summarise("soak", soak_run), summarise("burst", burst_run)
    soak_shed = soak_figures["shed_429"] + soak_figures["shed_503"]
    growth = rss_after - rss_before
    print(f"server RSS: {rss_before:.1f} MiB before the soak -> {rss_after:.1f} MiB after; "
          f"recovered after the burst: {alive}; shed during the soak: {soak_shed}")
    errors = soak_figures["errors"] + burst_figures["errors"]
    target("server_errors_non503", errors, "<=", 0)
    target("rss_growth_mb", growth, "<=", 20)
    print(f"RESULT soak_rps={args.rate:g} burst_rps={burst_rate:g} "
          + " ".join(f"{phase}_{q}_ms={figures[q]:.1f}" for phase, figures in
                     (("soak", soak_figures), ("burst", burst_figures))
                     for q in ("p50", "p95", "p99", "server_mean"))
          + f" shed_429={soak_figures['shed_429'] + burst_figures['shed_429']}"
          f" shed_503={soak_figures['shed_503'] + burst_figures['shed_503']}"
          f" server_errors_non503={errors} rss_growth_mb={growth:.1f} recovered={alive}")
    failed = (soak_figures["problems"] or burst_figures["problems"] or soak_shed or errors
              or soak_figures["unfinished"] or burst_figures["unfinished"] or not alive
              or (growth > 20 and not args.smoke))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
