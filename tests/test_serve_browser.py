"""End to end in headless Chromium: the page on a real server, driven like a user would.

Needs the Debian ``chromium`` package (``.ci/setup-browser.sh``) and playwright-python; it
never downloads a browser. The screenshots are kept in ``test-artifacts/``. One browser and
one keyless server serve the whole module (in one worker): starting them is most of the cost.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image
from serve_process import running_server

from llavac.labels import LABELS

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

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


@pytest.fixture(scope="module")
def browser(sync_playwright):
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=CHROMIUM_ARGS,
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server():
    """The tiny model served without a key."""
    with running_server("tiny-llava") as running:
        yield running


@pytest.fixture
def page(browser):
    """A fresh tab (its own context: no storage shared with other tests)."""
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    yield context.new_page()
    context.close()


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


def test_page_classifies_an_upload_like_the_api(server, page, tmp_path):
    image_path = _sunset(tmp_path)
    text = "Best sunset of the summer, feeling grateful"
    api = _api_labels(server, image_path, text)
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

    assert error_box == ""
    assert problems == []
    assert shown == api and all(label in LABELS for label in shown.values())
    outside = [url for url in requests
               if not url.startswith((server.url, "blob:", "data:"))]
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert screenshot.stat().st_size > 5_000


@pytest.mark.slow  # a keyed server of its own
def test_page_asks_for_the_key_once_per_tab(browser, tmp_path):
    image_path = _sunset(tmp_path)
    text = "rainy commute again"
    with running_server("tiny-llava", api_key="page-secret") as keyed:
        api = _api_labels(keyed, image_path, text, {"Authorization": "Bearer page-secret"})
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(keyed.url + "/")
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
            fresh_tab = context.new_page()  # another tab starts without it
            fresh_tab.goto(keyed.url + "/")
            fresh_tab.wait_for_selector("#auth", state="visible")
        finally:
            context.close()
    assert shown == api and stored == "page-secret"

def _api_explanation(server, image_path: Path, text: str) -> dict:
    return httpx.post(server.url + "/v1/explain",
                      files={"image": ("p.png", image_path.read_bytes(), "image/png")},
                      data={"text": text}, timeout=60).json()


def _ranked(answer: dict, slot: str) -> list[tuple[str, float]]:
    """The words by drop, most supporting first, as the page lists them (a stable sort)."""
    return sorted(((w["word"], w["drop"][slot]) for w in answer["words"]), key=lambda w: -w[1])


def _shown_words(page) -> list[tuple[str, float]]:
    return [(word, float(drop)) for word, drop in page.eval_on_selector_all(
        "#explain-words li", "items => items.map(i => [i.dataset.word, i.dataset.drop])")]


def test_the_explain_view_shows_words_and_heatmap_and_works_from_the_keyboard(
        server, page, tmp_path):
    from playwright.sync_api import expect

    image_path = _sunset(tmp_path)
    text = "Best sunset of the summer"
    api = _api_explanation(server, image_path, text)
    explains, problems = [], []
    page.on("request", lambda r: r.url.endswith("/v1/explain") and explains.append(r))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server.url + "/")
    _wait_for_model_line(page, "tiny-llava")
    hidden_before = not page.is_visible("#explain-toggle")
    _classify_on_page(page, image_path, text)

    page.focus("#submit")  # the toggle is next in the focus order
    page.keyboard.press("Tab")
    focus_order = [page.evaluate("document.activeElement.id")]
    page.keyboard.press("Enter")
    expect(page.locator("#explain")).to_have_attribute("data-state", "done", timeout=60_000)
    expanded = page.get_attribute("#explain-toggle", "aria-expanded")
    multimodal_words = _shown_words(page)
    heatmap = page.eval_on_selector("#explain-heatmap", """canvas => {
        const pixels = canvas.getContext("2d").getImageData(
            0, 0, canvas.width, canvas.height).data;
        const colours = new Set();
        for (let i = 0; i < pixels.length; i += 4 * 97) colours.add(pixels[i]);
        return {grid: Number(canvas.dataset.grid), width: canvas.width,
                strongest: Number(canvas.dataset.strongest),
                label: canvas.getAttribute("aria-label"), colours: colours.size};
    }""")
    page.keyboard.press("Tab")  # into the panel: the slot to explain
    focus_order.append(page.evaluate("document.activeElement.id"))
    page.keyboard.press("ArrowDown")  # multimodal -> text, from the keyboard
    expect(page.locator("#explain-slot")).to_have_value("text")
    text_words = _shown_words(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve_page_explain.png"), full_page=True)

    page.focus("#explain-toggle")
    page.keyboard.press("Space")  # closes ...
    closed = (page.get_attribute("#explain-toggle", "aria-expanded"),
              page.is_visible("#explain"))
    page.keyboard.press("Space")  # ... and opens again, without asking again
    reopened = page.is_visible("#explain-words li")

    assert problems == []
    assert hidden_before and focus_order == ["explain-toggle", "explain-slot"]
    assert expanded == "true" and closed == ("false", False) and reopened
    assert len(explains) == 1
    for shown, slot in ((multimodal_words, "multimodal"), (text_words, "text")):
        want = _ranked(api, slot)
        assert [word for word, _ in shown] == [word for word, _ in want]
        assert [drop for _, drop in shown] == pytest.approx([drop for _, drop in want], abs=1e-6)
    cells = [drop for row in api["regions"]["drop"]["multimodal"] for drop in row]
    strongest = max(range(len(cells)), key=lambda i: abs(cells[i]))
    assert heatmap["grid"] == api["regions"]["grid"] and heatmap["strongest"] == strongest
    assert heatmap["width"] == 336 and heatmap["colours"] > 20  # the image under the cells
    assert f"row {strongest // heatmap['grid'] + 1}, column" in heatmap["label"]
