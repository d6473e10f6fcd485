"""Comp (issue 12): one take from bars of several, switching at bar lines without a click."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurochip.cli import main
from neurochip.comp import (
    COMP_CROSSFADE_S,
    CompPart,
    comp_audio,
    comp_takes,
    parts_from_bars,
    take_bar_times,
)
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.library.metadata import read_take_metadata, take_metadata
from neurochip.library.names import take_label
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings

SR = 44100


def tone(hz: float, seconds: float = 4.0, phase: float = 0.0) -> Audio:
    t = np.arange(int(seconds * SR)) / SR
    return Audio((0.5 * np.sin(2 * np.pi * hz * t + phase))[None].astype(np.float32), SR)


def test_a_comp_is_take_a_before_the_line_take_b_after_and_smooth_across():
    a, b = tone(220.0), tone(330.0, phase=1.0)
    line = 2 * SR
    fade = round(COMP_CROSSFADE_S * SR)
    comp = comp_audio([a, b], [0, 1], [line], fade)
    assert comp.frames == a.frames and comp.sample_rate == SR
    half = fade // 2
    np.testing.assert_array_equal(comp.samples[:, : line - half], a.samples[:, : line - half])
    np.testing.assert_array_equal(comp.samples[:, line + half :], b.samples[:, line + half :])
    # No discontinuity: sample to sample, the switch moves about as fast as the takes do
    # (a hard cut, the click this avoids, jumps many times further).
    steepest = max(np.abs(np.diff(x.samples[0])).max() for x in (a, b))
    smooth = np.abs(np.diff(comp.samples[0, line - fade : line + fade])).max()
    cut = comp_audio([a, b], [0, 1], [line], 0).samples[0]
    assert abs(cut[line] - cut[line - 1]) > 5 * steepest
    assert smooth <= 1.5 * steepest
    # Equal power: two uncorrelated takes keep their level through the switch.
    rng = np.random.default_rng(0)
    n1, n2 = (Audio(rng.standard_normal((1, 4 * SR)).astype(np.float32) * 0.1, SR) for _ in "ab")
    mixed = comp_audio([n1, n2], [0, 1], [line], fade).samples[0, line - half : line + half]
    assert np.sqrt(np.mean(mixed**2)) == pytest.approx(0.1, rel=0.15)


def test_without_a_crossfade_the_switch_is_at_the_sample():
    a, b = tone(220.0), tone(330.0)
    comp = comp_audio([a, b, a], [0, 1, 0], [SR, 3 * SR], 0)
    np.testing.assert_array_equal(comp.samples[:, :SR], a.samples[:, :SR])
    np.testing.assert_array_equal(
        comp.samples[:, SR + 1 : 3 * SR - 1], b.samples[:, SR + 1 : 3 * SR - 1]
    )
    np.testing.assert_array_equal(comp.samples[:, 3 * SR + 1 :], a.samples[:, 3 * SR + 1 :])


def test_takes_of_other_spans_are_refused():
    with pytest.raises(NeuroChipError, match="one span"):
        comp_audio([tone(220.0, 4.0), tone(220.0, 3.0)], [0, 1], [SR], 100)


def test_bars_picked_become_parts_that_switch_on_bar_lines():
    bars = [0.5, 2.5, 4.5, 6.5]  # bar 1 after a half-second pickup
    parts = parts_from_bars([("x", 1, 2), ("y", 3, 3), ("x", 4, 4)], bars, 0.0, 8.0)
    assert parts == [
        CompPart("x", 0.0, 4.5, (1, 2)),  # the pickup goes with the first part
        CompPart("y", 4.5, 6.5, (3, 3)),
        CompPart("x", 6.5, 8.0, (4, 4)),
    ]
    with pytest.raises(NeuroChipError, match="Bar 3 has no take"):
        parts_from_bars([("x", 1, 2), ("y", 4, 4)], bars, 0.0, 8.0)
    with pytest.raises(NeuroChipError, match="bars 1 to 4"):
        parts_from_bars([("x", 1, 9)], bars, 0.0, 8.0)


def add_take(library: TakeLibrary, audio: Audio, seed: int) -> str:
    settings = RenderSettings(prompt="a brass band", seed=seed, duration_s=audio.duration_s)
    metadata = take_metadata("take", {"A": settings}, "minuet.wav", faithfulness={"score": 0.8})
    return library.add(audio, metadata).id


def test_a_comp_is_kept_with_its_parts_and_the_settings_it_draws_on():
    library = TakeLibrary()
    a, b = tone(220.0), tone(330.0)
    ids = [add_take(library, a, 1), add_take(library, b, 2)]
    parts = [CompPart(ids[0], 0.0, 2.0), CompPart(ids[1], 2.0, 4.0)]
    comp = comp_takes(library, parts)
    assert comp.kind == "comp" and comp.duration_s == pytest.approx(4.0)
    kept = library.load_audio(comp.id).samples[0]
    half = round(COMP_CROSSFADE_S * SR) // 2
    np.testing.assert_allclose(kept[: 2 * SR - half], a.samples[0, : 2 * SR - half], atol=1e-6)
    np.testing.assert_allclose(kept[2 * SR + half :], b.samples[0, 2 * SR + half :], atol=1e-6)
    meta = comp.metadata
    assert [p["take"] for p in meta["comp"]["parts"]] == ids
    assert [p["from"] for p in meta["comp"]["parts"]] == ["A", "B"]
    assert meta["takes"]["A"]["seed"] == 1 and meta["takes"]["B"]["seed"] == 2
    assert take_label(meta, faithfulness=False).startswith("seeds 1, 2")
    with pytest.raises(NeuroChipError, match="no gap"):
        comp_takes(library, [CompPart(ids[0], 0.0, 1.0), CompPart(ids[1], 2.0, 4.0)])
    with pytest.raises(NeuroChipError, match="every bar"):
        comp_takes(library, [CompPart(ids[0], 0.0, 3.0)])
    other = add_take(library, tone(220.0, 3.0), 3)
    with pytest.raises(NeuroChipError, match="one span"):
        comp_takes(library, [CompPart(ids[0], 0.0, 1.0), CompPart(other, 1.0, 3.0)])


DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


def test_comp_on_the_command_line_in_bars_of_the_song(tmp_path, tiny_model_dir, capsys):
    model = ["--model", str(tiny_model_dir)]
    render = ["render", str(DEMO_MIDI), "-o", str(tmp_path / "take.wav"), "--prompt", "a band"]
    assert main([*render, "--steps", "3", "--duration", "9", "--stereo-pair", *model]) == 0
    library = TakeLibrary()
    takes = {t.settings().seed: t for t in library.list() if t.kind == "take"}
    a, b = sorted(takes.items())
    out = tmp_path / "comp.wav"
    assert (
        main(["comp", "-o", str(out), "--take", f"{a[1].id}:1-2", "--take", f"{b[1].id}:3-5"]) == 0
    )
    bars = take_bar_times(library, a[1])
    comp, rate = sf.read(out)
    take_a, _ = sf.read(tmp_path / "take-A.wav")
    take_b, _ = sf.read(tmp_path / "take-B.wav")
    line, half = round(bars[2] * rate), round(COMP_CROSSFADE_S * rate) // 2
    assert comp.shape == take_a.shape
    np.testing.assert_allclose(comp[: line - half], take_a[: line - half], atol=1e-4)
    np.testing.assert_allclose(comp[line + half :], take_b[line + half :], atol=1e-4)
    meta = read_take_metadata(out)
    assert [p["bars"] for p in meta["comp"]["parts"]] == [[1, 2], [3, 5]]
    assert "comp of 2 takes" in capsys.readouterr().out
    assert (
        main(["comp", "-o", str(out), "--take", f"{a[1].id}:1-2", "--take", f"{b[1].id}:4-5"]) == 2
    )
    assert "Bar 3 has no take" in capsys.readouterr().err
