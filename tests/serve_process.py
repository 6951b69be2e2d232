"""Start ``python -m llavac.cli serve`` as a child process on loopback and wait until it
answers.

Shared by the server-process tests, the browser test and ``benchmarks/load_serve.py`` /
``serve_memory.py`` so all of them exercise the real entry point (argument parsing, model
loading, uvicorn) rather than an in-process app, and all of them clean up the same way.
``python -m llavac.cli`` runs the interpreter they run under, whatever is on the PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path
    api_key: str | None = None  # sent as a bearer token by get_json

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get_json(self, path: str, timeout: float = 10.0) -> dict:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())


@contextlib.contextmanager
def running_server(
    model: str = "tiny-llava",
    args: tuple[str, ...] | list[str] = (),
    port: int | None = None,
    startup_timeout: float = 180.0,
    api_key: str | None = None,
) -> Iterator[ServerProcess]:
    """A server on ``127.0.0.1``; yields once ``/ready`` answers (the model is loaded), and
    stops it with SIGTERM on exit. ``api_key`` is passed through ``LLAVAC_API_KEY``.

    The child's output goes to a temporary file (a pipe nobody reads could fill and stall
    it) and is included in the error if the server dies or never becomes ready.
    """
    port = port or free_port()
    log_file = tempfile.NamedTemporaryFile(
        prefix="llavac-serve-", suffix=".log", delete=False
    )
    command = [sys.executable, "-m", "llavac.cli", "serve", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LLAVAC_API_KEY", None)
    if api_key:
        env["LLAVAC_API_KEY"] = api_key
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, Path(log_file.name), api_key)
    try:
        _wait_ready(server, startup_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        log_file.close()
        Path(log_file.name).unlink(missing_ok=True)


def _wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {server.process.returncode}:\n{server.log()[-4000:]}"
            )
        try:
            if server.get_json("/ready", timeout=2).get("status") == "ready":
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not ready after {timeout:.0f} s:\n{server.log()[-4000:]}")
