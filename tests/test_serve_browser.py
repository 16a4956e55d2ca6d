"""The playground in a real headless browser: Debian's chromium driven by Playwright (never a downloaded browser)."""

import shutil

import pytest

from serve_helpers import Server, tiny_checkpoints

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")


@pytest.mark.slow
def test_playground_streams_stops_and_fills_masks(tmp_path):
    checkpoints = tiny_checkpoints(tmp_path / "models")
    server = Server(str(checkpoints["slow"]), f"--model=mlm={checkpoints['mlm']}",
                    f"--model=tagger={checkpoints['tagger']}", "--api-key", "k")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#api-key", "k")
            page.dispatch_event("#api-key", "change")
            page.wait_for_function("document.querySelectorAll('#model option').length == 3")
            # stream a long generation, then stop it
            page.select_option("#model", "slow")
            page.select_option("#task", "text-generation")
            page.fill("#input", "the cat")
            page.fill("#max-tokens", "3000")
            page.click("#run")
            page.wait_for_function("document.getElementById('output').textContent.length > 20")
            assert "time to first token" in page.text_content("#stats")
            page.click("#stop")
            page.wait_for_function("document.getElementById('stats').textContent.includes('stopped')")
            stopped_at = len(page.text_content("#output"))
            page.wait_for_timeout(500)
            assert len(page.text_content("#output")) == stopped_at  # nothing arrives after Stop
            assert not page.is_disabled("#run")
            # fill-mask shows its top-k table
            page.select_option("#model", "mlm")
            page.select_option("#task", "fill-mask")
            page.fill("#input", "the cat [MASK] on the mat .")
            page.click("#run")
            page.wait_for_selector("#fill-mask-table")
            assert page.locator("#fill-mask-table tr").count() == 6  # header + top 5
            # embeddings: a similarity matrix of the lines
            page.select_option("#task", "feature-extraction")
            page.fill("#input", "the cat\nthe dog\na film")
            page.click("#run")
            page.wait_for_selector("#similarity")
            assert page.locator("#similarity tr").count() == 4
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            assert (tmp_path / "playground.png").stat().st_size > 1000
            browser.close()
    finally:
        server.stop()
