"""End to end in headless Chromium: the page on a real server, driven like a user would.

Needs the Debian ``chromium`` package (``.ci/setup-browser.sh``) and playwright-python; it
never downloads a browser. The screenshot is kept in ``test-artifacts/serve_page.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image
from serve_process import running_server

from llavac.labels import LABELS

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SLOTS = ("text", "image", "multimodal")


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("no /usr/bin/chromium: run .ci/setup-browser.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download)")
    return sync_playwright


def _launch(p):
    return p.chromium.launch(
        executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
        args=CHROMIUM_ARGS,
    )


def _wait_for_model_line(page, text: str) -> None:
    """Until the page's model line says ``text``. Playwright's assertion polls from its own
    script world: a string predicate (wait_for_function) would be eval'd in the page, which
    the page's Content-Security-Policy (no 'unsafe-eval') refuses."""
    from playwright.sync_api import expect

    expect(page.locator("#model-line")).to_contain_text(text, timeout=60_000)


def _classify_on_page(page, image_path: Path, text: str) -> dict:
    """Upload, classify and read back the labels the page shows."""
    page.set_input_files("#image", str(image_path))
    page.fill("#text", text)
    page.click("#submit")
    page.wait_for_selector("#result[data-state=done]", timeout=60_000)
    shown = {slot: page.get_attribute(f"#label-{slot}", "data-label") for slot in SLOTS}
    visible = {slot: page.inner_text(f"#label-{slot}").strip() for slot in SLOTS}
    assert shown == visible
    return shown


def _api_labels(server, image_path: Path, text: str, headers=None) -> dict:
    answer = httpx.post(server.url + "/v1/classify", headers=headers or {},
                        files={"image": ("p.png", image_path.read_bytes(), "image/png")},
                        data={"text": text}, timeout=60).json()
    return {slot: answer[f"{slot}_label"] for slot in SLOTS}


def _sunset(tmp_path: Path) -> Path:
    image_path = tmp_path / "sunset.png"
    noise = Image.effect_noise((96, 72), 30).convert("RGB")
    Image.blend(noise, Image.new("RGB", (96, 72), (240, 140, 40)), 0.7).save(image_path)
    return image_path


def test_page_classifies_an_upload_like_the_api(sync_playwright, tmp_path):
    image_path = _sunset(tmp_path)
    text = "Best sunset of the summer, feeling grateful"

    with running_server("tiny-llava") as server:
        api = _api_labels(server, image_path, text)
        with sync_playwright() as p:
            browser = _launch(p)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 720})
                requests, problems = [], []
                page.on("request", lambda request: requests.append(request.url))
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda error: problems.append(str(error)))

                page.goto(server.url + "/")
                _wait_for_model_line(page, "tiny-llava")
                assert not page.is_visible("#auth")  # no key configured: nothing to ask
                shown = _classify_on_page(page, image_path, text)
                error_box = page.inner_text("#error")
                ARTIFACTS.mkdir(exist_ok=True)
                screenshot = ARTIFACTS / "serve_page.png"
                page.screenshot(path=str(screenshot), full_page=True)
                print(f"screenshot: {screenshot}")
            finally:
                browser.close()

    assert error_box == ""
    assert problems == []
    assert shown == api and all(label in LABELS for label in shown.values())
    outside = [url for url in requests
               if not url.startswith((server.url, "blob:", "data:"))]
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert screenshot.stat().st_size > 5_000


def test_page_asks_for_the_key_once_per_tab(sync_playwright, tmp_path):
    image_path = _sunset(tmp_path)
    text = "rainy commute again"
    with running_server("tiny-llava", api_key="page-secret") as server:
        api = _api_labels(server, image_path, text, {"Authorization": "Bearer page-secret"})
        with sync_playwright() as p:
            browser = _launch(p)
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.wait_for_selector("#auth", state="visible")
                page.fill("#api-key", "wrong-key")
                page.click("#key-save")
                _wait_for_model_line(page, "not accepted")
                assert page.is_visible("#auth")  # a wrong key is refused and asked again
                page.fill("#api-key", "page-secret")
                page.click("#key-save")
                _wait_for_model_line(page, "tiny-llava")
                assert not page.is_visible("#auth")
                shown = _classify_on_page(page, image_path, text)
                page.reload()  # same tab: the key is kept, nothing is asked again
                _wait_for_model_line(page, "tiny-llava")
                assert not page.is_visible("#auth")
                stored = page.evaluate("sessionStorage.getItem('llavac-api-key')")
                fresh_tab = browser.new_page()  # another tab starts without it
                fresh_tab.goto(server.url + "/")
                fresh_tab.wait_for_selector("#auth", state="visible")
            finally:
                browser.close()
    assert shown == api and stored == "page-secret"
