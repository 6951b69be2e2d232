"""Shared fixtures: the real MVSA data (skipped where absent) and small files written on the fly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# The tiny test models gain nothing from a second thread, and two threads per process
# thrash when the test runner uses both cores for two workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from filelock import FileLock
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Each module's every-change tests share a worker (``--dist loadgroup``), unless marked
    with a group of their own: a module-scoped fixture (a run, a server, a split) is then
    built once, not once on each worker. Slow tests stay spread: each costs more than the
    fixtures it could share."""
    for item in items:
        if not item.get_closest_marker("xdist_group") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_runtest_setup(item):
    """Fail a grouped test when ``--dist loadgroup`` lost its ``xdist_group`` mark (the group
    is then missing from its node id): the tests that share a run or a cluster would each
    pay for it on both workers, silently."""
    if (getattr(item.config.option, "loadgroup", False)  # pytest-xdist's workers set it
            and item.get_closest_marker("xdist_group") and "@" not in item.nodeid):
        pytest.fail("--dist loadgroup ignored this test's xdist_group mark: this pytest and "
                    "pytest-xdist do not work together (pytest-dev/pytest-xdist#1386); "
                    "install the test extra with -c constraints.txt", pytrace=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (real MVSA data; CI provides it)."""
    if not (SHARED_DATA / "mvsa_single" / "labelResultAll.txt").is_file():
        pytest.skip(f"real MVSA data not found at {SHARED_DATA}: CI provides it")
    return SHARED_DATA


def write_image(path: Path, mode: str = "RGB", fmt: str = "JPEG", size=(8, 6)) -> Path:
    """A tiny solid image in ``mode`` saved as ``fmt`` (whatever the file name says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 30, 30), "RGBA": (200, 30, 30, 255), "CMYK": (0, 200, 200, 0),
             "L": 128, "P": 3, "LA": (128, 255)}[mode]
    Image.new(mode, size, color).save(path, fmt)
    return path


@pytest.fixture
def image_file():
    """``image_file(path, mode="RGB", fmt="JPEG")`` writes a tiny image and returns its path."""
    return write_image


@pytest.fixture
def make_release(tmp_path):
    """``make_release(rows, header=..., newline="\\n", files=True)`` writes an MVSA release
    folder: ``labelResultAll.txt`` from ``(id, cells)`` rows and, with ``files``, a JPEG and a
    UTF-8 text ``tweet <id>`` for every row. Returns the folder."""

    def make(rows, header="ID\ttext,image", newline="\n", files=True, name="release") -> Path:
        folder = tmp_path / name
        (folder / "data").mkdir(parents=True)
        lines = [header] + [f"{row_id}\t{cells}" for row_id, cells in rows]
        (folder / "labelResultAll.txt").write_bytes((newline.join(lines) + newline).encode())
        if files:
            for row_id, _ in rows:
                write_image(folder / "data" / f"{row_id}.jpg")
                (folder / "data" / f"{row_id}.txt").write_bytes(f"tweet {row_id}\n".encode())
        return folder

    return make


@pytest.fixture(scope="session")
def synthetic_release(tmp_path_factory) -> Path:
    """The demo's synthetic MVSA-layout release (600 pairs; the multimodal label needs both)."""
    from llavac.data.synthetic import write_synthetic_release

    return write_synthetic_release(tmp_path_factory.mktemp("synthetic"), n=600, seed=0)


def tiny_train_config(data: Path, output: Path, *overrides: str):
    """A fast training config for the tiny LLaVA on ``data`` (a release folder, random811)."""
    from llavac.config import load_config
    from llavac.train import TrainConfig

    preset = "tiny_synthetic"
    return load_config(TrainConfig, preset, [
        f"data.path={data}", f"train.output={output}", "train.progress=false", *overrides,
    ])


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """The tiny LLaVA fully fine-tuned on the synthetic task (150 steps, ~20 s on one core;
    0.99 multimodal accuracy held out, so it reads both the image colour and the text
    keyword).
    Tests that need a model that learnt the task use it; those that need any finished run
    use ``finished_run``."""
    return shared_run(tmp_path_factory, "synthetic-run")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished full fine-tune of two steps on the synthetic release (a second or two):
    a run folder as training leaves it, for tests of what commands do with one."""
    return shared_run(tmp_path_factory, "finished-run", "train.max_steps=2")


@pytest.fixture(scope="session")
def head_run(tmp_path_factory) -> Path:
    """The tiny LLaVA with LoRA and classification heads (``train.objective=head``), 30
    steps: what a head run does in predict / evaluate / serve / export does not depend on
    how well it learnt."""
    return shared_run(tmp_path_factory, "head-run", "train.objective=head",
                      "train.tuning=lora", "train.max_steps=30")


def shared_run(tmp_path_factory, name: str, *overrides: str) -> Path:
    """A run trained once per test session by ``train_full``: the pytest-xdist workers share
    a folder beside their own temporary folders, and a file lock lets the first one train
    while the others wait."""
    from llavac.data.synthetic import write_synthetic_release

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above every worker's own
    folder = root / name
    with FileLock(f"{folder}.lock"):
        if not (folder / "run" / "manifest.json").is_file():  # written last: a finished run
            release = write_synthetic_release(folder / "release", n=600, seed=0)
            train_full(release, folder / "run", *overrides)
    return folder / "run"


def train_full(data: Path, output: Path, *overrides: str) -> Path:
    """A full fine-tune of 150 steps on ``data`` (``tiny_train_config``, then ``overrides``):
    the tiny LLaVA reaches 0.99 held-out multimodal accuracy in them."""
    from llavac.train import train

    return train(tiny_train_config(data, output, "train.max_steps=150", "train.tuning=full",
                                   "train.save_steps=100000", "train.logging_steps=1000",
                                   *overrides))


@pytest.fixture
def chromium():
    """Headless Debian Chromium through playwright (``.ci/setup-browser.sh``; playwright's
    own browser download is never used); skipped where either is missing. One per test:
    playwright's sync API keeps an event loop running in this thread while it is open,
    which would break every later test of the worker that calls ``asyncio.run``."""
    executable = Path("/usr/bin/chromium")
    if not executable.exists() and not shutil.which("chromium"):
        pytest.skip("no /usr/bin/chromium: run .ci/setup-browser.sh (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable if executable.exists() else shutil.which("chromium")),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """One local Ray with 2 CPUs for every test that needs one (its start-up takes seconds, so
    it is paid once; ``pytest.mark.xdist_group("ray")`` keeps those tests in one worker).
    Yields the address another process joins it at (``--ray-address``)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
