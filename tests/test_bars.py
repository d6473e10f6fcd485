"""Bar grids of audio sketches: beat tracking's guess, the composer's correction, kept."""

from __future__ import annotations

import numpy as np
import pytest

from neurochip.bars import BarGrid, estimate_bar_grid
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.sketch import load_sketch
from tests.chiptune import BPM, make_chiptune

SR = 44100


def click_track(bpm: float, downbeat_s: float, seconds: float, per_bar: int = 4) -> Audio:
    """Clicks on every beat, the first of each bar louder and higher, bar 1 at downbeat_s."""
    samples = np.zeros(int(seconds * SR))
    beat = 60.0 / bpm
    first = downbeat_s - per_bar * beat * np.ceil(downbeat_s / (per_bar * beat))  # a pickup
    n = np.arange(2000)
    for k in range(int((seconds - first) / beat) + 1):
        at = first + k * beat
        if at < 0 or int(at * SR) >= samples.size:
            continue
        down = k % per_bar == 0
        click = (
            (1.0 if down else 0.35)
            * np.exp(-n / 300)
            * np.sin(2 * np.pi * (1000 if down else 800) * n / SR)
        )
        start = int(at * SR)
        samples[start : start + n.size] += click[: samples.size - start]
    return Audio(samples[None].astype(np.float32), SR)


@pytest.mark.parametrize(("bpm", "downbeat"), [(120.0, 0.5), (97.0, 1.2), (132.0, 0.9)])
def test_beat_tracking_finds_the_tempo_and_bar_one_of_a_click_track(bpm, downbeat):
    grid = estimate_bar_grid(click_track(bpm, downbeat, 20.0))
    assert grid is not None
    assert grid.bpm == pytest.approx(bpm, rel=0.02)
    assert grid.downbeat_s == pytest.approx(downbeat, abs=0.05)


def test_beat_tracking_finds_the_tempo_of_a_chip_tune_in_three():
    grid = estimate_bar_grid(Audio(make_chiptune(20.0), SR), beats_per_bar=3)
    assert grid is not None and grid.bpm == pytest.approx(BPM, rel=0.02)


def test_silence_has_no_grid():
    assert estimate_bar_grid(Audio(np.zeros((1, 5 * SR), np.float32), SR)) is None


def test_a_grid_places_its_bars_and_travels_as_json():
    grid = BarGrid(120.0, 0.5, 4)
    assert grid.bar_times(6.6) == [0.5, 2.5, 4.5, 6.5]
    assert BarGrid.from_dict(grid.to_dict()) == grid
    assert BarGrid.from_dict({"bpm": "fast"}) is None and BarGrid.from_dict(None) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [((0.0,), "BPM"), ((500.0,), "BPM"), ((120.0, -1.0), "0 s or later"), ((120.0, 0, 0), "beats")],
)
def test_impossible_grids_are_refused_in_words(args, message):
    with pytest.raises(NeuroChipError, match=message):
        BarGrid(*args)


def test_an_audio_sketchs_bars_come_from_its_grid_and_midi_keeps_its_own(tmp_path):
    import soundfile as sf

    path = tmp_path / "song.wav"
    sf.write(path, make_chiptune(6.0).T, SR, subtype="PCM_16")
    sketch = load_sketch(path)
    assert sketch_bar_times(sketch) is None  # not estimated unless asked
    with_grid = sketch.with_bar_grid(BarGrid(60.0, 1.0, 2))
    assert sketch_bar_times(with_grid) == [1.0, 3.0, 5.0]
    assert with_grid.key == sketch.key  # the same song: caches and kept copies still match
    midi = load_sketch(
        __import__("pathlib").Path(__file__).parents[1] / "assets" / "greensleeves.mid"
    )
    with pytest.raises(NeuroChipError, match="tempo map"):
        midi.with_bar_grid(BarGrid(100.0))
