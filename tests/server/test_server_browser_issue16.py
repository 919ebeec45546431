"""Issue 16 in Debian's chromium (headless, Playwright): a page from another origin cannot write, and the
page shows its work (busy, confirmations, saved versions, brush, tab hand-over, upload warnings, layout).

Skipped with a reason when chromium or Playwright is missing.
"""

from __future__ import annotations

import functools
import http.server
import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from server_helpers import ServerProcess
from test_server_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, click_pixel

ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>attack</title><script>
window.done = (async () => {
  const target = "%(target)s";
  const body = new Blob([new Uint8Array(%(png)s)]);
  const attempts = [
    fetch(target + "api/uploads?filename=evil.png", {method: "POST", mode: "no-cors", body,
      headers: {"Content-Type": "text/plain"}}),
    fetch(target + "api/images/%(image)s/clicks", {method: "POST", mode: "no-cors",
      body: JSON.stringify({row: 100, col: 100, label: 1}), headers: {"Content-Type": "text/plain"}}),
    fetch(target + "api/model/versions", {method: "POST", mode: "no-cors"}),
  ];
  const results = await Promise.allSettled(attempts);
  return results.map((result) => result.status);
})();
</script>"""


@pytest.fixture
def browser_and_server(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    server = ServerProcess(["--model", str(tiny_checkpoint), "--store", str(tmp_path / "store")])
    url = server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield browser, url
            finally:
                browser.close()
    finally:
        server.stop()


def open_page(browser: Any, url: str, width: int = 1400, height: int = 850) -> Any:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def open_image(page: Any, index: int) -> None:
    page.locator("#image-list li").nth(index).click()
    page.wait_for_selector("#canvas[data-state]")
    image_id = page.locator("#image-list li").nth(index).get_attribute("data-image-id")
    page.wait_for_function(f"window.clickadapt.state.current === {image_id!r}")


@pytest.mark.slow
def test_a_page_from_another_origin_cannot_write(browser_and_server: tuple[Any, str], tmp_path: Path) -> None:
    browser, url = browser_and_server
    with httpx.Client(base_url=url, timeout=60) as api:
        images = api.get("/api/images").json()
        versions = api.get("/api/model").json()["versions"]
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(buffer, format="PNG")
    site = tmp_path / "attacker"
    site.mkdir()
    page_text = ATTACK_PAGE % {"target": url, "png": list(buffer.getvalue()), "image": images[0]["id"]}
    (site / "index.html").write_text(page_text)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a second loopback origin
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/index.html")
        statuses = page.evaluate("window.done")
        assert len(statuses) == 3  # every request was sent (no-cors: the page cannot read the answers)
    finally:
        attacker.shutdown()
    with httpx.Client(base_url=url, timeout=60) as api:
        assert api.get("/api/images").json() == images  # no upload, no click
        assert api.get("/api/model").json()["versions"] == versions  # no saved version
    # The server's own page still writes.
    own = open_page(browser, url)
    open_image(own, 0)
    click_pixel(own, 100, 100)
    own.wait_for_selector("#canvas[data-clicks='1']")
    assert own.errors == []


@pytest.mark.slow
def test_busy_confirmations_versions_brush_and_layout(browser_and_server: tuple[Any, str]) -> None:
    browser, url = browser_and_server
    page = open_page(browser, url)
    # 12. Nothing to undo, reset or finish before an image is open.
    for button in ("#undo", "#reset", "#finish"):
        assert page.locator(button).is_disabled(), button
    page.evaluate(
        """() => { window.busyLog = [];
        new MutationObserver(() => window.busyLog.push([document.getElementById('busy-text').textContent,
            document.getElementById('finish').disabled])).observe(document.getElementById('busy'),
            {attributes: true, childList: true, subtree: true}); }"""
    )
    open_image(page, 0)
    # 6. A click shows that the model is working.
    click_pixel(page, 128, 128)
    page.wait_for_selector("#canvas[data-clicks='1']")
    assert any(text == "segmenting…" for text, _ in page.evaluate("window.busyLog"))
    assert page.locator("#busy").is_hidden()
    click_pixel(page, 20, 20, button="right")
    page.wait_for_selector("#canvas[data-clicks='2']")
    # 8. Saved versions and what the model is doing; the per-update counter lives in the details.
    assert page.text_content("#saved-count") == "1" and page.text_content("#saved-version") == "v0"
    # the version list fits the panel: today's versions by their time, the full date and time as the tooltip
    option = page.locator("#version-select option").nth(0)
    assert re.fullmatch(r"v0 · initial · \d{1,2}:\d{2}( [AP]M)?", option.text_content() or "")
    assert (option.get_attribute("title") or "").startswith("saved ")
    assert page.text_content("#model-state") in ("learned from your clicks (saved when you finish)", "up to date")
    assert page.locator("#model-details").get_attribute("open") is None
    assert not page.locator("#model-version").is_visible()
    # 9. Brush a stripe, erase part of it.
    page.keyboard.press("b")
    box = page.locator("#canvas").bounding_box()
    view = page.evaluate(
        "({z: window.clickadapt.state.zoom, x: window.clickadapt.state.panX, y: window.clickadapt.state.panY})"
    )

    def at(row: float, col: float) -> tuple[float, float]:
        return box["x"] + view["x"] + (col + 0.5) * view["z"], box["y"] + view["y"] + (row + 0.5) * view["z"]

    page.mouse.move(*at(10, 10))
    page.mouse.down()
    for col in range(10, 120, 5):
        page.mouse.move(*at(10, col))
    page.mouse.up()
    page.wait_for_selector("#canvas[data-strokes='1']")
    page.keyboard.press("e")
    page.mouse.move(*at(10, 60))
    page.mouse.down()
    page.mouse.move(*at(10, 70))
    page.mouse.up()
    page.wait_for_selector("#canvas[data-strokes='2']")
    page.keyboard.press("c")
    # 7. Finish asks first; Escape keeps the image open.
    page.keyboard.press("f")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_function("!document.getElementById('confirm-dialog').open")
    assert page.get_attribute("#canvas", "data-state") == "in_progress"
    page.keyboard.press("r")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Enter")  # reset loses work: Enter presses Cancel
    page.wait_for_function("!document.getElementById('confirm-dialog').open")
    assert page.get_attribute("#canvas", "data-clicks") == "2"
    # 6. During finish: spinner, buttons disabled, a click is refused with a human message.
    held: list[Any] = []
    page.route("**/finish", lambda route: held.append(route))
    page.click("#finish")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Enter")  # finish: Enter confirms (F, Enter labels fast)
    page.wait_for_function("document.getElementById('busy-text').textContent.startsWith('adapting')")
    assert page.locator("#finish").is_disabled() and page.locator("#undo").is_disabled()
    assert page.text_content("#model-state") == "adapting…"
    click_pixel(page, 60, 60)
    assert "wait" in (page.text_content("#message") or "").lower()
    assert "409" not in (page.text_content("#message") or "")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(100)  # lets Playwright call the route handler
    held[0].continue_()
    page.unroute("**/finish")
    page.wait_for_selector("#canvas[data-state=done]")
    assert page.get_attribute("#canvas", "data-clicks") == "2"  # the refused click was not sent
    page.wait_for_function("document.getElementById('saved-count').textContent === '2'")  # after the refresh
    click_pixel(page, 60, 60)
    message = page.text_content("#message") or ""
    assert "Relabel" in message and "relabel=true" not in message and "409" not in message
    image_id = page.evaluate("window.clickadapt.state.current")
    with httpx.Client(base_url=url, timeout=60) as api:
        final = np.asarray(Image.open(io.BytesIO(api.get(f"/api/images/{image_id}/mask.png?tag=final").content)))
    assert final[10, 12:55].all() and not final[10, 64:67].any()  # painted, then erased
    # 7. Roll back asks first.
    page.click("#rollback")
    page.wait_for_selector("#confirm-dialog[open]")
    assert "Roll the shared model back" in page.text_content("#confirm-text")
    page.click("#confirm-cancel")
    assert page.text_content("#saved-count") == "2"
    # 12. Layout at common widths: Roll back visible, no sideways scroll; the image refits on resize.
    for width in (1280, 1440, 1920):
        page.set_viewport_size({"width": width, "height": 800})
        page.wait_for_function(f"window.innerWidth === {width}")
        rollback = page.locator("#rollback").bounding_box()
        assert rollback["x"] >= 0 and rollback["x"] + rollback["width"] <= width, (width, rollback)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.evaluate(
            "(() => { const r = document.getElementById('right'); return r.scrollWidth <= r.clientWidth; })()"
        )
        fits = page.evaluate(
            """(() => { const s = window.clickadapt.state;
            const r = document.getElementById('canvas').getBoundingClientRect();
            return s.panX >= 0 && s.panY >= 0 && s.panX + s.picture.naturalWidth * s.zoom <= r.width + 1
                && s.panY + s.picture.naturalHeight * s.zoom <= r.height + 1; })()"""
        )
        assert fits, width
    assert page.errors == []


@pytest.mark.slow
def test_a_closed_tab_hands_its_image_over_and_odd_uploads_are_flagged(
    browser_and_server: tuple[Any, str], tmp_path: Path
) -> None:
    browser, url = browser_and_server
    first = open_page(browser, url)
    open_image(first, 1)
    click_pixel(first, 128, 128)
    first.wait_for_selector("#canvas[data-clicks='1']")
    # 10. A second tab while the first is open: asked, in words, whether to take over.
    second = open_page(browser, url)
    second.locator("#image-list li").nth(1).click()
    second.wait_for_selector("#confirm-dialog[open]")
    text = second.text_content("#confirm-text") or ""
    image_id = first.evaluate("window.clickadapt.state.current")
    assert "open in another browser session" in text and image_id not in text
    second.click("#confirm-cancel")
    second.close()
    # Closing the first tab releases the image (pagehide beacon): a new tab opens it at once.
    first.close(run_before_unload=True)
    third = open_page(browser, url)
    open_image(third, 1)
    assert third.get_attribute("#canvas", "data-clicks") == "1"
    assert not third.locator("#confirm-dialog").get_attribute("open")
    # 11. A colour photograph on the brain server is flagged.
    rng = np.random.default_rng(0)
    photo = np.stack(
        [rng.integers(150, 255, (64, 64)), rng.integers(30, 90, (64, 64)), rng.integers(0, 40, (64, 64))], -1
    )
    path = tmp_path / "fundus.png"
    Image.fromarray(photo.astype(np.uint8)).save(path)
    third.set_input_files("#upload-input", str(path))
    third.wait_for_selector("#upload-warning:not([hidden])")
    assert "colour photograph" in (third.text_content("#upload-warning") or "")
    assert third.errors == []
