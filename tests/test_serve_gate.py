"""Hostile clients against a live uvicorn server: answers from the headers alone, slow and
stalled bodies, spoofed proxy headers, guessed keys, cross-origin writes, client
disconnects. The app and uvicorn run in this process (a thread) around the real tiny
classifier, configured by the same ``uvicorn_config`` as ``llavac serve``, and are spoken to
over TCP."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serve_process import free_port
from test_serve_ops import ITEM, bearer

from llavac.args import ServeArgs
from llavac.serve import create_app
from llavac.serve.limits import RateLimiter
from llavac.serve.server import uvicorn_config

KEY = "gate-test-key"


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


@contextlib.contextmanager
def live(classifier, args: ServeArgs) -> Iterator[tuple[str, int, object]]:
    """``(host, port, app)`` of a uvicorn server on loopback, stopped on exit."""
    args = dataclasses.replace(args, port=free_port(), log_level="warning")
    app = create_app(classifier, args, model_name="tiny-llava")
    server = uvicorn.Server(uvicorn_config(app, args))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield args.host, args.port, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    """A socket that has sent ``head`` (request line and headers) and ``body`` so far."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def status_of(sock: socket.socket, timeout: float) -> int:
    """The status code of the response on ``sock``, read within ``timeout`` seconds."""
    sock.settimeout(timeout)
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {reply!r}"
        reply += chunk
    return int(reply.split(b" ", 2)[1])


def keyless_post(port: int, length: int) -> str:
    return (f"POST /v1/classify HTTP/1.1\nHost: 127.0.0.1:{port}\n"
            f"Content-Type: application/json\nContent-Length: {length}\n")


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_keyless_post_with_10_mb_in_flight_gets_401_within_a_second(classifier):
    with live(classifier, ServeArgs(api_key=KEY)) as (_, port, _app):
        sock = raw_request(port, keyless_post(port, 10 * 2**20), b"A" * 2**20)
        started = time.perf_counter()
        with sock:
            assert status_of(sock, timeout=1.0) == 401  # 9 MB of the body never sent
        assert time.perf_counter() - started < 1.0


def test_200_stalled_keyless_connections_do_not_lock_out_a_keyed_client(classifier):
    """Each sends its headers and one byte of a 1000-byte body, then nothing: they are
    answered 401 from the headers and never count toward the queue of 4."""
    args = ServeArgs(api_key=KEY, max_queue=4, max_batch_items=4)
    with live(classifier, args) as (_, port, app), contextlib.ExitStack() as stack:
        stalled = [stack.enter_context(raw_request(port, keyless_post(port, 1000), b"{"))
                   for _ in range(200)]
        started = time.perf_counter()
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json=ITEM,
                            headers=bearer(KEY), timeout=5)
        assert answer.status_code == 200, answer.text
        assert time.perf_counter() - started < 5
        assert [status_of(sock, timeout=5) for sock in stalled[:5]] == [401] * 5
        wait_until(lambda: app.state.serve.metrics.in_flight == 0, "nothing is in flight")


def test_a_body_that_stops_arriving_gets_408_and_frees_its_place(classifier):
    args = ServeArgs(api_key=KEY, max_queue=1, max_batch_items=1, body_timeout=0.5)
    with live(classifier, args) as (_, port, app):
        head = keyless_post(port, 1000) + f"Authorization: Bearer {KEY}\n"
        with raw_request(port, head, b'{"text"') as sock:
            assert status_of(sock, timeout=5) == 408
        wait_until(lambda: app.state.serve.metrics.in_flight == 0, "its place is freed")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json=ITEM,
                            headers=bearer(KEY), timeout=30)
        assert answer.status_code == 200


def test_a_client_that_leaves_is_counted_apart_from_server_errors(classifier):
    with live(classifier, ServeArgs(api_key=KEY)) as (_, port, app):
        head = keyless_post(port, 1000) + f"Authorization: Bearer {KEY}\n"
        with raw_request(port, head, b'{"text": "half a bo'):
            pass  # closed with the body unfinished
        registry = app.state.serve.metrics.registry
        wait_until(lambda: registry.get_sample_value(
            "llavac_requests_total", {"route": "/v1/classify", "status": "499"}),
            "the disconnect is counted")
        scraped = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", headers=bearer(KEY)).text)
    statuses = {dict(labels)["status"]: value for (name, labels), value in scraped.items()
                if name == "llavac_requests_total" and dict(labels)["route"] == "/v1/classify"}
    assert statuses == {"499": 1.0}
    assert scraped.get(("llavac_rejected_total", (("reason", "invalid"),)), 0) == 0


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_for_is_trusted_only_from_the_proxies_named(classifier, trusted):
    """Without a key the rate limit is per address; 20 spoofed X-Forwarded-For addresses
    share one bucket unless the peer is a proxy given by --forwarded-allow-ips."""
    args = ServeArgs(rate_limit=1, rate_burst=1,
                     forwarded_allow_ips="127.0.0.1" if trusted else None)
    with live(classifier, args) as (_, port, _app), httpx.Client() as client:
        statuses = [client.get(f"http://127.0.0.1:{port}/v1/model",
                               headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                    for i in range(20)]
    assert statuses == ([200] * 20 if trusted else [200] + [429] * 19)


def test_wrong_keys_are_rate_limited_per_address_right_key_included(classifier):
    args = ServeArgs(api_key=KEY, failed_auth_burst=3, failed_auth_rate=0.01)
    with TestClient(create_app(classifier, args)) as client:
        wrong = [client.get("/v1/model", headers=bearer(f"guess-{i}")).status_code
                 for i in range(4)]
        assert wrong == [401, 401, 401, 429]
        locked = client.get("/v1/model", headers=bearer(KEY))
        assert locked.status_code == 429 and locked.json()["field"] == "authorization"
        assert int(locked.headers["retry-after"]) >= 60


def test_rate_buckets_forget_the_least_recently_seen_client():
    limiter = RateLimiter(rate=0.001, burst=1, max_clients=3)
    for client in ("a", "b", "c"):
        assert limiter.acquire(client) is None
    assert limiter.acquire("a") is not None  # a's bucket is empty, and a is now the newest
    for client in ("d", "e"):  # b and c are forgotten, a is kept
        assert limiter.acquire(client) is None
    assert len(limiter) == 3
    assert limiter.acquire("a") is not None and limiter.acquire("b") is None


def test_the_schema_is_behind_the_key(classifier):
    with TestClient(create_app(classifier, ServeArgs(api_key=KEY))) as client:
        assert client.get("/openapi.json").status_code == 401
        schema = client.get("/openapi.json", headers=bearer(KEY)).json()
    assert schema["paths"]["/v1/classify"]["post"]["security"] == [{"bearer": []}]


@pytest.mark.parametrize(("headers", "allowed"), [
    ({}, True),  # not a browser
    ({"Origin": "http://testserver"}, True),  # the page of this server
    ({"Origin": "http://evil.example"}, False),  # a form or fetch from another site
    ({"Origin": "null"}, False),  # a sandboxed frame or a file: page
    ({"Sec-Fetch-Site": "cross-site"}, False),
])
def test_cross_origin_writes_are_refused(classifier, headers, allowed):
    with TestClient(create_app(classifier, ServeArgs(host="0.0.0.0", insecure_no_auth=True))
                    ) as client:
        response = client.post("/v1/classify", json=ITEM, headers=headers)
        read = client.get("/v1/model", headers=headers)  # reading needs no such check
    assert response.status_code == (200 if allowed else 403), response.text
    assert allowed or response.json()["field"] == "origin"
    assert read.status_code == 200


def test_a_loopback_server_refuses_a_rebound_host_name(classifier):
    """DNS rebinding: a page of attacker.example whose name now points at 127.0.0.1 is
    same-origin by its own account; a server listening on loopback knows better."""
    with TestClient(create_app(classifier, ServeArgs()), base_url="http://attacker.example"
                    ) as client:
        rebound = client.post("/v1/classify", json=ITEM,
                              headers={"Origin": "http://attacker.example"})
    assert rebound.status_code == 403 and "loopback" in rebound.json()["error"]
