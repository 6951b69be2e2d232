"""Operating the server beyond loopback, in-process around the real tiny classifier: API keys,
rate limits, a bounded queue under overload, Prometheus metrics, request ids, /ready while the
model loads, and the one ``llavac serve`` command line."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from llavac.args import ServeArgs
from llavac.serve import create_app
from llavac.serve.auth import api_keys, check_exposure, key_matches

KEY, OTHER_KEY = "k-one-secret", "k-two-secret"


def b64_png(seed: int = 0, size=(24, 16)) -> str:
    image = Image.effect_noise(size, 20 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


ITEM = {"image_base64": b64_png(), "text": "a fine day"}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def classifier():
    from llavac.predict import Classifier

    return Classifier.from_pretrained("tiny-llava")


def metric_samples(text: str) -> dict[tuple, float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_keys_are_required_on_the_api_but_not_on_health(classifier):
    app = create_app(classifier, ServeArgs(api_key=f"{KEY},{OTHER_KEY}"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/").status_code == 200  # the page, which asks for the key
        for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {KEY}"}):
            for response in (client.post("/v1/classify", json=ITEM, headers=headers),
                             client.get("/v1/model", headers=headers),
                             client.get("/metrics", headers=headers)):
                assert response.status_code == 401, response.text
                assert response.json()["field"] == "authorization"
                assert response.headers["www-authenticate"] == "Bearer"
        for key in (KEY, OTHER_KEY):
            answer = client.post("/v1/classify", json=ITEM, headers=bearer(key))
            assert answer.status_code == 200 and answer.json()["multimodal_label"]
        assert client.get("/v1/model", headers=bearer(KEY)).json()["auth"] is True


def test_key_sources_merge_and_compare_exactly(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# deploy keys\nfile-key\n\n", encoding="utf-8")
    monkeypatch.setenv("LLAVAC_API_KEY", "env-a, env-b")
    keys = api_keys(ServeArgs(api_key="flag-key", api_key_file=str(keys_file)))
    assert keys == ("flag-key", "env-a", "env-b", "file-key")
    assert key_matches("env-b", keys) and not key_matches("env-", keys)
    assert not key_matches("env-bb", keys) and not key_matches(None, keys)
    assert not key_matches("ключ", keys)  # non-ASCII is compared as bytes, not an error
    with pytest.raises(FileNotFoundError, match="--api-key-file"):
        api_keys(ServeArgs(api_key_file=str(tmp_path / "missing")))


def test_a_public_address_without_a_key_is_refused_at_start(monkeypatch, capsys):
    from llavac.cli import main

    monkeypatch.delenv("LLAVAC_API_KEY", raising=False)
    assert main(["serve", "--model", "tiny-llava", "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert "0.0.0.0" in error and "--api-key" in error and "--insecure-no-auth" in error
    check_exposure(ServeArgs(host="0.0.0.0"), ("a-key",))  # with a key: allowed
    check_exposure(ServeArgs(host="0.0.0.0", insecure_no_auth=True), ())  # said explicitly
    check_exposure(ServeArgs(host="::1"), ())  # loopback needs nothing


def test_rate_limit_answers_429_with_retry_after_per_key(classifier):
    app = create_app(classifier, ServeArgs(api_key=f"{KEY},{OTHER_KEY}", rate_limit=0.5,
                                           rate_burst=2))
    with TestClient(app) as client:
        statuses = [client.get("/v1/model", headers=bearer(KEY)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = client.get("/v1/model", headers=bearer(KEY))
        assert limited.status_code == 429 and set(limited.json()) == {"error", "field"}
        assert int(limited.headers["retry-after"]) == 2  # one token every 2 s, rounded up
        assert client.get("/v1/model", headers=bearer(OTHER_KEY)).status_code == 200


async def _burst(app, n: int, key: str) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async def one(i: int) -> int:
            item = {"image_base64": b64_png(i % 7), "text": f"post {i}"}
            return (await client.post("/v1/classify", json=item, headers=bearer(key),
                                      timeout=120)).status_code
        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_overload_is_shed_fast_and_the_server_recovers(classifier):
    """300 concurrent requests against a queue of 16 examples and a bucket of 100 requests."""
    args = ServeArgs(api_key=f"{KEY},{OTHER_KEY}", max_queue=16, max_batch_items=16,
                     rate_limit=50, rate_burst=100)
    app = create_app(classifier, args)
    with TestClient(app) as client:  # runs the lifespan; the burst shares the app's state
        started = time.perf_counter()
        statuses = asyncio.run(_burst(app, 300, KEY))
        print(f"300 requests answered in {time.perf_counter() - started:.1f} s")
        counts = {status: statuses.count(status) for status in set(statuses)}
        assert set(counts) <= {200, 429, 503}, counts
        assert counts.get(200, 0) >= 16 and counts.get(429, 0) >= 1 and counts.get(503, 0) >= 1
        assert client.get("/health").json()["queued"] == 0
        after = client.post("/v1/classify", json=ITEM, headers=bearer(OTHER_KEY))
        assert after.status_code == 200, after.text
        samples = metric_samples(client.get("/metrics", headers=bearer(OTHER_KEY)).text)
    rejected = {reason: samples.get(("llavac_rejected_total", (("reason", reason),)), 0)
                for reason in ("overloaded", "rate_limited")}
    assert rejected == {"overloaded": counts[503], "rate_limited": counts[429]}


def test_a_full_queue_answers_503_with_retry_after(classifier):
    """One request holds the model, a 3-item batch fills the queue of 3: the next is refused."""
    gate = threading.Event()

    class Held:
        fmt = classifier.fmt

        def classify(self, items, method="score"):
            gate.wait(timeout=60)
            return classifier.classify(items, method=method)

    app = create_app(Held(), ServeArgs(max_queue=3, max_batch_items=3, max_batch_size=1))
    with TestClient(app) as client:
        held = threading.Thread(target=client.post, args=("/v1/classify",),
                                kwargs={"json": ITEM})
        held.start()
        wait_for(lambda: app.state.batcher.batches == 1, "the first request is in the model")
        queued = threading.Thread(target=client.post, args=("/v1/classify/batch",),
                                  kwargs={"json": [ITEM] * 3})
        queued.start()
        wait_for(lambda: client.get("/health").json()["queued"] == 3, "the queue is full")
        refused = client.post("/v1/classify", json=ITEM)
        gate.set()
        held.join(timeout=60)
        queued.join(timeout=60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert set(refused.json()) == {"error", "field"} and "examples are waiting" in refused.text


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def test_metrics_count_what_was_sent(classifier):
    app = create_app(classifier, ServeArgs(api_key=KEY))
    with TestClient(app) as client:
        for seed in range(2):
            item = {"image_base64": b64_png(seed), "text": "ok"}
            assert client.post("/v1/classify", json=item, headers=bearer(KEY)).status_code == 200
        assert client.post("/v1/classify", json={"text": "no image"},
                           headers=bearer(KEY)).status_code == 422
        assert client.post("/v1/classify", json=ITEM).status_code == 401
        assert client.post("/v1/classify/batch", json=[ITEM] * 3,
                           headers=bearer(KEY)).status_code == 200
        assert client.get("/nowhere").status_code == 404
        scraped = client.get("/metrics", headers=bearer(KEY))
        batches = app.state.batcher.batches
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = metric_samples(scraped.text)

    def value(name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    assert value("llavac_requests_total", route="/v1/classify", status="200") == 2
    assert value("llavac_requests_total", route="/v1/classify", status="422") == 1
    assert value("llavac_requests_total", route="/v1/classify", status="401") == 1
    assert value("llavac_requests_total", route="/v1/classify/batch", status="200") == 1
    assert value("llavac_requests_total", route="other", status="404") == 1
    assert value("llavac_request_seconds_count", route="/v1/classify") == 4
    assert value("llavac_rejected_total", reason="unauthorized") == 1
    assert value("llavac_rejected_total", reason="invalid") == 2  # the 422 and the 404
    assert value("llavac_batch_size_sum") == 5  # 2 single requests + one batch of 3
    assert value("llavac_batch_size_count") == value("llavac_model_seconds_count") == batches
    assert value("llavac_queue_depth") == 0 and value("llavac_in_flight") == 0
    assert value("process_resident_memory_bytes") > 0


def test_request_id_is_echoed_and_logged(classifier, caplog):
    app = create_app(classifier)
    with caplog.at_level(logging.INFO, logger="llavac.access"), TestClient(app) as client:
        given = client.get("/health", headers={"X-Request-ID": "req-42.a"})
        fresh = client.post("/v1/classify", json={"text": "x"})
        hostile = client.get("/health", headers={"X-Request-ID": "bad id\x7f" + "z" * 200})
    assert given.headers["x-request-id"] == "req-42.a"
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.status_code == 422
    assert hostile.headers["x-request-id"] != "bad id"
    lines = [r.getMessage() for r in caplog.records if r.name == "llavac.access"]
    assert len(lines) == 3
    assert '"request_id": "req-42.a"' in lines[0] and '"status": 422' in lines[1]


def test_ready_waits_for_the_model_while_health_answers(classifier):
    loaded = threading.Event()

    def load():
        loaded.wait(timeout=60)
        return classifier

    app = create_app(args=ServeArgs(), load=load)
    with TestClient(app) as client:
        assert client.get("/health").json()["ready"] is False
        assert client.get("/ready").json() == {"status": "loading"}
        early = client.post("/v1/classify", json=ITEM)
        assert early.status_code == 503 and "loading" in early.json()["error"]
        loaded.set()
        wait_for(lambda: client.get("/ready").status_code == 200, "the model is loaded")
        assert client.get("/ready").json()["status"] == "ready"
        assert client.post("/v1/classify", json=ITEM).status_code == 200

    def broken():
        raise ValueError("no such model")

    failed = create_app(args=ServeArgs(), load=broken)
    with TestClient(failed) as client:
        wait_for(lambda: failed.state.serve.load_error is not None, "the load has failed")
        assert client.get("/ready").json() == {"status": "failed"}


def test_serve_command_reads_config_flags_and_overrides(tmp_path):
    from llavac.cli import build_parser, command_config

    preset = tmp_path / "serve.yaml"
    preset.write_text("model:\n  name: tiny-llava\nserve:\n  port: 9000\n  max_queue: 64\n")
    args = build_parser().parse_args(["serve", "--config", str(preset), "--rate-limit", "5",
                                      "--insecure-no-auth", "serve.shutdown_timeout=3"])
    config = command_config(args.command_row, args)
    assert (config.model.name, config.serve.port, config.serve.max_queue) == ("tiny-llava",
                                                                             9000, 64)
    assert config.serve.rate_limit == 5 and config.serve.insecure_no_auth is True
    assert config.serve.shutdown_timeout == 3
    with pytest.raises(ValueError, match="serve.max_queue"):
        ServeArgs(max_queue=8)  # below max_batch_items: a full batch could never queue
    helptext = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "--config" in helptext and "key=value" in helptext and "serve.api_key" in helptext
