"""The web UI in a real browser: Playwright driving Debian's `chromium-headless-shell` against a real
`toonbooth serve` (tiny neural models): upload the sample photo, Generate, see the progress bar move
and the avatar appear; a screenshot is saved in the test's output folder."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from api_server import running_server

CHROMIUM = Path("/usr/bin/chromium-headless-shell")
INSTALL_HINT = (
    f"{CHROMIUM} is missing: install it with "
    "`apt-get update && apt-get install -y --no-install-recommends chromium-headless-shell` (CI does this in .ci/run)"
)


@pytest.fixture(scope="module")
def ui_server(tiny_models_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ui") / "data"
    env = {
        "TOONBOOTH_UI_CHECKPOINT": "tiny-sdxl",
        "TOONBOOTH_UI_CONTROLNET": "tiny-sdxl-canny",
        "TOONBOOTH_UI_LORA": "tiny-memoji",
        "TOONBOOTH_UI_STEPS": "40",
        "TOONBOOTH_UI_MAX_SIDE": "64",
        "TOONBOOTH_UI_BACKEND": "neural",
    }
    with running_server(tiny_models_dir, data_dir, env=env) as server:  # loopback, no users: local mode
        yield server


def test_memoji_tab_generates_with_moving_progress(ui_server, sample_photo_path, tmp_path):
    assert CHROMIUM.exists(), INSTALL_HINT
    from playwright.sync_api import sync_playwright

    assert httpx.get(ui_server.url + "/", follow_redirects=False).headers["location"].startswith("/ui")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(ui_server.url + "/ui/")
            page.get_by_text("Memoji").first.wait_for()
            # 1. Upload the sample photo: its preview appears
            page.locator("#tb-photo input[type=file]").set_input_files(str(sample_photo_path))
            page.locator("#tb-photo img").first.wait_for()
            page.locator("#tb-gender").get_by_text("female").click()
            # 2. Generate, and watch the progress bar
            page.locator("#tb-generate").click()
            percents: list[float] = []
            deadline = time.monotonic() + 120
            result = page.locator("#tb-result img")
            while time.monotonic() < deadline:
                bar = page.locator("#tb-progress")
                if bar.count():
                    value = bar.first.get_attribute("data-percent")
                    if value is not None and (not percents or percents[-1] != float(value)):
                        percents.append(float(value))
                if result.count() and result.first.get_attribute("src"):
                    break
                time.sleep(0.05)
            # 3. The result is there, with the backend that made it
            assert result.count() and result.first.get_attribute("src"), (
                f"no result image; progress {percents}"
            )
            page.locator("#tb-info").get_by_text("neural").first.wait_for()
            assert "avatar" in page.locator("#tb-download").inner_text()  # the final image, not pass 1
            moving = [p for p in percents if 0 < p < 100]
            assert len(moving) >= 2, f"the progress bar did not move visibly: {percents}"
            assert percents == sorted(percents) and percents[-1] == 100.0
            page.screenshot(path=str(tmp_path / "memoji-ui.png"), full_page=True)
            assert (tmp_path / "memoji-ui.png").stat().st_size > 10_000
            # 4. The gallery shows it; the status page lists the models
            page.get_by_role("tab", name="My results").click()
            page.locator("#tb-gallery img").first.wait_for()
            page.get_by_role("tab", name="Models & status").click()
            page.get_by_text("tiny-sdxl-canny").first.wait_for()
            page.screenshot(path=str(tmp_path / "status-ui.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_api_docs_render_offline(ui_server, tmp_path):
    """`/docs` (Swagger UI) renders with its assets from the server itself: every request the page makes goes
    to the server (none to a CDN), and the operations are listed."""
    assert CHROMIUM.exists(), INSTALL_HINT
    from playwright.sync_api import sync_playwright

    hosts: set[str] = set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: hosts.add(req.url.split("/")[2]))
            page.goto(ui_server.url + "/docs")
            page.get_by_text("/v1/jobs").first.wait_for(timeout=30_000)
            assert page.locator(".swagger-ui").count() == 1
            page.screenshot(path=str(tmp_path / "docs.png"))
        finally:
            browser.close()
    assert hosts == {ui_server.url.split("/")[2]}, hosts
