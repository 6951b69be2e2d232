"""``serve()``: load the model once, then run the app under uvicorn until stopped."""

from __future__ import annotations

import ipaddress
import logging

from llavac.serve.inputs import ServeLimits

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: str | None,
    adapter: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    prompt: str | None = None,
    dtype=None,
    device=None,
    method: str = "score",
    limits: ServeLimits | None = None,
    max_batch_size: int = 8,
    max_wait_ms: float = 2.0,
    log_level: str = "info",
) -> None:
    """Serve ``model`` (+ ``adapter``) over HTTP on ``host:port``; blocks until interrupted.

    ``model`` may be ``None`` when ``adapter`` is a training run folder that names its base
    model. Binds to loopback by default: the API has no authentication, so exposing it on a
    network address is a decision the caller makes explicitly with ``host=``. One example is
    classified before the port opens, so a model that cannot serve ``method`` fails at
    start-up rather than on every request.
    """
    import uvicorn
    from PIL import Image

    from llavac.predict import Classifier
    from llavac.serve.app import create_app

    if not is_loopback(host):
        log.warning("serving on %s: reachable from other machines, and the API has no "
                    "authentication", host)
    classifier = Classifier.from_pretrained(
        model, adapter=adapter, prompt=prompt, dtype=dtype, device=device
    )
    classifier.classify([(Image.new("RGB", (32, 32), "gray"), "warm-up")], method=method)
    app = create_app(
        classifier, limits, method=method,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
    )
    # One process: the model lives in this process's memory and the batcher serialises it.
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
