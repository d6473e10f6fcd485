"""The A/B player (app/abplayer.py): the page it makes, and the player in headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.abplayer import MAX_TOTAL_BYTES, player_html
from neurochip.io.audio import Audio
from tests.test_browser import CHROMIUM, FLAGS, serving

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100


def tone(hz: float, seconds: float = 3.0, rate: int = RATE) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio(0.5 * np.sin(2 * np.pi * hz * t), rate)


def wav(audio: Audio) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.samples.T, audio.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# --- the page ---------------------------------------------------------------------------------


def test_the_page_holds_every_source_in_order_and_no_network():
    sketch, take, pair = wav(tone(440)), wav(tone(880)), wav(tone(660))
    html = player_html({"Sketch": sketch, "Take": take, "Pair": pair}, key="k")
    for label, data in (("Sketch", sketch), ("Take", take), ("Pair", pair)):
        assert f'"label": "{label}"' in html
        assert base64.b64encode(data).decode() in html
    assert html.index('"Sketch"') < html.index('"Take"') < html.index('"Pair"')
    assert "http://" not in html and "https://" not in html  # no CDN, nothing to fetch
    assert "__CONFIG__" not in html


def test_audio_objects_become_wav_and_the_same_arguments_the_same_page():
    sources = {"A": tone(440), "B": tone(880, seconds=2.0)}
    html = player_html(sources, key="k", loop=(1.0, 9.0))
    assert base64.b64encode(wav(sources["A"])).decode() in html
    assert '"loop": [1.0, 2.0]' in html  # cut to the shortest source
    # A rerun must not reload a playing player: same input, same page.
    assert player_html(sources, key="k", loop=(1.0, 9.0)) == html


def test_labels_cannot_close_the_script():
    html = player_html({"</script><b>x": wav(tone(440)), "B": wav(tone(880))}, key="k")
    assert "</script><b>" not in html
    assert "\\u003c/script\\u003e\\u003cb\\u003ex" in html


@pytest.mark.parametrize("count", [0, 1, 5])
def test_two_to_four_sources(count):
    sources = {f"S{i}": wav(tone(440 + i)) for i in range(count)}
    with pytest.raises(ValueError, match="2 to 4 sources"):
        player_html(sources, key="k")


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"A": b"", "B": b"x"}, "'A' is empty"),
        ({"A": Audio(np.zeros((1, 0)), RATE), "B": tone(440)}, "'A' is empty"),
        ({"A": tone(440), "B": b"not a sound file"}, "'B' is not audio"),
        ({"A": tone(440), "": tone(880)}, "needs a label"),
        ({"A": tone(440), "B": "sound.wav"}, "must be an Audio or file bytes"),
    ],
)
def test_bad_sources_say_which(sources, message):
    with pytest.raises(ValueError, match=message):
        player_html(sources, key="k")


@pytest.mark.parametrize(
    ("loop", "message"),
    [((2.0, 1.0), "start < end"), ((-1.0, 1.0), "start < end"), ((3.5, 4.0), "after the end")],
)
def test_the_loop_must_be_inside_the_clips(loop, message):
    with pytest.raises(ValueError, match=message):
        player_html({"A": tone(440), "B": tone(880)}, key="k", loop=loop)


def test_too_much_audio_is_refused(monkeypatch):
    monkeypatch.setattr("app.abplayer.MAX_TOTAL_BYTES", 100_000)
    with pytest.raises(ValueError, match="Pass a region"):
        player_html({"A": tone(440), "B": tone(880)}, key="k")
    assert 10 * len(wav(tone(440, seconds=5))) < MAX_TOTAL_BYTES


# --- in the browser ---------------------------------------------------------------------------

SCRIPT = """
import sys

sys.path.insert(0, {root!r})

import numpy as np
import streamlit as st

from app.abplayer import ab_player
from neurochip.io.audio import Audio

t = np.arange(3 * 44100) / 44100
low = Audio(0.5 * np.sin(2 * np.pi * 440 * t), 44100)
takes = st.session_state.setdefault("takes", 0)
hz = 660 if takes % 2 else 880
high = Audio(0.5 * np.sin(2 * np.pi * hz * t), 44100)
st.title("A/B test")
ab_player({{"Low": low, "High": high}}, key="test", loop=(0.5, 1.5))
st.session_state.runs = st.session_state.get("runs", 0) + 1
st.button("Rerun the page")
st.write(f"Page run {{st.session_state.runs}}")
st.button("New take", on_click=lambda: st.session_state.update(takes=takes + 1))
"""


@pytest.fixture
def player_url(tmp_path):
    script = tmp_path / "ab_page.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(ROOT))))
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.port", "{port}", "--server.address", "127.0.0.1"]
    command += ["--server.headless", "true", "--server.fileWatcherType", "none"]
    command += ["--browser.gatherUsageStats", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with serving(command, tmp_path / "streamlit.log", cwd=tmp_path, env=env) as url:
        yield url


def test_switching_keeps_the_position_and_the_loop_wraps(player_url):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        page.goto(player_url)
        frame_element = page.locator("iframe[title^='A/B player']")
        expect(frame_element).to_be_visible()
        player = page.frame_locator("iframe[title^='A/B player']")
        frame = frame_element.element_handle().content_frame()
        root = player.locator("#player")
        expect(root).to_have_attribute("data-state", "ready")
        expect(player.get_by_role("button", name="A: Low")).to_have_attribute(
            "aria-pressed", "true"
        )
        expect(player.get_by_text("Click the player first")).to_be_visible()

        # Play with a real click (a user gesture: it lets the AudioContext start).
        player.get_by_role("button", name="Play").click()
        frame.wait_for_function("window.abPlayer.currentTime() > 0.3")
        assert frame.evaluate("window.abPlayer.contextState()") == "running"
        expect(root).to_have_attribute("data-playing", "true")
        frame.wait_for_function("Math.abs(window.abPlayer.peakHz() - 440) < 20")

        now = (
            "[window.abPlayer.currentTime(), window.abPlayer.clock(), window.abPlayer.startedFrom]"
        )

        def switch(action, expected: int) -> None:
            """Switch with ``action``: playback goes on from the same place, with the clock.

            The clock is the audio clock every source plays by, so however long the click
            takes, the position must have moved by exactly as much (around the 1 s loop).
            """
            before = frame.evaluate(now)
            action()
            frame.wait_for_function(f"window.abPlayer.active === {expected}")
            after = frame.evaluate(now)
            assert after[2] == before[2]  # not started again
            moved, elapsed = after[0] - before[0], after[1] - before[1]
            off = (moved - elapsed) % 1.0
            assert min(off, 1.0 - off) < 0.05, (before, after)

        # Click B: the high tone is what comes out, at the same place.
        switch(lambda: player.get_by_role("button", name="B: High").click(), 1)
        expect(root).to_have_attribute("data-active-label", "High")
        expect(player.locator("#now")).to_have_text("B: High")
        expect(player.get_by_role("button", name="B: High")).to_have_attribute(
            "aria-pressed", "true"
        )
        expect(player.get_by_role("button", name="A: Low")).to_have_attribute(
            "aria-pressed", "false"
        )
        frame.wait_for_function("Math.abs(window.abPlayer.peakHz() - 880) < 20")
        # Keys (the frame has focus since the click): A, then B again.
        switch(lambda: page.keyboard.press("a"), 0)
        frame.wait_for_function("Math.abs(window.abPlayer.peakHz() - 440) < 20")
        switch(lambda: page.keyboard.press("b"), 1)
        assert frame.evaluate("window.abPlayer.playing")

        # The loop (0.5 .. 1.5 s) wraps back to its start, and playback goes on.
        wrapped = frame.wait_for_function(
            """() => {
                const p = window.abPlayer.currentTime(), seen = (window.seen ??= {top: 0});
                if (p < seen.top - 0.5) return {p, top: seen.top};
                seen.top = Math.max(seen.top, p);
                return false;
            }""",
            polling=10,
        ).json_value()
        assert 0.5 <= wrapped["p"] < 0.8 and 1.3 < wrapped["top"] <= 1.5, wrapped
        frame.wait_for_function(f"window.abPlayer.currentTime() > {wrapped['p']} + 0.1")

        # L turns the loop off and on.
        page.keyboard.press("l")
        expect(root).to_have_attribute("data-loop", "false")
        page.keyboard.press("l")
        expect(root).to_have_attribute("data-loop", "true")

        # Space pauses (once, though the Pause button has focus) and plays on from there.
        player.get_by_role("button", name="Pause").focus()
        page.keyboard.press(" ")
        expect(root).to_have_attribute("data-playing", "false")
        paused = frame.evaluate("window.abPlayer.currentTime()")
        page.keyboard.press(" ")
        expect(root).to_have_attribute("data-playing", "true")
        assert frame.evaluate("window.abPlayer.startedFrom") == paused

        # A rerun of the page sends the same HTML: the frame is not reloaded, it keeps playing.
        frame.evaluate("window.marker = 'still me'")
        page.get_by_role("button", name="Rerun the page").click()
        expect(page.get_by_text("Page run 2")).to_be_visible()
        assert frame.evaluate("window.marker") == "still me"
        assert frame.evaluate("window.abPlayer.playing")

        # A new take is a new page in the frame: it plays on, with B (the browser lets a frame
        # with allow="autoplay" start sound by itself once the page has been clicked).
        frame = new_take(page, frame_element, "Page run 3")
        assert frame.evaluate("window.abPlayer.active") == 1
        frame.wait_for_function("window.abPlayer.playing && window.abPlayer.currentTime() > 0.5")
        frame.wait_for_function("Math.abs(window.abPlayer.peakHz() - 660) < 20")

        # Paused, it stays paused, where it was.
        frame.evaluate("window.abPlayer.pause(); window.abPlayer.seek(1.234)")
        frame = new_take(page, frame_element, "Page run 4")
        assert frame.evaluate("[window.abPlayer.playing, window.abPlayer.currentTime()]") == [
            False,
            pytest.approx(1.234, abs=1e-6),
        ]
        expect(player.locator("#player")).to_have_attribute("data-active-label", "High")
        browser.close()


def new_take(page, frame_element, run: str):
    """Click "New take" (the page changes, so the frame loads anew); its new frame, ready."""
    from playwright.sync_api import expect

    frame_element.element_handle().content_frame().evaluate("window.marker = 'old'")
    page.get_by_role("button", name="New take").click()
    expect(page.get_by_text(run)).to_be_visible()
    page.wait_for_function(
        """() => {
            const w = document.querySelector("iframe[title^='A/B player']")?.contentWindow;
            return w && w.marker === undefined && w.abPlayer?.ready;
        }"""
    )
    return frame_element.element_handle().content_frame()
