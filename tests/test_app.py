"""The app's pages, driven through Streamlit's AppTest (no browser; see test_browser.py)."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import threading

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from app import song as songs
from app import ui
from neurochip.errors import NeuroChipError
from neurochip.model_spec import ModelSpec
from neurochip.session import ComposerSession
from neurochip.settings import RenderSettings
from neurochip.sketch import load_sketch
from neurochip.workspace import Workspace
from tests.chiptune import make_chiptune

SR = 44100
TIMEOUT = 120


def wav_bytes(seconds: float = 6.0, rate: int = SR) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, make_chiptune(seconds, sr=rate).T, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def app_env(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tmp_path


def field(at: AppTest, kind: str, path: str):
    """The widget of ``kind`` that shows session field ``path`` ("settings.denoise"): its key
    is the path, then the song and bounds (app/state.py)."""
    found = [
        w for w in getattr(at, kind) if w.key and re.match(rf"{re.escape(path)}($|[:\[])", w.key)
    ]
    assert len(found) == 1, (path, [w.key for w in getattr(at, kind)])
    return found[0]


def session(at: AppTest) -> ComposerSession:
    """The page's session model (what every widget shows)."""
    return at.session_state["composer"]


def quiet(at: AppTest) -> None:
    """Before the first run: the session as the workspace holds it, with no auto preview (so a
    test decides when the model works)."""
    kept = Workspace().state()
    made = ComposerSession.from_dict(kept)
    if "model" not in kept:
        made.model = ModelSpec(source=os.environ["NEUROCHIP_MODEL"])
    made.view.auto_preview = False
    at.session_state["composer"] = made


def start(page: str | None = None, song: bool = True) -> AppTest:
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    if song:
        # AppTest cannot drive a file uploader: give the page what an upload produces.
        at.session_state["sketch"] = load_sketch(wav_bytes(), name="minuet.wav")
        at.session_state["upload_id"] = "test"
    quiet(at)
    at.run()
    if page:
        at.switch_page(page).run()
    wait_for_model(at)
    return at


def wait_for_model(at: AppTest) -> None:
    """The model loads on a thread of its own: wait for it, then run the page as its polling
    fragment would (a page without a song never asks for the model)."""
    if "model_job" in at.session_state:
        assert at.session_state["model_job"].wait(TIMEOUT)
        at.run()


def hold_previews(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """From now on a preview sets ``entered`` as it starts and waits for ``release``."""
    from neurochip.engine import Engine

    entered, release = threading.Event(), threading.Event()
    real_preview = Engine.preview

    def held_preview(self, *args, **kwargs):
        entered.set()
        release.wait(TIMEOUT)
        return real_preview(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "preview", held_preview)
    return entered, release


def fast(at: AppTest) -> None:
    field(at, "slider", "settings.steps").set_value(4)
    field(at, "slider", "settings.denoise").set_value(0.5)


def board_job(kind: str):
    """The workspace's ``kind`` job ("render", "preview", "grid", "reroll"): every page
    session of the workspace finds it there (neurochip.job_board)."""
    from neurochip.job_board import board_for
    from neurochip.workspace import Workspace

    return board_for(Workspace().root).job(kind)


def press_and_wait(at: AppTest, label: str = "Render", job: str = "render"):
    """Press the button ``label`` and wait for the job it starts to finish; the page then
    draws the results. Returns the job."""
    [button] = [b for b in at.button if b.label == label]
    button.click().run()
    job = board_job(job)
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    at.run()
    assert not at.exception
    return job


# --- upload handling (what the uploader hands to load_sketch) --------------------------------


def test_upload_is_decoded_and_named_for_display_only():
    upload = io.BytesIO(wav_bytes(2.0))
    sketch = load_sketch(upload, name="../../etc/Minuet (final).WAV")
    assert sketch.audio.frames == 2 * SR and sketch.name == "../../etc/Minuet (final).WAV"
    assert len(sketch.key) == 24


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.wav", b"", "empty"),
        ("notes.txt", b"hello", "not a format"),
        ("song.wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "song.wav"),
        (
            "noise.mp3",
            bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
            "noise.mp3",
        ),
        ("evil.wav/../../x.sh", b"#!/bin/sh", "not a format"),
        ("x.wav.exe", b"MZ", "not a format"),
    ],
)
def test_bad_uploads_are_clear_errors(name, data, message):
    with pytest.raises(NeuroChipError, match=f"(?i){message}"):
        load_sketch(io.BytesIO(data), name=name)


# --- Arrange ----------------------------------------------------------------------------------


def test_arrange_without_a_song_asks_for_one(app_env):
    at = start(song=False)
    assert not at.exception
    assert any("Drop a WAV" in i.value for i in at.info)


def test_bad_upload_message_is_shown_in_the_page(app_env):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.session_state["upload_error"] = "minuet.mp3 is not a readable audio file."
    at.run()
    assert not at.exception and "minuet.mp3" in at.error[0].value


def test_sliders_become_render_settings(app_env):
    at = start()
    assert not at.exception
    field(at, "slider", "settings.denoise").set_value(0.22)
    field(at, "slider", "settings.guidance").set_value(4.5)
    field(at, "slider", "settings.steps").set_value(30)
    field(at, "text_input", "settings.prompt").input("a string quartet")
    field(at, "selectbox", "settings.scheduler").set_value("ddim")
    at.run()
    settings = at.session_state["last_settings"]
    assert (settings.denoise, settings.guidance, settings.steps) == (0.22, 4.5, 30)
    assert settings.prompt == "a string quartet" and settings.scheduler == "ddim"


def test_draft_options_reach_the_settings_and_label_the_take(app_env):
    from neurochip.library.names import take_label

    at = start()
    assert not at.exception
    field(at, "selectbox", "settings.windows").set_value("shifted")
    field(at, "slider", "settings.feature_reuse").set_value(3)
    field(at, "slider", "settings.guidance_until").set_value(0.5)
    at.run()
    settings = at.session_state["last_settings"]
    assert (settings.windows, settings.feature_reuse, settings.guidance_until) == (
        "shifted",
        3,
        0.5,
    )
    label = take_label({"takes": {"A": settings.to_dict()}})
    assert label.endswith("draft")
    assert "draft" not in take_label({"takes": {"A": RenderSettings().to_dict()}})


def test_dice_rolls_a_new_seed(app_env):
    at = start()
    before = at.session_state["last_settings"].seed
    [dice] = [b for b in at.button if b.label == "Roll"]
    dice.click().run()
    assert at.session_state["last_settings"].seed != before


def test_preview_renders_and_shows_spectrograms(app_env):
    at = start()
    fast(at)
    job = press_and_wait(at, "Preview now", "preview")
    # Its stage times give the render's estimate on this machine, and its own time is shown.
    assert any(c.value.startswith("About ") and "this machine" in c.value for c in at.caption)
    seconds = job.result.render.seconds
    assert seconds > 0 and any(c.value == f"Previewed in {seconds:.2f} s" for c in at.caption)
    # The notes-kept strip and the spectrograms (input, output, difference).
    assert len(at.get("plotly_chart")) == 2
    preview = job.result
    assert preview.render.audio.frames == round(5.12 * SR)
    assert 0.0 <= preview.faithfulness.score <= 1.0
    assert any(m.value.startswith("**Notes kept:") for m in at.markdown)
    assert at.get("iframe")  # the A/B player: sketch against take


def test_quick_previews_are_a_kept_choice_that_reaches_the_engine(app_env, monkeypatch):
    from neurochip.engine import FAITHFUL_PREVIEW, QUICK_PREVIEW, Engine

    qualities = []
    preview = Engine.preview

    def spy(self, *args, **kwargs):
        qualities.append(kwargs.get("quality"))
        return preview(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "preview", spy)
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(6.0), "u1")
    at.run()
    wait_for_model(at)
    fast(at)
    [now] = [b for b in at.button if b.label == "Preview now"]
    now.click().run()
    assert board_job("preview").wait(TIMEOUT)
    field(at, "toggle", "view.quick_preview").set_value(True).run()
    [now] = [b for b in at.button if b.label == "Preview now"]
    now.click().run()
    job = board_job("preview")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    assert qualities == [FAITHFUL_PREVIEW, QUICK_PREVIEW]

    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert again.session_state["load_job"].wait(TIMEOUT)  # reopening the sketch
    again.run()
    assert field(again, "toggle", "view.quick_preview").value is True  # a refresh keeps the choice


def test_the_last_preview_stays_while_a_new_one_renders(app_env, monkeypatch):
    at = start()
    fast(at)
    [preview] = [b for b in at.button if b.label == "Preview now"]
    preview.click().run()
    first = board_job("preview")
    assert first.wait(TIMEOUT) and first.state == "done", first.error
    at.run()

    # The next preview is held until the page has been checked.
    entered, release = hold_previews(monkeypatch)
    field(at, "slider", "settings.denoise").set_value(0.4)
    [preview] = [b for b in at.button if b.label == "Preview now"]
    preview.click().run()
    assert entered.wait(TIMEOUT)
    assert not at.exception
    assert any("Out of date" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 2 and at.get("iframe")  # still there, playable
    assert at.session_state["last_preview"] is first.result
    release.set()
    second = board_job("preview")
    assert second.wait(TIMEOUT) and second.state == "done", second.error
    at.run()
    assert at.session_state["last_preview"] is second.result
    assert not any("Out of date" in c.value for c in at.caption)


def test_a_change_previews_at_once_and_a_burst_of_changes_waits_to_settle(app_env, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ui, "clock", lambda: now[0])  # only the test moves it
    at = start()
    _, release = hold_previews(monkeypatch)  # nothing needs to finish here
    field(at, "toggle", "view.auto_preview").set_value(True).run()  # a preview of its own
    now[0] += 10 * ui.PREVIEW_DEBOUNCE_S  # a while later
    field(at, "number_input", "settings.seed").increment().run()
    first = board_job("preview")
    assert first.delay_s == 0  # the first change in a while: the model starts at once
    now[0] += 0.1  # the next click on the seed's +, a tenth of a second later
    field(at, "number_input", "settings.seed").increment().run()
    second = board_job("preview")
    assert second is not first and first.cancelled
    assert second.delay_s == ui.PREVIEW_DEBOUNCE_S  # a burst: wait for it to settle
    now[0] += 10 * ui.PREVIEW_DEBOUNCE_S
    field(at, "number_input", "settings.seed").increment().run()
    third = board_job("preview")
    assert second.cancelled and third.delay_s == 0
    third.cancel()
    release.set()


def test_full_render_keeps_takes_and_offers_downloads(app_env):
    at = start()
    fast(at)
    at.run()
    job = press_and_wait(at)
    assert set(job.result) == {"A", "B", "pair"}
    downloads = at.get("download_button")
    assert len(downloads) == 3
    takes = ui.library().list()
    assert {t.kind for t in takes} == {"take", "stereo pair"}
    pair = next(t for t in takes if t.kind == "stereo pair")
    assert pair.channels == 2 and pair.duration_s == pytest.approx(6.0, abs=1e-3)
    # Another song: this one's results leave the page (its takes stay on the Takes page).
    upload_into(at, "next.wav", wav_bytes(3.0), "next")
    at.run()
    assert not at.get("download_button") and board_job("render") is None
    assert len(ui.library().list()) == len(takes)


# --- Takes ------------------------------------------------------------------------------------


def test_takes_are_listed_in_a_fresh_session_and_can_be_starred(app_env):
    first = start()
    fast(first)
    first.run()
    [render] = [b for b in first.button if b.label == "Render"]
    render.click().run()
    assert board_job("render").wait(TIMEOUT)

    at = start("views/takes.py", song=False)  # a new browser session
    assert not at.exception
    takes = ui.library().list()
    assert len(takes) == 3
    [star] = [b for b in at.button if b.key == f"star_{takes[0].id}"]
    star.click().run()
    assert ui.library().get(takes[0].id).starred


def test_takes_page_without_takes(app_env):
    at = start("views/takes.py", song=False)
    assert not at.exception and any("No takes yet" in i.value for i in at.info)


# --- Model & device ---------------------------------------------------------------------------


def test_missing_model_is_explained_and_previews_still_work(app_env, monkeypatch):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(app_env / "no-such-model"))
    at = start()
    assert not at.exception
    assert any("huggingface-cli download" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1  # the input spectrogram of the preview region
    at.switch_page("views/model.py").run()
    assert not at.exception
    assert any("huggingface-cli download" in e.value for e in at.error)


def test_model_page_shows_the_loaded_model_and_checks(app_env):
    at = start("views/model.py", song=False)
    assert not at.exception
    assert any("Loaded" in s.value for s in at.success)
    assert any("ffmpeg" in m.value for m in at.markdown)
    # The loaded model is a local folder: "This machine" agrees that it needs no download.
    [weights] = [m.value for m in at.markdown if "**Model weights**" in m.value]
    assert "a local folder: no download needed" in weights and "huggingface-cli" not in weights


# --- MIDI sketches ------------------------------------------------------------------------------


def test_demo_button_loads_the_midi_sketch_and_shows_its_voices(app_env):
    at = start(song=False)
    [demo] = [b for b in at.button if b.label.startswith("Try the demo")]
    demo.click().run()
    assert not at.exception
    song = at.session_state["sketch"]
    assert song.name == "greensleeves.mid" and len(song.tracks) == 4
    assert song.audio.duration_s == pytest.approx(29.84, abs=0.05)
    voices = [s for s in at.selectbox if s.key and s.key.startswith("voice_")]
    assert [v.value for v in voices] == ["pulse25", "pulse12", "triangle", "drums"]


def test_changing_a_voice_synthesises_the_sketch_again(app_env):
    at = start(song=False)
    at.session_state["sketch"] = songs.demo_sketch()
    at.run()
    before = at.session_state["sketch"]
    [bass] = [s for s in at.selectbox if s.key == f"voice_{before.key}_4"]
    bass.set_value("pulse50").run()
    # Synthesised as a job: the page shows its progress, with the sketch as it was below.
    assert at.session_state["load_job"].wait(TIMEOUT)
    at.run()
    after = at.session_state["sketch"]
    assert not at.exception
    assert after.voices == {"4": "pulse50"} and after.key != before.key
    assert after.audio.frames == before.audio.frames
    assert not (after.audio.samples == before.audio.samples).all()


def test_open_puts_a_takes_settings_back_into_arrange(app_env):
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import take_metadata
    from neurochip.settings import RenderSettings

    settings = RenderSettings(prompt="a brass band", denoise=0.27, guidance=5.5, seed=1234)
    audio = Audio(make_chiptune(1.0), SR)
    take = ui.library().add(audio, take_metadata("take", {"A": settings}, "sketch.wav"))
    at = start("views/takes.py")
    [open_button] = [b for b in at.button if b.key == f"open_{take.id}"]
    open_button.click().run()
    assert not at.exception
    loaded = at.session_state["last_settings"]  # Arrange ran with the take's settings
    assert (loaded.prompt, loaded.denoise, loaded.guidance, loaded.seed) == (
        "a brass band",
        0.27,
        5.5,
        1234,
    )


# --- one workflow: the app and the CLI make the same files --------------------------------------


def test_app_and_cli_make_identical_files(app_env, tiny_model_dir):
    from neurochip.cli import main
    from neurochip.library.metadata import read_take_metadata, settings_from_take

    at = start()
    fast(at)
    field(at, "checkbox", "view.compare").check()
    at.run()
    [render] = [b for b in at.button if b.label == "Render"]
    render.click().run()
    job = board_job("render")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    saved = job.result
    assert set(saved) == {"A", "B", "pair", "compare"}

    sketch = app_env / "minuet.wav"
    sketch.write_bytes(wav_bytes())
    out = app_env / "cli" / "cover.wav"
    settings = at.session_state["last_settings"]
    argv = ["render", str(sketch), "-o", str(out), "--model", str(tiny_model_dir)]
    argv += ["--prompt", settings.prompt, "--steps", "4", "--denoise", "0.5"]
    argv += ["--duration", "6", "--stereo-pair", "--crossfade-compare", "--crossfade-at", "2"]
    argv += ["--bit-depth", "24", "--no-library"]
    assert main(argv) == 0
    cli_files = {
        "pair": out,
        "A": out.with_name("cover-A.wav"),
        "B": out.with_name("cover-B.wav"),
        "compare": out.with_name("cover-compare.wav"),
    }
    library = ui.library()
    for role, path in cli_files.items():
        app_file = library.get(saved[role]).audio_path
        assert read_take_metadata(path) == read_take_metadata(app_file), role
        assert path.read_bytes() == app_file.read_bytes(), role
        # Every file either front end writes says what made it.
        for made in (path, app_file):
            assert settings_from_take(made).prompt == settings.prompt
    assert settings_from_take(cli_files["B"]).seed == settings.seed + 1
    assert settings_from_take(cli_files["pair"], "B").seed == settings.seed + 1


def test_takes_can_be_searched_and_filtered_by_song(app_env):
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import take_metadata
    from neurochip.settings import RenderSettings

    audio = Audio(make_chiptune(1.0), SR)
    library = ui.library()
    funk = library.add(audio, take_metadata("take", {"A": RenderSettings(prompt="funk")}, "a.wav"))
    harp = library.add(audio, take_metadata("take", {"A": RenderSettings(prompt="harp")}, "b.wav"))
    at = start("views/takes.py", song=False)
    shown = {b.key for b in at.button if b.key and b.key.startswith("star_")}
    assert shown == {f"star_{funk.id}", f"star_{harp.id}"}
    field(at, "text_input", "view.takes_search").input("FUNK").run()
    assert {b.key for b in at.button if b.key and b.key.startswith("star_")} == {f"star_{funk.id}"}
    field(at, "text_input", "view.takes_search").input("").run()
    field(at, "selectbox", "view.takes_song").set_value("b.wav").run()
    assert {b.key for b in at.button if b.key and b.key.startswith("star_")} == {f"star_{harp.id}"}
    field(at, "text_input", "view.takes_search").input("funk").run()
    assert not at.exception and any("No take matches" in i.value for i in at.info)


class FakeUpload(io.BytesIO):
    """What st.file_uploader hands the page: a file object with a name and an id."""

    def __init__(self, name: str, data: bytes, file_id: str) -> None:
        super().__init__(data)
        self.name, self.file_id = name, file_id


def upload_into(at: AppTest, name: str, data: bytes, file_id: str, wait: bool = True) -> None:
    """The page's upload handler, with AppTest's session state as Streamlit's."""
    from unittest import mock

    with mock.patch.object(ui.st, "session_state", at.session_state):
        songs.accept_upload(FakeUpload(name, data, file_id))
    if wait:
        assert at.session_state["load_job"].wait(TIMEOUT)


def test_a_bad_upload_keeps_the_song_and_settings_already_loaded(app_env):
    at = start()
    field(at, "slider", "settings.denoise").set_value(0.22).run()
    loaded = at.session_state["sketch"]

    def upload(name: str, data: bytes, file_id: str) -> None:
        upload_into(at, name, data, file_id)

    upload("notes.wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "bad")
    at.run()
    assert not at.exception
    assert at.session_state["sketch"] is loaded
    assert "notes.wav" in at.error[0].value and "minuet.wav is still loaded" in at.error[0].value
    assert at.session_state["last_settings"].denoise == 0.22
    # The uploader is a new one (empty): its box does not show notes.wav beside minuet.wav.
    assert at.session_state["upload_round"] == 1
    at.run()
    assert at.error  # said until the composer moves on...
    field(at, "slider", "settings.denoise").set_value(0.3).run()
    assert not at.error  # ...then gone
    upload("good.wav", wav_bytes(3.0), "good")
    at.run()
    assert at.session_state["sketch"].name == "good.wav" and not at.error
    assert at.session_state["last_settings"].denoise == 0.3
    assert at.session_state["upload_round"] == 1  # a good file stays in its box


def long_midi(seconds: float) -> bytes:
    """One note held for ``seconds`` (120 bpm, 480 ticks a beat): tiny, and long."""
    import mido

    song = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track += [
        mido.Message("note_on", note=69, velocity=100, time=0),
        mido.Message("note_off", note=69, time=round(seconds * 2 * 480)),
    ]
    song.tracks.append(track)
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def test_a_48_khz_upload_says_it_was_resampled(app_env):
    at = start(song=False)
    upload_into(at, "studio.wav", wav_bytes(3.0, rate=48000), "48k")
    at.run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "studio.wav" in c.value)
    assert "44100 Hz (resampled from the file's 48000 Hz)" in caption
    upload_into(at, "plain.wav", wav_bytes(3.0), "44k")
    at.run()
    caption = next(c.value for c in at.caption if "plain.wav" in c.value)
    assert "resampled" not in caption


def test_a_too_long_upload_says_what_to_do_in_the_app(app_env):
    at = start()
    upload_into(at, "forever.mid", long_midi(1300), "long")
    at.run()
    [error] = at.error
    assert "forever.mid is" in error.value and "over the limit of 20 min" in error.value
    assert "minuet.wav is still loaded" in error.value
    assert "--max-duration" not in error.value  # the app has no such option


def test_a_midi_upload_shows_progress_and_cancel_keeps_the_song(app_env, monkeypatch):
    import threading

    import neurochip.sketch as sketch_module

    entered, release = threading.Event(), threading.Event()
    real_render_midi = sketch_module.render_midi

    def slow_render_midi(song, *, progress, **options):
        progress(0.4)  # part of the notes played...
        entered.set()
        release.wait(TIMEOUT)  # ...and the rest takes a while
        progress(0.8)  # where a cancelled load stops
        return real_render_midi(song, progress=progress, **options)

    monkeypatch.setattr(sketch_module, "render_midi", slow_render_midi)
    at = start()
    loaded = at.session_state["sketch"]
    demo = (songs.DEMO_SKETCH).read_bytes()
    upload_into(at, "greensleeves.mid", demo, "midi", wait=False)
    assert entered.wait(TIMEOUT)
    at.run()
    assert not at.exception
    [bar] = at.get("progress")
    assert "Reading greensleeves.mid" in bar.proto.text and "synthesising" in bar.proto.text
    assert at.session_state["sketch"] is loaded  # still there, playable, while it loads
    [cancel] = [b for b in at.button if b.key == "cancel_load"]
    cancel.click().run()
    release.set()
    job = at.session_state["load_job"]
    assert job.wait(TIMEOUT) and job.state == "cancelled"
    at.run()
    assert at.session_state["sketch"] is loaded and not at.error and not at.get("progress")

    # The next upload is not held back by the cancelled one.
    upload_into(at, "greensleeves.mid", demo, "midi-again")
    at.run()
    assert at.session_state["sketch"].name == "greensleeves.mid"


def test_a_refresh_brings_back_song_settings_model_and_preview(app_env):
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(6.0), "u1")
    at.run()
    wait_for_model(at)
    fast(at)
    field(at, "slider", "settings.denoise").set_value(0.45)
    field(at, "text_input", "settings.prompt").input("a string quartet")
    at.run()
    field(at, "number_input", "song.start_s").set_value(1.0).run()
    duration = field(at, "number_input", "song.duration_s")
    duration.set_value(3.0).run()
    [preview] = [b for b in at.button if b.label == "Preview now"]
    preview.click().run()
    job = board_job("preview")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    at.run()
    field(at, "toggle", "view.auto_preview").set_value(True).run()  # kept on for the next session
    assert board_job("preview") is job  # nothing changed: nothing re-rendered
    song = at.session_state["sketch"]
    model = session(at).model

    # A refresh (or a restarted server) is a new session: nothing in it but the workspace.
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert not again.exception
    assert again.session_state["load_job"].wait(TIMEOUT)  # reopening the sketch
    again.run()
    assert again.session_state["sketch"].key == song.key
    settings = again.session_state["last_settings"]
    assert (settings.denoise, settings.steps, settings.prompt) == (0.45, 4, "a string quartet")
    assert session(again).model == model
    kept = again.session_state["last_preview"]
    assert kept.song_key == song.key
    assert field(again, "number_input", "song.start_s").value == 1.0  # the render span too
    duration = field(again, "number_input", "song.duration_s")
    assert duration.value == 3.0
    np.testing.assert_array_equal(kept.render.audio.samples, job.result.render.audio.samples)
    assert len(again.get("plotly_chart")) == 2 and again.get("iframe")
    assert not any("Out of date" in c.value for c in again.caption)
    assert board_job("preview") is job  # the same settings: nothing re-rendered


def test_a_changed_setting_is_kept_even_when_its_page_never_finishes_a_run(app_env):
    """A refresh right after a click stops the page's run part way: the change must be kept
    before any page draws (here the run goes to Takes, which never saves settings itself)."""
    at = start()
    field(at, "number_input", "settings.seed").set_value(6)
    at.switch_page("views/takes.py").run()
    assert not at.exception
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert session(again).settings.seed == 6


def test_a_bad_upload_after_a_refresh_changes_nothing_kept(app_env):
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(3.0), "u1")
    at.run()
    upload_into(at, "broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "u2")
    at.run()
    assert "broken.wav" in at.error[0].value
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert again.session_state["load_job"].wait(TIMEOUT)
    again.run()
    assert again.session_state["sketch"].name == "minuet.wav"


# --- Takes: a compact, paged list; one take's big view ----------------------------------------


def add_measured_takes(count: int, scores=None):
    """``count`` short takes, seeds 0.., with these note-faithfulness scores (None: none)."""
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import take_metadata
    from neurochip.settings import RenderSettings

    audio = Audio(make_chiptune(0.2), SR)
    library = ui.library()
    made = []
    for i in range(count):
        score = None if scores is None else scores[i]
        settings = RenderSettings(prompt="funk", seed=i, denoise=0.35, guidance=7.0, steps=50)
        measured = None if score is None else {"score": score, "segment": "second"}
        meta = take_metadata("take", {"A": settings}, "minuet.wav", faithfulness=measured)
        made.append(library.add(audio, meta))
    return made


def listed_ids(at: AppTest) -> list[str]:
    return [b.key.removeprefix("star_") for b in at.button if b.key and b.key.startswith("star_")]


def test_takes_page_is_a_compact_paged_list(app_env):
    takes = add_measured_takes(30)
    newest = [t.id for t in reversed(takes)]
    at = start("views/takes.py", song=False)
    assert not at.exception
    assert listed_ids(at) == newest[:25]  # one page
    # Rows, not players: no take's audio or export is built for the list.
    assert not at.get("audio") and not at.get("download_button")
    labels = " ".join(m.value for m in at.markdown)
    assert "seed 29 · denoise 0.35 · guidance 7 · 50 steps" in labels
    assert any("30 takes · 1–25 shown" in c.value for c in at.caption)
    [forward] = [b for b in at.button if b.key == "takes_next"]
    forward.click().run()
    assert listed_ids(at) == newest[25:] and any("Page 2 of 2" in c.value for c in at.caption)
    field(at, "text_input", "view.takes_search").input(
        "funk"
    ).run()  # a new search starts at page 1
    assert listed_ids(at) == newest[:25]
    forward.click().run()
    [newer] = add_measured_takes(1)  # rendered meanwhile: the list starts over, newest first
    at.run()
    assert listed_ids(at)[0] == newer.id


def test_takes_sort_by_faithfulness(app_env):
    low, unmeasured, high = add_measured_takes(3, [0.42, None, 0.96])
    at = start("views/takes.py", song=False)
    field(at, "selectbox", "view.takes_sort").set_value("Notes kept").run()
    assert not at.exception
    assert listed_ids(at) == [high.id, low.id, unmeasured.id]
    badges = " ".join(m.value for m in at.markdown)
    assert ":green-badge[0.96]" in badges and ":red-badge[0.42]" in badges


def test_takes_big_view_plays_downloads_renames_and_keeps_a_note(app_env):
    [take, other] = add_measured_takes(2, [0.9, None])
    at = start("views/takes.py", song=False)
    [more] = [b for b in at.button if b.key == f"more_{take.id}"]
    more.click().run()
    assert not at.exception
    assert len(at.get("audio")) == 1  # this take's player only
    assert {d.key for d in at.get("download_button")} == {f"dl_{take.id}"}
    at.text_input(key=f"name_{take.id}").input("Chorus keeper")
    at.text_area(key=f"note_{take.id}").input("bass drifts in bar 12")
    [save] = [b for b in at.button if b.label == "Save name and note"]
    save.click().run()
    assert not at.exception
    kept = ui.library().get(take.id)
    assert (kept.name, kept.note) == ("Chorus keeper", "bass drifts in bar 12")
    field(at, "text_input", "view.takes_search").input("DRIFTS").run()  # notes are searched
    assert listed_ids(at) == [take.id]
    field(at, "text_input", "view.takes_search").input("").run()
    # The big view of another take replaces it; deleting from there.
    [more] = [b for b in at.button if b.key == f"more_{other.id}"]
    more.click().run()
    assert {d.key for d in at.get("download_button")} == {f"dl_{other.id}"}
    [delete] = [b for b in at.button if b.key == f"delete_{other.id}"]
    delete.click().run()
    [yes] = [b for b in at.button if b.key == f"yes_{other.id}"]
    yes.click().run()
    assert not at.exception
    assert [t.id for t in ui.library().list()] == [take.id]
    assert listed_ids(at) == [take.id]


def test_takes_compare_plays_two_and_pairs_them(app_env):
    first, second = add_measured_takes(2, [0.8, 0.6])
    at = start("views/takes.py", song=False)
    assert not at.get("audio")  # closed: no players built
    field(at, "toggle", "view.takes_compare").set_value(True).run()
    # One A/B player (one clock) for both takes, not two players drifting apart.
    assert not at.exception and len(at.get("iframe")) == 1 and not at.get("audio")
    [make] = [b for b in at.button if b.label.startswith("Make a stereo pair")]
    make.click().run()
    assert not at.exception
    pair = ui.library().list()[0]
    assert pair.kind == "stereo pair" and pair.faithfulness == pytest.approx(0.7)
    assert any("Added" in s.value for s in at.success)
    # The pair is listed first now; Compare still starts with the two single takes.
    fresh = start("views/takes.py", song=False)
    field(fresh, "toggle", "view.takes_compare").set_value(True).run()
    shown = {fresh.selectbox(key="ab_a").value, fresh.selectbox(key="ab_b").value}
    assert shown == {first.id, second.id}
    fresh.selectbox(key="ab_a").set_value(pair.id).run()  # a pair is no half of a pair
    [make] = [b for b in fresh.button if b.label.startswith("Make a stereo pair")]
    assert make.disabled


def test_the_page_works_while_the_model_loads_and_previews_once_it_is_ready(app_env, monkeypatch):
    import threading

    from neurochip.engine import Engine

    release = threading.Event()
    load = Engine.from_pretrained

    def slow_disk(*args, **kwargs):
        assert release.wait(TIMEOUT)  # the weights are still being read
        return load(*args, **kwargs)

    monkeypatch.setattr(Engine, "from_pretrained", staticmethod(slow_disk))
    ui.forget_engine()
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.session_state["sketch"] = load_sketch(wav_bytes(), name="minuet.wav")
    at.session_state["upload_id"] = "test"
    quiet(at)
    at.run()  # returns while the model loads
    assert not at.exception
    assert any("Loading the model" in str(p.proto) for p in at.get("progress"))
    [now] = [b for b in at.button if b.label == "Preview now"]
    assert now.disabled
    assert at.get("plotly_chart")  # the sketch's spectrogram is there meanwhile
    assert not at.warning  # loading is not "the model is not available"

    release.set()
    assert at.session_state["model_job"].wait(TIMEOUT)
    at.run()  # what the polling fragment asks for once the model is ready
    [now] = [b for b in at.button if b.label == "Preview now"]
    assert not now.disabled
    assert not any("Loading the model" in str(p.proto) for p in at.get("progress"))
    ui.forget_engine()


def use_model_with(label: str, value: str) -> AppTest:
    """The Model page with the field ``label`` set to ``value``, "Use this model" pressed,
    and the model loaded."""
    at = start("views/model.py")
    [field] = [t for t in at.text_input if t.label == label]
    field.input(value)
    [use] = [b for b in at.button if b.label == "Use this model"]
    use.click().run()
    wait_for_model(at)
    return at


def test_a_lora_chosen_on_the_model_page_is_fused_and_kept(app_env, tiny_model_dir):
    from neurochip.model import load_model
    from tests.test_model import make_lora

    make_lora(load_model(tiny_model_dir, device="cpu"), app_env / "style")
    at = use_model_with("LoRA (optional)", str(app_env / "style"))
    assert not at.exception
    engine = at.session_state["model_job"].result
    assert engine is not None and "LoRA style x1" in engine.model.source
    assert any("LoRA style" in s.value for s in at.success)  # "Loaded: ..." says so
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert session(again).model.lora == str(app_env / "style")  # kept
    ui.forget_engine()


def test_a_preview_vae_chosen_on_the_model_page_decodes_quick_previews(app_env):
    from tests.tiny_model import build_tiny_preview_vae

    folder = build_tiny_preview_vae(app_env / "taesd")
    at = use_model_with("Preview VAE (optional)", str(folder))
    engine = at.session_state["model_job"].result
    assert engine is not None and engine.model.preview_vae_source == str(folder)

    at = start()
    fast(at)
    field(at, "toggle", "view.quick_preview").set_value(True).run()
    [now] = [b for b in at.button if b.label == "Preview now"]
    now.click().run()
    job = board_job("preview")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    at.run()
    assert any("decoded by the preview VAE" in c.value for c in at.caption)
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert session(again).model.preview_vae == str(folder)  # kept
    ui.forget_engine()


def test_arrange_choices_stay_when_another_page_is_shown(app_env):
    at = start()
    field(at, "toggle", "view.quick_preview").set_value(True)
    field(at, "checkbox", "view.stereo_pair").uncheck()
    field(at, "checkbox", "song.loop").check()
    at.run()
    for page in ("views/takes.py", "views/model.py", "views/arrange.py"):
        at.switch_page(page).run()
        assert not at.exception
    assert field(at, "toggle", "view.quick_preview").value is True
    assert field(at, "checkbox", "view.stereo_pair").value is False
    assert field(at, "checkbox", "song.loop").value is True
    # ... and kept for a refresh too, though the last page shown before it was another.
    at.switch_page("views/takes.py").run()
    kept = ComposerSession.from_dict(ui.workspace().state())
    song_key = at.session_state["sketch"].key
    assert (kept.view.quick_preview, kept.view.stereo_pair) == (True, False)
    assert kept.songs[song_key].loop is True


def test_a_preview_vae_that_cannot_load_leaves_the_model_usable_and_says_why(app_env):
    at = use_model_with("Preview VAE (optional)", str(app_env / "no-such-taesd"))
    engine = at.session_state["model_job"].result
    assert engine is not None and engine.model.preview_vae is None  # the model still loads
    assert any("own VAE" in w.value and "no-such-taesd" in w.value for w in at.warning)
    at = start()
    field(at, "toggle", "view.quick_preview").set_value(True).run()
    assert any("preview VAE did not load" in c.value for c in at.caption)
    ui.forget_engine()


def test_the_app_never_downloads_unasked(app_env, monkeypatch):
    from neurochip.engine import Engine
    from neurochip.errors import ModelNotFoundError

    asked = []

    def from_pretrained(source, device="auto", dtype=None, local_files_only=None, **options):
        asked.append(local_files_only)
        raise ModelNotFoundError(f"{source} is not downloaded: huggingface-cli download {source}")

    monkeypatch.setattr(Engine, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.setenv("NEUROCHIP_MODEL", "someone/uncached-model")
    ui.forget_engine()
    at = start("views/model.py")
    assert not at.exception and asked == [True]  # the cache only: an instant answer offline
    [download] = [b for b in at.button if b.label.startswith("Download from the Hugging Face")]
    download.click().run()
    wait_for_model(at)
    assert asked == [True, False]  # the composer asked: now the hub may be used
    assert at.session_state["model_download"]
    ui.forget_engine()


def test_the_variation_grid_renders_and_use_this_adopts(app_env):
    at = start()
    fast(at)
    at.run()
    field(at, "number_input", "settings.seed").set_value(40).run()  # untouched, the fields follow
    assert field(at, "text_input", "song.grid_seeds").value == "40, 41, 42"
    assert field(at, "text_input", "song.grid_values").value == "0.40, 0.50, 0.60"
    field(at, "text_input", "song.grid_seeds").input("11, 12")
    field(at, "text_input", "song.grid_values").input("0.3, 0.6")
    job = press_and_wait(at, "Render the grid", "grid")
    uses = [b for b in at.button if b.key and b.key.startswith("use_cell_")]
    assert len(uses) == 4
    variations = job.result.variations
    assert [(v.settings.seed, v.settings.denoise) for v in variations] == [
        (11, 0.3),
        (11, 0.6),
        (12, 0.3),
        (12, 0.6),
    ]
    assert all(0 <= v.faithfulness.score <= 1 for v in variations)
    assert any("notes kept" in m.value for m in at.markdown)
    [use] = [b for b in uses if b.key == "use_cell_3"]
    use.click().run()
    settings = at.session_state["last_settings"]
    assert (settings.seed, settings.denoise, settings.steps) == (12, 0.6, 4)
    # The cell is the preview of these settings: shown at once, never rendered again.
    shown = at.session_state["last_preview"]
    assert shown.render.audio is variations[3].render.audio
    assert shown.render.seconds is None  # the grid's time is not said as the preview's
    field(at, "toggle", "view.auto_preview").set_value(True).run()
    assert board_job("preview") is None
    # The grid's fields still describe the grid on screen, after a trip to Takes too.
    assert field(at, "text_input", "song.grid_seeds").value == "11, 12"
    assert field(at, "text_input", "song.grid_values").value == "0.3, 0.6"
    at.switch_page("views/takes.py").run()
    at.switch_page("views/arrange.py").run()
    assert field(at, "text_input", "song.grid_seeds").value == "11, 12"
    assert field(at, "text_input", "song.grid_values").value == "0.3, 0.6"
    # The cell taken is marked, and the grid still answers for these settings.
    cells = [m.value for m in at.markdown if "notes kept" in m.value]
    assert [("in use" in c) for c in cells] == [False, False, False, True]
    assert not any("Out of date" in c.value for c in at.caption)


def grid_cells(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "notes kept" in m.value]


def test_the_grid_is_marked_out_of_date_and_comes_back_after_a_refresh(app_env):
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(6.0), "u1")  # kept in the workspace
    at.run()
    wait_for_model(at)
    fast(at)
    at.run()
    field(at, "text_input", "song.grid_seeds").input("3, 4").run()
    field(at, "text_input", "song.grid_values").input("0.4").run()
    job = press_and_wait(at, "Render the grid", "grid")
    assert len(grid_cells(at)) == 2
    field(at, "slider", "settings.denoise").set_value(
        0.7
    ).run()  # the grid's own axis: still current
    assert not any("Out of date" in c.value for c in at.caption)
    field(at, "text_input", "settings.prompt").input("a string quartet").run()
    field(at, "slider", "settings.steps").set_value(5).run()
    [stale] = [c.value for c in at.caption if "Out of date" in c.value]
    assert "*Prompt* and *Steps* changed" in stale
    assert len(grid_cells(at)) == 2  # still there to listen to

    # A refresh (or a restart) brings the grid back, as it was, still out of date.
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert again.session_state["load_job"].wait(TIMEOUT)
    again.run()
    assert not again.exception
    kept = again.session_state["last_grid"]
    assert kept.grid == job.result.grid
    for was, now in zip(job.result.variations, kept.variations, strict=True):
        np.testing.assert_array_equal(now.render.audio.samples, was.render.audio.samples)
    assert grid_cells(again) == grid_cells(at)
    # Its fields say what it is, not what the settings would suggest.
    assert field(again, "text_input", "song.grid_seeds").value == "3, 4"
    assert field(again, "text_input", "song.grid_values").value == "0.4"
    assert any("*Prompt* and *Steps* changed" in c.value for c in again.caption)
    [use] = [b for b in again.button if b.key == "use_cell_1"]
    use.click().run()  # its seed and denoise; the prompt and steps typed since stay
    settings = again.session_state["last_settings"]
    assert (settings.seed, settings.denoise) == (4, 0.4)
    assert (settings.prompt, settings.steps) == ("a string quartet", 5)
    assert any("*Prompt* and *Steps* changed" in c.value for c in again.caption)
    assert ["in use" in cell for cell in grid_cells(again)] == [False, True]


def test_a_bad_grid_is_a_clear_error_and_renders_nothing(app_env):
    at = start()
    field(at, "text_input", "song.grid_seeds").input("1, two")
    [render] = [b for b in at.button if b.label == "Render the grid"]
    render.click().run()
    assert "Seeds: write numbers" in at.error[0].value
    assert board_job("grid") is None


def test_a_new_upload_cancels_the_old_songs_preview(app_env, monkeypatch):
    entered, release = hold_previews(monkeypatch)
    at = start()
    fast(at)
    [preview] = [b for b in at.button if b.label == "Preview now"]
    preview.click().run()
    old = board_job("preview")
    assert entered.wait(TIMEOUT)
    upload_into(at, "next.wav", wav_bytes(3.0), "next")
    at.run()
    assert at.session_state["sketch"].name == "next.wav"
    assert old.cancelled  # stopped at its next model call, not left to delay the new song
    release.set()
    assert old.wait(TIMEOUT) and old.state == "cancelled"


@pytest.mark.parametrize("another_song_open", [False, True])
@pytest.mark.parametrize("moved_on", ["setting", "song"])
def test_open_brings_back_the_takes_song_span_and_settings(
    app_env, tiny_model_dir, another_song_open, moved_on
):
    from neurochip.engine import Engine
    from neurochip.settings import RenderSettings, TakeSetOptions
    from neurochip.takeset import render_take_set

    sketch = load_sketch(wav_bytes(8.0), name="minuet.wav")
    settings = RenderSettings(
        prompt="a brass band",
        steps=4,
        denoise=0.5,
        seed=77,
        start_s=2.0,
        duration_s=3.0,
        phase_iterations=0,
    )
    engine = Engine.from_pretrained(tiny_model_dir, device="cpu")
    takes = render_take_set(
        engine,
        sketch,
        settings,
        TakeSetOptions(stereo_pair=False, compare=False),
        library=ui.library(),
    )
    take_id = takes.saved["A"]
    # A fresh session, with no song or with another song open (a 6 s one).
    at = start("views/takes.py", song=another_song_open)
    [open_button] = [b for b in at.button if b.key == f"open_{take_id}"]
    open_button.click().run()
    assert not at.exception
    assert at.session_state["load_job"].wait(TIMEOUT)
    at.switch_page("views/arrange.py").run()  # AppTest stays on the page it was told
    opened = at.session_state["sketch"]
    assert opened.name == "minuet.wav" and opened.audio.frames == sketch.audio.frames
    np.testing.assert_allclose(opened.audio.samples, sketch.audio.samples, atol=2e-4)
    assert not at.exception, at.exception
    loaded = at.session_state["last_settings"]
    assert (loaded.prompt, loaded.seed, loaded.denoise) == ("a brass band", 77, 0.5)
    assert field(at, "number_input", "song.start_s").value == 2.0
    duration = field(at, "number_input", "song.duration_s")
    assert duration.value == 3.0
    said = [i.value for i in at.info if i.value.startswith("Opened")]
    assert said and "seed 77" in said[0] and "from 2 s for 3 s" in said[0]  # what came back
    assert (
        field(at, "slider", "song.preview_start_s").value == 2.0
    )  # the preview is of the take's part
    if moved_on == "setting":
        field(at, "slider", "settings.denoise").set_value(
            0.4
        ).run()  # moved on from it: the notice goes
    else:  # another song: Render would not make the take again
        upload_into(at, "other.wav", wav_bytes(4.0), "another")
        at.run()
        assert at.session_state["sketch"].name == "other.wav"
    assert not any(i.value.startswith("Opened") for i in at.info)


def test_settings_that_skip_the_model_are_warned_about(app_env):
    at = start()
    field(at, "slider", "settings.steps").set_value(4)
    field(at, "slider", "settings.denoise").set_value(0.2).run()
    assert any("less than one denoising step" in w.value for w in at.warning)
    field(at, "slider", "settings.denoise").set_value(0.5).run()
    assert not any("denoising step" in w.value for w in at.warning)


def test_a_voice_change_keeps_the_last_preview_as_out_of_date(app_env):
    at = start(song=False)
    at.session_state["sketch"] = songs.demo_sketch()
    at.run()
    fast(at)
    [preview] = [b for b in at.button if b.label == "Preview now"]
    preview.click().run()
    job = board_job("preview")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    at.run()
    before = at.session_state["sketch"]
    [bass] = [s for s in at.selectbox if s.key == f"voice_{before.key}_4"]
    bass.set_value("pulse50").run()
    assert at.session_state["load_job"].wait(TIMEOUT)
    at.run()
    assert at.session_state["sketch"].key != before.key
    kept = at.session_state["last_preview"]
    assert kept.render is job.result.render  # still on the page, playable
    assert any("Out of date" in c.value for c in at.caption)


# --- Fix a part (re-roll) ---------------------------------------------------------------------


def test_a_takes_bars_are_rerolled_from_the_takes_page(app_env, tiny_model_dir):
    from pathlib import Path

    from neurochip.engine import REROLL_MARGIN_S, Engine
    from neurochip.faithfulness import sketch_bar_times
    from neurochip.settings import TakeSetOptions
    from neurochip.takeset import render_take_set

    midi = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    sketch = load_sketch(midi)
    settings = RenderSettings(prompt="a brass band", steps=4, duration_s=9.0, phase_iterations=0)
    engine = Engine.from_pretrained(tiny_model_dir, device="cpu")
    made = render_take_set(
        engine, sketch, settings, TakeSetOptions(stereo_pair=False), library=ui.library()
    )
    take_id = made.saved["A"]
    at = start("views/takes.py", song=False)
    [more] = [b for b in at.button if b.key == f"more_{take_id}"]
    more.click().run()
    assert not at.exception
    at.select_slider(key=f"reroll_bars_{take_id}").set_range(3, 4)
    at.number_input(key=f"reroll_count_{take_id}").set_value(2)
    at.number_input(key=f"reroll_seed_{take_id}").set_value(500)
    [reroll] = [b for b in at.button if b.key == f"reroll_{take_id}"]
    reroll.click().run()
    job = board_job("reroll")
    if job is None:  # the model was still loading: wait for it, then ask again
        wait_for_model(at)
        [reroll] = [b for b in at.button if b.key == f"reroll_{take_id}"]
        reroll.click().run()
        job = board_job("reroll")
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    at.run()
    assert not at.exception
    # Two new takes, each the parent outside bars 3-4 and their blend, and labelled so.
    parent = ui.library().load_audio(take_id).samples[0]
    bars = sketch_bar_times(sketch)
    margin = round(REROLL_MARGIN_S * 44100)
    start_at, end_at = round(bars[2] * 44100) - margin, round(bars[4] * 44100) + margin
    children = [t for t in ui.library().list() if t.metadata.get("reroll")]
    assert sorted(t.settings().seed for t in children) == [500, 501]
    for child in children:
        assert child.metadata["reroll"]["parent"] == take_id
        assert "re-rolled bars 3–4" in child.label
        audio = ui.library().load_audio(child.id).samples[0]
        assert audio.shape == parent.shape
        np.testing.assert_array_equal(audio[:start_at], parent[:start_at])
        np.testing.assert_array_equal(audio[end_at:], parent[end_at:])
    # The candidates against the take in one looped A/B player.
    assert any("Candidate 2" in m.value for m in at.markdown)
    assert at.get("iframe")
    # Named after their parent; and another click rolls new seeds, not the same takes again.
    parent_name = ui.library().get(take_id).name
    assert all(c.name.startswith(f"{parent_name} · re-rolled bars 3–4") for c in children)
    assert at.number_input(key=f"reroll_seed_{take_id}").value == 502


def bar_field(at: AppTest, name: str, song):
    [found] = [n for n in at.number_input if n.key == f"{name}_{song.key}"]
    return found


def test_an_audio_songs_bars_are_found_corrected_kept_and_go_with_its_takes(app_env):
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(8.0), "minuet")
    at.run()
    song = at.session_state["sketch"]
    assert song.bar_grid is not None  # found by beat tracking while the file loaded
    assert song.bar_grid.bpm == pytest.approx(132.0, rel=0.03)  # tests/chiptune.py's tempo
    [bars] = [e.label for e in at.expander if e.label.startswith("Bars:")]
    assert bars.endswith("(detected)")  # it says where the bars come from
    # The composer corrects it: three beats to the bar, bar 1 at 0.5 s.
    bar_field(at, "per_bar", song).set_value(3).run()
    bar_field(at, "downbeat", song).set_value(0.5).run()
    assert not at.exception
    grid = at.session_state["sketch"].bar_grid
    assert (grid.beats_per_bar, grid.downbeat_s) == (3, 0.5)
    [bars] = [e.label for e in at.expander if e.label.startswith("Bars:")]
    assert "3 beats, bar 1 at 0.50 s (typed)" in bars
    # Kept for the next session: a refresh loads the song with the composer's grid.
    again = start(song=False)
    job = again.session_state["load_job"]
    assert job.wait(TIMEOUT) and job.state == "done"
    again.run()
    assert again.session_state["sketch"].bar_grid == grid
    assert any(e.label.endswith("(typed)") for e in again.expander)  # after a restart too
    # A render's takes carry it, and count their note faithfulness per bar of it.
    fast(again)
    again.run()
    press_and_wait(again)
    take = next(t for t in ui.library().list() if t.kind == "take")
    assert take.metadata["bar_grid"] == grid.to_dict()
    assert take.metadata["faithfulness"]["segment"] == "bar"


def test_comp_lanes_pick_bars_of_two_takes_play_the_comp_and_save_it(app_env, tiny_model_dir):
    from pathlib import Path

    from neurochip.comp import COMP_CROSSFADE_S, take_bar_times
    from neurochip.engine import Engine
    from neurochip.settings import TakeSetOptions
    from neurochip.takeset import render_take_set

    midi = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    settings = RenderSettings(prompt="a brass band", steps=3, duration_s=9.0, phase_iterations=0)
    engine = Engine.from_pretrained(tiny_model_dir, device="cpu")
    pair = TakeSetOptions(stereo_pair=True)
    made = render_take_set(engine, load_sketch(midi), settings, pair, library=ui.library())
    a_id, b_id = made.saved["A"], made.saved["B"]
    at = start("views/takes.py", song=False)
    field(at, "toggle", "view.takes_comp").set_value(True).run()
    at.multiselect(key="comp_takes").set_value([a_id, b_id]).run()
    assert not at.exception
    # Lanes: one row per take, a cell per bar, each labelled with that bar's notes kept.
    cells = [b for b in at.button if b.key and b.key.startswith("comp_1_")]
    assert len(cells) >= 5
    assert all(b.label.startswith(":") for b in cells)  # a coloured score
    assert at.get("iframe")  # the comp plays at once, against the takes
    # Take B from bar 3 on.
    for segment in range(2, len(cells)):
        [cell] = [b for b in at.button if b.key == f"comp_1_{segment}"]
        cell.click().run()
    [save] = [b for b in at.button if b.key == "comp_save"]
    save.click().run()
    assert not at.exception
    [comp] = [t for t in ui.library().list() if t.kind == "comp"]
    parts = comp.metadata["comp"]["parts"]
    assert [(p["take"], p["bars"]) for p in parts] == [(a_id, [1, 2]), (b_id, [3, 5])]
    line = round(take_bar_times(ui.library(), comp)[2] * 44100)
    half = round(COMP_CROSSFADE_S * 44100) // 2
    audio = ui.library().load_audio(comp.id).samples[0]
    a = ui.library().load_audio(a_id).samples[0]
    b = ui.library().load_audio(b_id).samples[0]
    np.testing.assert_array_equal(audio[: line - half], a[: line - half])
    np.testing.assert_array_equal(audio[line + half :], b[line + half :])
    assert any("Added" in s.value for s in at.success)
    # Saved once: the same comp is not saved twice.
    [save] = [b for b in at.button if b.key == "comp_save"]
    assert save.disabled


def test_a_seamless_loop_renders_with_loop_points_and_plays_on_repeat(app_env):
    from neurochip.io.write import read_loop_points

    at = start()
    fast(at)
    field(at, "checkbox", "song.loop").check().run()
    job = press_and_wait(at)
    pair = ui.library().get(job.result["pair"])
    assert pair.settings().loop
    assert read_loop_points(pair.audio_path) == (0, round(pair.duration_s * 44100))
    assert any("seamless loop" in c.value for c in at.caption)
    assert at.get("iframe")  # the loop player


def test_a_prompt_timeline_from_the_sections_table_reaches_the_take(app_env):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.session_state["sketch"] = load_sketch(wav_bytes(), name="minuet.wav")
    at.session_state["upload_id"] = "test"
    quiet(at)
    # As a composer left the table (kept with the session): an intro, then the band.
    session(at).song(at.session_state["sketch"].key).sections = [
        {"start": "0", "prompt": "soft strings", "denoise": None, "guidance": None},
        {"start": "3.5", "prompt": "a full funk band", "denoise": 0.5, "guidance": None},
    ]
    at.run()
    wait_for_model(at)
    assert not at.exception
    settings = at.session_state["last_settings"]
    assert [(s.start_s, s.prompt, s.denoise) for s in settings.sections] == [
        (0.0, "soft strings", None),
        (3.5, "a full funk band", 0.5),
    ]
    fast(at)
    at.run()
    job = press_and_wait(at)
    take = ui.library().get(job.result["A"])
    assert [s.prompt for s in take.settings().sections] == ["soft strings", "a full funk band"]


def test_a_section_that_cannot_be_placed_is_said_in_words():
    with pytest.raises(NeuroChipError, match="Section 2 needs both"):
        songs.sections_from_rows(
            [{"start": "0", "prompt": "a"}, {"start": "4", "prompt": ""}], None
        )
    with pytest.raises(NeuroChipError, match="Section 1: .*bars are not known"):
        songs.sections_from_rows([{"start": "bar 3", "prompt": "a"}], None)
    timeline = songs.sections_from_rows(
        [{"start": "bar 2", "prompt": "b", "denoise": float("nan")}, {"start": "0", "prompt": "a"}],
        [0.0, 2.0],
    )
    assert [(s.start_s, s.prompt, s.denoise) for s in timeline] == [
        (0.0, "a", None),
        (2.0, "b", None),
    ]


# --- stems ------------------------------------------------------------------------------------


def test_stems_render_from_the_instrument_map_and_mix_on_the_mixer(app_env):
    from neurochip.stems import StemTakes
    from tests.test_stems import four_part_midi

    song = load_sketch(four_part_midi(4.0), name="four-parts.mid")
    lead, harmony, bass, drums = (t.key for t in song.tracks)
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.session_state["sketch"] = song
    at.session_state["upload_id"] = "test"
    quiet(at)
    # As a composer left the map (kept with the song): the bass and drums changed, the
    # lead and harmony grouped into one stem.
    session(at).song("another song").stems = [{"name": "Keys", "parts": "2", "prompt": "organ"}]
    session(at).song(song.key).stems = [
        {"name": "Band", "parts": f"{lead}+{harmony}", "prompt": "a horn section"},
        {"name": "Bass", "parts": bass, "prompt": "slap bass", "denoise": 0.25},
        {"name": "Drums", "parts": drums, "prompt": "live drum kit"},
    ]
    at.run()
    wait_for_model(at)
    fast(at)
    field(at, "toggle", "song.stems_on").set_value(True).run()
    assert not at.exception and not at.error
    assert field(at, "checkbox", "view.compare").disabled  # a comparison is of one take
    field(at, "checkbox", "view.stereo_pair").uncheck().run()  # mono stems: the mixer pans them
    job = press_and_wait(at, "Render stems")
    library = ui.library()
    result, mixes = StemTakes.from_library(library, job.result["stems"])
    assert [s.name for s in result.stems] == ["Band", "Bass", "Drums"]
    assert result.stems[0].parts == (lead, harmony)
    assert result.stem_settings[1].denoise == 0.25
    assert result.stem_settings[1].prompt.startswith("slap bass, ")

    # The mixer: solo the bass, and the mix is the bass alone, at once.
    key = f"mix_{job.result['stems']}"
    at.checkbox(key=f"{key}_1_solo").check().run()
    mix = at.session_state[f"_memo_stem_mix_{job.result['stems']}"][1]
    only_bass = result.mix([mixes[0], dataclasses.replace(mixes[1], solo=True), mixes[2]])
    np.testing.assert_allclose(mix.samples, only_bass.samples)
    assert np.abs(mix.samples).max() > 0
    [keep] = [b for b in at.button if b.label == "Keep this mix"]
    keep.click().run()
    mixes_kept = [t for t in library.list() if t.kind == "stem mix"]
    assert len(mixes_kept) == 2  # the render's, and the soloed one
    assert [b for b in at.button if b.label == "Keep this mix"][0].disabled  # kept as it is

    # A refresh keeps the map; Takes shows the mixer of a kept mix.
    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    kept = session(again).songs
    assert kept[song.key].stems[1]["prompt"] == "slap bass"
    assert kept["another song"].stems[0]["prompt"] == "organ"  # each song keeps its own map
    again.switch_page("views/takes.py").run()
    assert not again.exception


def test_a_wrong_stem_row_is_said_in_words():
    song = load_sketch(songs.DEMO_SKETCH.read_bytes(), name="demo.mid")
    with pytest.raises(NeuroChipError, match="Stem row 2: .*instrument"):
        songs.stems_from_rows([{"name": "A", "parts": "2", "prompt": "x"}, {"name": "B"}], song)
    with pytest.raises(NeuroChipError, match="part '99'"):
        songs.stems_from_rows([{"name": "A", "parts": "99", "prompt": "x"}], song)
    [stem] = songs.stems_from_rows([{"name": "", "parts": "2, 3", "prompt": "x"}], song)
    assert stem.name == "Stem 1" and stem.parts == ("2", "3")


def test_a_half_typed_section_or_stem_row_keeps_the_page_and_says_why_render_waits(app_env):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    song = load_sketch(songs.DEMO_SKETCH.read_bytes(), name="greensleeves.mid")
    at.session_state["sketch"] = song
    at.session_state["upload_id"] = "test"
    quiet(at)
    session(at).song(song.key).sections = [{"start": "bar 5", "prompt": None}]
    at.run()
    wait_for_model(at)
    assert not at.exception
    assert any("Section 1 needs both" in e.value for e in at.error)
    assert [b for b in at.button if b.label == "Render the grid"]  # the page goes on
    [render] = [b for b in at.button if b.label == "Render"]
    assert render.disabled
    assert any("Render waits for the Sections table" in c.value for c in at.caption)

    # A stem map with a part in two stems: said, and Render stems waits for it.
    session(at).song(song.key).sections = []
    session(at).song(song.key).stems = [
        {"name": "A", "parts": "2+3", "prompt": "horns"},
        {"name": "B", "parts": "3", "prompt": "strings"},
    ]
    at.switch_page("views/takes.py").run()  # and back: the tables are drawn from the session
    at.switch_page("views/arrange.py").run()
    field(at, "toggle", "song.stems_on").set_value(True).run()
    assert any("Part 3 is in two stems" in e.value for e in at.error)
    [render] = [b for b in at.button if b.label == "Render stems"]
    assert render.disabled
    assert any("Render waits for the Stems map" in c.value for c in at.caption)


def test_a_refresh_keeps_the_last_render_on_the_page(app_env):
    at = start(song=False)
    upload_into(at, "minuet.wav", wav_bytes(4.0), "u1")
    at.run()
    wait_for_model(at)
    fast(at)
    field(at, "checkbox", "view.stereo_pair").uncheck().run()
    job = press_and_wait(at)
    take_id = job.result["A"]
    field(at, "number_input", "song.start_s").set_value(1.0).run()  # the sliders move on

    again = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    again.run()
    assert again.session_state["load_job"].wait(TIMEOUT)
    again.run()
    assert not again.exception
    assert any(s.value.startswith("Rendered in") for s in again.success)
    assert any(b.key == f"dl_{take_id}" for b in again.get("download_button"))
    assert session(again).last_render["start_s"] == 0.0  # as rendered


@pytest.mark.parametrize(
    ("strip", "said"),
    [
        ([0.9, 0.9, 0.5, 0.9], "lowest around 12.0 s"),  # song seconds: the region starts at 10
        ([0.55, 0.6, 0.5, 0.58], "low all through"),  # red all along: not "no low spots"
        ([0.9, 0.88, 0.92, 0.9], "no place much lower than the rest"),
    ],
)
def test_the_notes_kept_line_says_what_the_strip_shows(strip, said):
    from neurochip.faithfulness import Faithfulness

    faith = Faithfulness(
        score=float(np.mean(strip)),
        times_s=np.arange(len(strip), dtype=float),
        strip=np.asarray(strip),
        segment="second",
        duration_s=float(len(strip)),
        counted_s=float(len(strip)),
    )
    line = ui.notes_kept_line(faith, start_s=10.0)  # no notes counted: the chroma line
    assert line.startswith(f"**Chroma match: {faith.score:.2f}** · ") and said in line


def test_a_shorter_song_brings_the_preview_region_and_span_inside_it(app_env):
    at = start(song=False)
    upload_into(at, "long.wav", wav_bytes(12.0), "long")
    at.run()
    field(at, "slider", "song.preview_start_s").set_value(6.8).run()
    field(at, "number_input", "song.start_s").set_value(11.0).run()
    upload_into(at, "short.wav", wav_bytes(6.0), "short")
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["sketch"].name == "short.wav"
    # Another song starts at its beginning: not a half-second span at the end of it.
    assert field(at, "slider", "song.preview_start_s").value == 0.0
    assert field(at, "number_input", "song.start_s").value == 0.0
    duration = field(at, "number_input", "song.duration_s")
    assert duration.value == 6.0


def test_another_song_starts_without_the_last_songs_seamless_loop(app_env):
    at = start(song=False)
    upload_into(at, "level1.wav", wav_bytes(8.0), "one")
    at.run()
    field(at, "checkbox", "song.loop").check().run()
    assert field(at, "checkbox", "song.loop").value
    at.switch_page("views/takes.py").run()
    at.switch_page("views/arrange.py").run()
    assert field(at, "checkbox", "song.loop").value  # the same song: still a loop
    upload_into(at, "cutscene.wav", wav_bytes(6.0), "two")
    at.run()
    assert not at.exception, at.exception
    assert not field(at, "checkbox", "song.loop").value  # a cutscene is no loop unless asked
