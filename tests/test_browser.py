"""The app in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

Runs `python app.py` as a user would (its own process, temporary runs and map-cache folders),
then: an upload on Rotation gets its answer, a short digits training draws its curve and ends with
held-out metrics, the embedding maps render. Screenshots go to test-artifacts/ for a human look.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, free_port):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
               SSL_RUNS_DIR=str(tmp_path_factory.mktemp("runs")), SSL_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))
    log = open(tmp_path_factory.mktemp("log") / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("app.py did not start listening within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(app_url)
        pg.get_by_role("tab", name="Rotation").wait_for(timeout=30_000)
        yield pg
        browser.close()


def _shot(page, name: str) -> None:
    # Output images arrive as separate requests after the answer text: wait for them to be drawn.
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_rotation_upload_gets_an_answer(page) -> None:
    page.get_by_role("tab", name="Rotation").click()
    _shot(page, "01-rotation-empty")
    page.locator("input[type=file]").first.set_input_files(str(ROOT / "assets/examples/digit-7-turned-90.png"))
    answer = page.get_by_text("The image looks turned")
    answer.wait_for(timeout=30_000)
    assert "90°" in answer.inner_text()
    page.get_by_text("turned 270° → guess").first.wait_for(timeout=10_000)  # the four-turns gallery
    _shot(page, "02-rotation-answer")


def test_drawing_gets_an_answer(page) -> None:
    before = page.locator("img:visible").evaluate_all("els => els.map(e => e.src).join(' ')")
    page.get_by_role("tab", name="Draw").click()
    page.get_by_role("button", name="Brush").click()
    canvas = page.locator("canvas:visible").last
    canvas.wait_for(timeout=15_000)
    box = canvas.bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]

    def stroke(points) -> None:  # noqa: ANN001
        page.mouse.move(x0 + points[0][0] * w, y0 + points[0][1] * h)
        page.mouse.down()
        for px, py in points[1:]:
            page.mouse.move(x0 + px * w, y0 + py * h, steps=8)
        page.mouse.up()

    # A "7" lying on its side: the top bar runs down the left, the stem goes right.
    stroke([(0.3, 0.2), (0.3, 0.8)])
    stroke([(0.3, 0.8), (0.8, 0.45)])
    # The answer to the drawing replaces the upload's: new output images, a new sentence.
    page.wait_for_function("""before => { const src = Array.from(document.images).filter(i => i.offsetParent)
        .map(i => i.src).join(' '); return src !== before && src.includes('image.png'); }""", arg=before, timeout=30_000)
    page.get_by_text("The image looks turned").wait_for(timeout=30_000)
    _shot(page, "02b-rotation-drawn")


def test_similarity_example_pair(page) -> None:
    page.get_by_role("tab", name="Similarity").click()
    page.get_by_role("button", name="Compare").wait_for()
    page.locator("tbody tr:visible").first.click()  # several inputs: examples are a table
    page.get_by_text("What the threshold means").wait_for(timeout=30_000)
    _shot(page, "03-similarity")


def test_short_training_draws_its_curve(page) -> None:
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Epochs").fill("4")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Started siamese on digits").wait_for(timeout=15_000)
    bar = page.locator(".ssl-progress")
    deadline = time.monotonic() + 60
    while bar.get_attribute("data-status") != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    # The loss curve gets points while training runs: plotly draws one path per trace.
    page.locator(".js-plotly-plot .scatterlayer .trace path.js-line").first.wait_for(timeout=30_000)
    _shot(page, "04-training-running")
    page.get_by_text("Finished.").wait_for(timeout=120_000)
    assert "test split" in page.locator("body").inner_text()
    _shot(page, "05-training-finished")


def test_embedding_maps_render(page) -> None:
    page.get_by_role("tab", name="Embeddings").click()
    page.get_by_role("button", name="Show maps").click()
    page.get_by_text("5-NN accuracy of the trained embedding").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # let plotly finish laying out before the picture
    _shot(page, "06-embeddings")
