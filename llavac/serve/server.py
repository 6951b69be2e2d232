"""``serve()``: run the app under uvicorn, load the model behind it, drain on SIGTERM."""

from __future__ import annotations

import logging
import signal

import uvicorn

from llavac.args import ServeArgs, ServeConfig
from llavac.serve.app import create_app
from llavac.serve.auth import api_keys, check_exposure

log = logging.getLogger(__name__)


def _warm_classifier(config: ServeConfig):
    """The classifier, after one example: a model that cannot serve ``serve.method`` fails
    while loading, not on every request."""
    # Imported here: torch and transformers load behind the open port, in the loading thread.
    from PIL import Image

    from llavac.predict import Classifier

    classifier = Classifier.from_args(config.model)
    classifier.classify([(Image.new("RGB", (32, 32), "gray"), "warm-up")],
                        method=config.serve.method)
    return classifier


def serve(config: ServeConfig) -> None:
    """Serve ``config.model`` on ``serve.host:serve.port``; returns after a clean stop.

    The port opens first and the model loads behind it (``/health`` answers at once,
    ``/ready`` once the model is warm); a load failure stops the server and is raised here.
    A non-loopback host without an API key is refused before anything starts. On SIGTERM or
    Ctrl-C the server stops accepting, answers every request it accepted (their queued
    examples included) for up to ``serve.shutdown_timeout`` seconds, and returns.
    """
    args = config.serve
    check_exposure(args, api_keys(args))
    server: _DrainingServer | None = None

    def load():
        try:
            return _warm_classifier(config)
        except BaseException:
            server.should_exit = True  # nothing to serve: stop, serve() raises the error
            raise

    app = create_app(args=args, load=load)
    server = _DrainingServer(uvicorn_config(app, args))
    server.run()  # one process: the model lives here and the batcher serialises it
    if app.state.serve.load_error is not None:
        raise app.state.serve.load_error


def uvicorn_config(app, args: ServeArgs) -> uvicorn.Config:
    """uvicorn's settings for ``args``: one worker, no access log of its own, a cap on open
    connections, and proxy headers trusted only from ``serve.forwarded_allow_ips``.

    uvicorn trusts ``X-Forwarded-For`` from loopback by default, so without a proxy any local
    client could pose as any address (and dodge a per-address rate limit).
    """
    return uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, workers=1,
        access_log=False,  # llavac.access logs one JSON line per request instead
        timeout_graceful_shutdown=args.shutdown_timeout,
        limit_concurrency=args.max_connections,
        proxy_headers=args.forwarded_allow_ips is not None,
        forwarded_allow_ips=args.forwarded_allow_ips or "")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM is an ordinary stop with exit status 0.

    uvicorn drains on SIGTERM and then raises the signal again, so the process dies of it
    (status -15) and a supervisor cannot tell a clean rolling restart from a crash.
    """

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:  # drained and stopping: nothing to re-raise
            self._captured_signals.remove(sig)
