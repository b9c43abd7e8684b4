"""The real page in headless Chromium (Debian's ``chromium``, driven by Playwright; no browser
download): load a model, draw a mask with the brush, build two classes from mask files, segment
two queries, download the zip and compare its masks with ``hmfss predict --support-dir``'s.

Every step waits for the server's acknowledgement in the page (a status text naming the file
just uploaded or the class just added), never for a fixed time, so a slow machine only makes
it slower. Set HMFSS_APP_SCREENSHOT=PATH to also save a screenshot of the page with results.
"""

import importlib.util
import io
import os
import shutil
import socket
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmfss.cli.main import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Gradio and Playwright are imported by the fixtures only: importing Gradio takes seconds, and
# every test process collects this module while only one runs it
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="Gradio is not installed (pip install -e '.[app]')"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="Playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no Chromium (Debian: apt-get install chromium)"),
    pytest.mark.xdist_group("browser"),  # one server and one browser for the module
]
TIMEOUT_MS = 90_000  # any one step; generous for a loaded CI machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def page_url():
    from hmfss.app.ui import build_app

    port = _free_port()
    app = build_app("cpu", None)  # no model preloaded: the test picks it
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    with sync_api.sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, page_url):
    """A fresh page (a new Gradio session: empty support set) per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(page_url)
    yield tab
    context.close()


def _load_model(tab, ckpt: Path) -> None:
    tab.fill("#ckpt_path textarea, #ckpt_path input", str(ckpt))
    tab.click("#load_model")
    tab.wait_for_selector("#model_info:has-text('HSNET with efficientnet-lite0')")


def _upload(tab, button: str, path: Path) -> None:
    """Click an upload button and pick ``path`` in the file chooser it opens."""
    with tab.expect_file_chooser() as chooser:
        tab.click(button)
    chooser.value.set_files(str(path))


def _upload_image(tab, image: Path) -> None:
    _upload(tab, "#support_image", image)
    tab.wait_for_selector(f"#pending_info:has-text('support image {image.name}')")


def _add_example(tab, name: str, image: Path, mask: Path) -> None:
    tab.fill("#class_name textarea, #class_name input", name)
    _upload_image(tab, image)
    _upload(tab, "#support_mask", mask)
    tab.wait_for_selector(f"#pending_info:has-text('mask file {mask.name}')")
    tab.click("#add_example")
    tab.wait_for_selector(f"#support_info li:has-text('{name}')")
    tab.wait_for_selector(f"#pending_info:has-text('Added {image.name}')")


def _wait_for_painted(canvas, timeout_s: float) -> None:
    """Wait until the editor canvas shows the (random-noise) support image, not a blank area."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), np.float32)
        if shot.std() > 20:
            return
        time.sleep(0.3)
    raise AssertionError("the editor never showed the support image")


def test_brush_strokes_give_a_non_empty_mask(page, app_files):
    _load_model(page, app_files["ckpt"])
    page.fill("#class_name textarea, #class_name input", "drawn")
    _upload_image(page, app_files["support"] / "cat" / "images" / "cat1.png")
    canvas = page.locator("#support_editor canvas").first
    _wait_for_painted(canvas, TIMEOUT_MS / 1000)
    page.click("#support_editor button[aria-label=Brush]")
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy - 30)
    page.mouse.down()
    for step in range(4):  # few events: each one redraws the canvas (~0.5 s in headless Chromium)
        page.mouse.move(cx - 60 + 30 * step, cy - 30 + 15 * step)
    page.mouse.up()
    page.click("#add_example")
    info = page.locator("#support_info li", has_text="drawn")
    info.wait_for()
    pixels = int(info.inner_text().split("(mask ")[1].split(" px")[0])
    assert pixels > 0


def test_two_classes_two_queries_gallery_and_zip_equal_the_cli(page, app_files, tmp_path):
    _load_model(page, app_files["ckpt"])
    for name in ("cat", "dog"):
        folder = app_files["support"] / name
        _add_example(page, name, folder / "images" / f"{name}1.png", folder / "masks" / f"{name}1.png")
    assert page.locator("#support_info li").count() == 2
    queries = sorted(app_files["queries"].iterdir())
    page.set_input_files("#queries input[type=file]", [str(q) for q in queries])
    page.wait_for_selector(f"#query_info:has-text('{len(queries)} query image(s) uploaded')")
    page.click("#segment")
    page.wait_for_selector("#table:has-text('q1')")
    assert page.locator("#gallery img").count() == 2
    if os.environ.get("HMFSS_APP_SCREENSHOT"):
        page.screenshot(path=os.environ["HMFSS_APP_SCREENSHOT"], full_page=True)
    with page.expect_download() as download:
        page.click("#download")
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    stems = [q.stem for q in queries]
    expected = {"labels.json"} | {f"{s}_{kind}.png" for s in stems for kind in
                                  ("labels", "overlay", "mask_cat", "mask_dog")}
    assert set(archive.namelist()) == expected
    cli = tmp_path / "cli"
    assert main(["predict", "--checkpoint", str(app_files["ckpt"]), "--support-dir", str(app_files["support"]),
                 "--query", *map(str, queries), "--out", str(cli)]) == 0
    assert archive.read("labels.json") == (cli / "labels.json").read_bytes()
    for name in expected - {"labels.json"}:
        if "overlay" not in name:
            ours = np.array(Image.open(io.BytesIO(archive.read(name))))
            assert np.array_equal(ours, np.array(Image.open(cli / name))), name
