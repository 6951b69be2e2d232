"""API keys: where they come from, who must present one, and how they are compared.

Keys are merged from ``serve.api_key`` (comma-separated), the ``LLAVAC_API_KEY`` environment
variable (comma-separated) and ``serve.api_key_file`` (one per line), so a deployment can keep
them out of the command line, where other users of the machine could read them. A client
sends ``Authorization: Bearer KEY`` on ``/v1/*``, ``/metrics`` and ``/openapi.json`` (checked
from the headers by :mod:`llavac.serve.gate`); ``/health`` and ``/ready`` stay open for load
balancers, and the page at ``/`` asks its user for the key.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from llavac.args import ServeArgs

ENV_VAR = "LLAVAC_API_KEY"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(value: str | None) -> list[str]:
    return [key.strip() for key in (value or "").split(",") if key.strip()]


def api_keys(args: ServeArgs) -> tuple[str, ...]:
    """Every key the server accepts (empty: no authentication)."""
    keys = _split(args.api_key) + _split(os.environ.get(ENV_VAR))
    if args.api_key_file is not None:
        path = Path(args.api_key_file)
        if not path.is_file():
            raise FileNotFoundError(f"--api-key-file {path}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not keys:
            raise ValueError(f"--api-key-file {path}: holds no key")
    return tuple(dict.fromkeys(keys))


def check_exposure(args: ServeArgs, keys: tuple[str, ...]) -> None:
    """Refuse to listen beyond this machine without a key, unless told so explicitly."""
    if keys or args.insecure_no_auth or is_loopback(args.host):
        return
    raise ValueError(
        f"--host {args.host} is reachable from other machines and no API key is set: give "
        f"--api-key KEY (or {ENV_VAR}, or --api-key-file FILE), or --insecure-no-auth to "
        "serve without authentication"
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_matches(token: str | None, keys: tuple[str, ...]) -> bool:
    """Whether ``token`` is one of ``keys``, in time independent of where they differ.

    Every key is compared (no early exit), so the time does not tell which key came close.
    """
    if token is None:
        return False
    given = token.encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return any(matches)
