"""SIGTERM on a real server process: stop accepting, answer everything accepted, exit 0.

Four 32-item batch requests are sent at once to a server that runs one example per model
call, so at SIGTERM most of their examples are still queued. A rolling restart must not lose
them: all four are answered in full, new connections are refused meanwhile, and the process
exits with status 0 rather than dying of the signal.
"""

from __future__ import annotations

import base64
import io
import signal
import socket
import threading
import time

import httpx
import pytest
from PIL import Image
from serve_process import running_server

ITEMS = 32


def batch_body(request: int) -> list[dict]:
    body = []
    for index in range(ITEMS):
        buffer = io.BytesIO()
        Image.effect_noise((16, 16), 10 + index).convert("RGB").save(buffer, "PNG")
        body.append({"image_base64": base64.b64encode(buffer.getvalue()).decode(),
                     "text": f"request {request} item {index}"})
    return body


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.slow  # a server process, SIGTERM
def test_sigterm_drains_accepted_batches_and_exits_zero():
    answers: dict[int, httpx.Response] = {}
    with running_server("tiny-llava", ["--max-batch-size", "1", "--shutdown-timeout", "60"],
                        ) as server:
        port = int(server.url.rsplit(":", 1)[1])

        def ask(request: int) -> None:
            answers[request] = httpx.post(server.url + "/v1/classify/batch",
                                          json=batch_body(request), timeout=120)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        health = {}

        def all_accepted() -> bool:
            health.update(server.get_json("/health"))
            return health["in_flight"] == 4 and health["queued"] > 0

        wait_until(all_accepted, 60, "the server has accepted all four requests")
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(port), 30, "the server stops accepting")
        unanswered_when_closed = 4 - len(answers)
        for thread in threads:
            thread.join(timeout=120)
        returncode = server.process.wait(timeout=60)

    assert unanswered_when_closed > 0, "all requests finished before the listener closed"
    assert returncode == 0, server.log()[-3000:]
    assert sorted(answers) == [0, 1, 2, 3]
    for response in answers.values():
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == ITEMS
