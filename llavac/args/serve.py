"""``llavac serve``: where to listen, who may call, how much to accept, how to stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from llavac.args.common import METHODS, ClassifierArgs, Section


@dataclass
class ServeArgs(Section):
    """``llavac serve``: where to listen, who may call, how much to accept, how to stop."""

    section: ClassVar[str] = "serve"
    host: str = "127.0.0.1"  # loopback: another address needs an API key (or insecure_no_auth)
    port: int = 8000
    method: str = "score"  # score (probabilities, never unparseable) | generate
    # -- what one request may carry: a public demo on a small machine
    max_body_mb: float = 10.0  # the whole HTTP body, base64 included
    max_text_chars: int = 2000
    max_batch_items: int = 32  # longest list /v1/classify/batch takes
    # Width x height of one image, and of all images of a request together, read from their
    # headers before decoding (a small PNG can unpack to gigabytes, at 4 bytes a pixel).
    max_image_pixels: int = 4096 * 4096
    max_request_pixels: int = 4 * 4096 * 4096
    max_decoding: int = 2  # images decoded at once: the memory of decoding is this many images
    body_timeout: float = 30.0  # seconds for a whole body to arrive; past it: 408
    # -- /v1/explain: one forward pass per occlusion, 3 + words + grid**2 of them per pair
    max_explain_grid: int = 8  # ?grid= cells per side (the default 6 costs 36 passes)
    max_explain_variants: int = 128  # passes one explanation may cost (max_queue caps it)
    # -- batching: requests that arrive while the model is busy share its next call
    max_batch_size: int = 8
    max_wait_ms: float = 2.0  # an idle server waits this long for company
    # -- who may call: keys are read from here, LLAVAC_API_KEY and api_key_file, all merged
    api_key: str | None = None  # one key, or several separated by commas
    api_key_file: str | None = None  # one key per line; '#' starts a comment
    insecure_no_auth: bool = False  # allow a non-loopback host without any key
    # Wrong keys per client address: a bucket of this many, refilled at this rate per
    # second; past it every request with a key from there gets 429, a right key included.
    failed_auth_burst: int = 10
    failed_auth_rate: float = 0.1
    # -- backpressure: turn the excess away at once instead of slowing everyone down
    max_queue: int = 128  # waiting examples; 4 full batch requests, ~2 s of a 7B on one GPU
    rate_limit: float | None = None  # requests per second per key (client address without
    rate_burst: int | None = None  # keys); None: no limit. Burst None: max(1, rate_limit)
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for accepted requests to finish
    # Open connections (uvicorn's limit_concurrency); past it uvicorn itself answers 503.
    max_connections: int = 512
    # Proxies whose X-Forwarded-For / -Proto name the client (comma-separated addresses or
    # networks, '*' for any); None: such headers are ignored, the client is the peer.
    forwarded_allow_ips: str | None = None
    log_level: str = "info"

    def __post_init__(self):
        self._one_of("method", METHODS)
        self._check("port", 0 <= self.port <= 65535, "a TCP port in 0..65535")
        self._check("max_body_mb", self.max_body_mb > 0, "a size in MB > 0")
        for key in ("max_text_chars", "max_batch_items", "max_image_pixels", "max_batch_size",
                    "max_queue", "max_decoding", "max_connections", "failed_auth_burst",
                    "max_explain_grid", "max_explain_variants"):
            self._at_least(key, 1)
        self._at_least("max_wait_ms", 0)
        self._check("body_timeout", self.body_timeout > 0, "seconds > 0")
        self._check("failed_auth_rate", self.failed_auth_rate > 0, "attempts per second > 0")
        self._check("max_queue", self.max_queue >= self.max_batch_items,
                    f"at least max_batch_items ({self.max_batch_items}), or a full batch "
                    "request could never be queued")
        self._check("max_request_pixels", self.max_request_pixels >= self.max_image_pixels,
                    f"at least max_image_pixels ({self.max_image_pixels}), or an image the "
                    "server accepts could never be sent")
        self._check("rate_limit", self.rate_limit is None or self.rate_limit > 0,
                    "requests per second > 0 or null")
        self._at_least("rate_burst", 1, optional=True)
        self._at_least("shutdown_timeout", 0)
        self._one_of("log_level", ("critical", "error", "warning", "info", "debug"))


@dataclass
class ServeConfig:
    """One ``llavac serve``: the classifier to load and how to serve it."""

    model: ClassifierArgs = field(default_factory=ClassifierArgs)
    serve: ServeArgs = field(default_factory=ServeArgs)
