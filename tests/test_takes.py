from __future__ import annotations

import json

import numpy as np
import pytest

from neurochip.audio import Audio, save_audio
from neurochip.engine import RenderSettings
from neurochip.errors import NeuroChipError
from neurochip.takes import (
    read_take_metadata,
    save_take,
    settings_from_take,
    sidecar_path,
    take_metadata,
)

SETTINGS = RenderSettings(prompt="a funk band with slap bass, ünïcödé", seed=9, denoise=0.3)
AUDIO = Audio(np.zeros((1, 4410), np.float32), 44100)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_settings_round_trip_from_the_file(tmp_path, suffix):
    path = save_take(tmp_path / f"take{suffix}", AUDIO, take_metadata("take", {"A": SETTINGS}))
    sidecar_path(path).unlink()  # the embedded copy alone must do
    assert settings_from_take(path) == SETTINGS


def test_sidecar_is_written_and_used_when_the_file_lost_its_metadata(tmp_path):
    meta = take_metadata("stereo pair", {"A": SETTINGS, "B": SETTINGS}, "sketch.wav", width=0.8)
    path = save_take(tmp_path / "pair.wav", AUDIO, meta)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["kind"] == "stereo pair" and sidecar["width"] == 0.8
    save_audio(path, AUDIO)  # e.g. re-exported by a tool that drops metadata
    assert settings_from_take(path, "B") == SETTINGS


def test_file_without_settings_is_a_clear_error(tmp_path):
    path = save_audio(tmp_path / "plain.wav", AUDIO)
    with pytest.raises(NeuroChipError, match="no NeuroChip settings"):
        read_take_metadata(path)
    take = save_take(tmp_path / "t.wav", AUDIO, take_metadata("take", {"A": SETTINGS}))
    with pytest.raises(NeuroChipError, match="not 'B'"):
        settings_from_take(take, "B")
