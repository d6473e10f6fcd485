"""Seamless loops (issue 12): a take that plays on repeat with no seam, and loop points that
game engines read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from neurochip.engine import LOOP_CROSSFADE_S, wrap_loop
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import read_loop_points, save_audio
from neurochip.library.metadata import save_take, take_metadata
from neurochip.settings import RenderSettings
from tests.chiptune import make_chiptune

SR = 44100
BASE = RenderSettings(
    prompt="a funk band", steps=6, denoise=0.5, phase_iterations=0, start_s=0.5, duration_s=6.0
)


def seam_scores(x: np.ndarray) -> dict[str, float]:
    """How the loop point compares with every other point of the take, played twice.

    ``step``: the sample-to-sample jump at the loop point, as a percentile of the take's own
    jumps (a click is near 100); ``flux``: the spectral flux across the loop point (how much
    the spectrum changes from the 46 ms before it to the 46 ms after), as a percentile of the
    flux everywhere else (a change of band or a cut note is near 100).
    """
    steps = np.abs(np.diff(x))
    step = abs(float(x[0]) - float(x[-1]))
    n, hop = 2048, 512
    twice = np.concatenate([x, x])
    frames = np.lib.stride_tricks.sliding_window_view(twice, n)[::hop] * np.hanning(n)
    mags = np.abs(np.fft.rfft(frames, axis=-1))
    mags /= np.linalg.norm(mags, axis=-1, keepdims=True) + 1e-9
    flux = np.sqrt((np.diff(mags, axis=0).clip(min=0) ** 2).sum(-1))
    across = [i for i in range(len(flux)) if i * hop < x.size < i * hop + n + hop]
    elsewhere = np.delete(flux, across)
    return {
        "step": float((steps < step).mean() * 100),
        "flux": float((elsewhere < flux[across].max()).mean() * 100),
    }


@pytest.fixture(scope="module")
def song() -> Audio:
    return Audio(make_chiptune(7.3, seed=2), SR)


@pytest.fixture(scope="module")
def renders(tiny_model, song):
    from neurochip.engine import Engine

    engine = Engine(tiny_model)
    plain = engine.render(song, BASE)
    loop = engine.render(song, dataclasses.replace(BASE, loop=True))
    return plain, loop


def test_a_loop_flows_from_its_last_moment_into_its_first_like_anywhere_else(renders):
    plain, loop = renders
    assert loop.audio.frames == plain.audio.frames == 6 * SR  # the span, exactly
    assert loop.start_s == 0.5 and loop.info["loop"]["crossfade_s"] == LOOP_CROSSFADE_S
    looped = seam_scores(loop.audio.samples[0])
    assert looped["step"] < 99 and looped["flux"] < 95
    # The same span rendered without the loop option clicks at its loop point: the check
    # can fail.
    assert seam_scores(plain.audio.samples[0])["step"] > 99.9


def test_a_loop_is_the_plain_render_away_from_its_ends_in_kind(renders):
    # Same notes, same band: the loop differs from the plain take by its context near the
    # ends, not by being another take (another seed lies much further away).
    plain, loop = renders
    middle = slice(2 * SR, 4 * SR)
    a, b = plain.audio.samples[0, middle], loop.audio.samples[0, middle]
    assert np.corrcoef(a, b)[0, 1] > 0.5


def test_a_loop_too_short_is_refused(tiny_model, song):
    from neurochip.engine import Engine

    short = dataclasses.replace(BASE, loop=True, duration_s=0.5)
    with pytest.raises(NeuroChipError, match="too short"):
        Engine(tiny_model).render(song, short)


def test_the_input_wraps_round_without_a_jump():
    x = np.sin(2 * np.pi * np.arange(1000) / 37.3)[None].astype(np.float32)
    assert abs(x[0, 0] - x[0, -1]) > 0.5  # the sketch itself jumps where it wraps
    for pad in (300, 2500):
        wrapped = wrap_loop(x, pad, 40)
        assert wrapped.shape == (1, 1000 + 2 * pad)
        assert np.abs(np.diff(wrapped[0])).max() <= 1.05 * np.abs(np.diff(x[0])).max()
        np.testing.assert_array_equal(wrapped[0, pad + 30 : pad + 970], x[0, 30:970])


@pytest.mark.parametrize("suffix", [".wav", ".ogg", ".flac"])
def test_loop_points_are_written_where_game_engines_read_them(tmp_path, suffix):
    audio = Audio(make_chiptune(2.0)[:1], SR)
    path = save_audio(tmp_path / f"loop{suffix}", audio, loop=(1000, audio.frames - 1000))
    assert read_loop_points(path) == (1000, audio.frames - 1000)
    data, rate = sf.read(path)
    assert rate == SR and len(data) == audio.frames  # still a plain, playable file


def test_a_wav_smpl_chunk_says_what_the_format_says(tmp_path):
    audio = Audio(np.zeros((1, SR), np.float32), SR)
    path = save_audio(tmp_path / "loop.wav", audio, loop=(0, SR))
    data = path.read_bytes()
    at = data.index(b"smpl")
    fields = [int.from_bytes(data[at + 8 + i : at + 12 + i], "little") for i in range(0, 60, 4)]
    assert fields[2] == round(1e9 / SR)  # nanoseconds a sample
    assert fields[7] == 1  # one loop
    assert fields[10:14] == [0, 0, SR - 1, 0]  # forward, first sample, last sample inclusive
    assert int.from_bytes(data[4:8], "little") == len(data) - 8  # the RIFF size still right


def test_takes_rendered_as_loops_carry_their_loop_points(tmp_path):
    audio = Audio(np.zeros((1, SR), np.float32), SR)
    looped = take_metadata("take", {"A": dataclasses.replace(BASE, loop=True)})
    plain = take_metadata("take", {"A": BASE})
    assert read_loop_points(save_take(tmp_path / "loop.wav", audio, looped)) == (0, SR)
    assert read_loop_points(save_take(tmp_path / "plain.wav", audio, plain)) is None
    compare = take_metadata("crossfade comparison", {"A": dataclasses.replace(BASE, loop=True)})
    assert read_loop_points(save_take(tmp_path / "compare.wav", audio, compare)) is None


def test_render_loop_on_the_command_line_loops_that_part_of_the_song(tmp_path, tiny_model_dir):
    from pathlib import Path

    from neurochip.cli import main
    from neurochip.library.metadata import settings_from_take

    midi = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    out = tmp_path / "level-1.ogg"
    args = ["render", str(midi), "-o", str(out), "--prompt", "a band", "--steps", "3"]
    assert main([*args, "--loop", "1.8", "9", "--model", str(tiny_model_dir)]) == 0
    frames = sf.info(out).frames
    assert frames == round(7.2 * SR)
    assert read_loop_points(out) == (0, frames)
    settings = settings_from_take(out)
    assert settings.loop and (settings.start_s, settings.duration_s) == (1.8, 7.2)
    assert main([*args, "--loop", "9", "1.8", "--model", str(tiny_model_dir)]) == 2


def test_a_loop_after_the_songs_start_gets_an_intro_that_flows_into_it(tmp_path, tiny_model_dir):
    from pathlib import Path

    from neurochip.cli import main
    from neurochip.library.metadata import read_take_metadata

    midi = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    out = tmp_path / "level-1.wav"
    args = ["render", str(midi), "-o", str(out), "--prompt", "a band", "--steps", "3"]
    assert main([*args, "--loop", "1.8", "9", "--model", str(tiny_model_dir)]) == 0
    intro, rate = sf.read(tmp_path / "level-1-intro.wav")
    loop, _ = sf.read(out)
    assert len(intro) == round(1.8 * rate)  # the song up to the loop
    assert read_loop_points(tmp_path / "level-1-intro.wav") is None  # played once
    assert read_take_metadata(tmp_path / "level-1-intro.wav")["kind"] == "intro"
    # Intro then loop: the join is as smooth as the loop's own wrap, and as the take itself.
    steps = np.abs(np.diff(loop))
    join = abs(loop[0] - intro[-1])
    assert (steps < join).mean() < 0.99
    # The intro ends on the loop's own last moments (whose next sample is the loop's first).
    np.testing.assert_allclose(intro[-1], loop[-1], atol=2e-4)


def test_re_rolling_a_loops_last_bar_keeps_its_loop_point(renders, song, tiny_model):
    from neurochip.engine import REROLL_MARGIN_S, Engine

    _, loop = renders
    settings = dataclasses.replace(loop.settings, seed=77)
    [child] = Engine(tiny_model).reroll_many(song, loop.audio, [settings], (5.0, 6.0))
    old, new = loop.audio.samples[0], child.audio.samples[0]
    edge = round(REROLL_MARGIN_S * SR)
    assert new[-1] == old[-1]  # the end that flows into the start, as it was
    np.testing.assert_allclose(new[-50:], old[-50:], atol=1e-5)  # and coming back to it
    np.testing.assert_array_equal(new[:SR], old[:SR])
    assert not np.array_equal(new[5 * SR : 6 * SR - edge], old[5 * SR : 6 * SR - edge])
    assert seam_scores(new)["step"] < 99  # still seamless on repeat


def test_a_loops_estimate_counts_its_wrapped_context(engine, song):
    engine.render(song, BASE)  # measures this machine's stage rates
    plain = engine.estimate_s(song, [BASE])
    looped = engine.estimate_s(song, [dataclasses.replace(BASE, loop=True)])
    assert plain is not None and looped is not None
    # 6 s rendered with 2.56 s wrapped round each side: about 1.85x the work.
    assert 1.4 < looped / plain < 2.4
