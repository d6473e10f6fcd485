"""A render belongs to the workspace, not to the browser tab that started it (issue 23).

In a real browser, as tests/test_browser.py drives the app: a refresh in the middle of a
render finds it running, with its progress and its Cancel, and the Takes page lists it; a
server killed in the middle of a render says so at its next start (``workspace/jobs.json``).

The renders here are long on purpose (a minute of sketch, a stereo pair, every step at full
denoise: minutes with the tiny model on a CPU), so that they are still under way whatever the
page does meanwhile; the tests never wait for them to end: one cancels, one kills the server.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import soundfile as sf

from tests.chiptune import make_chiptune
from tests.test_browser import (
    CHROMIUM,
    FLAGS,
    app_command,
    auto_preview_off,
    open_page,
    screenshot_path,
    serving,
    serving_process,
)

#: The sketch's length: long enough that its render outlasts a refresh and two page changes
#: on a slow, busy machine.
SKETCH_S = 60.0


def long_sketch(tmp_path: Path) -> Path:
    tune = tmp_path / "long-sketch.wav"
    sf.write(tune, make_chiptune(SKETCH_S).T, 44100, subtype="PCM_16")
    return tune


def rendering(page):
    """The render's progress bar on Arrange ("Rendering: denoising · 12 s elapsed ...")."""
    return page.get_by_test_id("stProgress").filter(has_text="Rendering")


def start_a_long_render(page, tune: Path) -> None:
    """Upload ``tune``, make its render as long as the settings allow (every step, full
    denoise, a stereo pair) and start it; returns once it is rendering."""
    from playwright.sync_api import expect

    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(tune)
    expect(page.get_by_text(f"({SKETCH_S:.2f} s)")).to_be_visible()  # loaded: its length
    auto_preview_off(page)  # no preview work beside the render
    for label, top in (("Steps", "100"), ("Denoise", "1")):
        slider = page.get_by_test_id("stSlider").filter(has_text=label).first
        thumb = slider.get_by_role("slider")
        thumb.focus()
        thumb.press("End")  # as far as it goes, with the keyboard
        expect(thumb).to_have_value(top)
    expect(page.get_by_role("checkbox", name="Stereo pair")).to_be_checked()  # two takes
    page.get_by_role("button", name="Render", exact=True).click()
    expect(rendering(page)).to_be_visible()
    # Under way, not waiting for the preview the upload started: mid-render.
    expect(rendering(page)).not_to_contain_text("waiting")


def test_a_refresh_mid_render_shows_the_render_and_its_cancel_works(tiny_model_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    tune = long_sketch(tmp_path)
    command = app_command(tiny_model_dir, tmp_path)
    with serving(command, tmp_path / "app.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, url)
        start_a_long_render(page, tune)

        # A refresh is a new page session: the render is still there, with its Cancel.
        page.reload()
        expect(page.get_by_text(tune.name).first).to_be_visible()
        expect(rendering(page)).to_be_visible()
        cancel = page.get_by_role("button", name="Cancel render")
        expect(cancel).to_be_visible()
        expect(page.get_by_text("Render cancelled")).to_have_count(0)
        if os.environ.get("NEUROCHIP_SCREENSHOTS"):
            rendering(page).scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot_path(tmp_path).with_name("arrange-refresh.png")))

        # The Takes page lists the render under way.
        page.get_by_role("link", name="Takes").click()
        expect(page.get_by_text("No takes yet")).to_be_visible()  # none finished yet
        under_way = page.get_by_test_id("stProgress").filter(has_text="The render of")
        expect(under_way).to_be_visible()
        expect(under_way).to_contain_text(tune.name)

        # Back on Arrange, Cancel stops it.
        page.get_by_role("link", name="Arrange").click()
        cancel = page.get_by_role("button", name="Cancel render")
        expect(cancel).to_be_visible()
        cancel.click()
        expect(page.get_by_text("Render cancelled")).to_be_visible()
        expect(rendering(page)).to_have_count(0)
        expect(page.get_by_role("button", name="Render", exact=True)).to_be_enabled()
        browser.close()


def test_a_restart_mid_render_says_the_render_was_interrupted(tiny_model_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    tune = long_sketch(tmp_path)
    command = app_command(tiny_model_dir, tmp_path)  # both servers: the same --home
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        with serving_process(command, tmp_path / "app.log") as (url, process):
            page = open_page(browser, url)
            start_a_long_render(page, tune)
            process.send_signal(signal.SIGKILL)  # the server dies in the middle of the render
            process.wait(30)
            page.close()

        with serving(command, tmp_path / "app-again.log") as url:
            page = open_page(browser, url)
            notice = page.get_by_text("NeuroChip stopped during the render of")
            expect(notice).to_be_visible()
            expect(notice).to_contain_text(tune.name)
            page.get_by_role("button", name="OK", exact=True).click()
            expect(notice).to_have_count(0)
        browser.close()
