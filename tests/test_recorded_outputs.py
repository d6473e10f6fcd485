"""Today's renders, recorded: a refactor of the engine must give back every one of them.

CPU renders with the tiny model are bit-exact, so each case is kept as the sha256 of its
samples quantised to 16 bits (a file's worth of precision) in ``tests/recorded/engine.json``.
Record them again only for a change that is meant to change the sound, and say so in the
commit: ``python -m tests.test_recorded_outputs DIR`` (DIR: a tiny model, built if missing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings, Section, TakeSetOptions
from tests.chiptune import make_chiptune

RECORDED = Path(__file__).parent / "recorded" / "engine.json"
SR = 44100
FAST = RenderSettings(prompt="a string quartet", steps=4, denoise=0.5, phase_iterations=0)


def digest(audio: Audio | np.ndarray) -> str:
    samples = audio.samples if isinstance(audio, Audio) else audio
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767), -32768, 32767)
    return hashlib.sha256(np.ascontiguousarray(pcm.astype("<i2")).tobytes()).hexdigest()


def cases(engine) -> dict[str, Callable[[], list[str]]]:
    """Each case's renders, as digests (one per take or cell)."""
    from neurochip.stems import Stem, render_stems
    from neurochip.takeset import render_take_set
    from neurochip.variations import render_variations, variation_grid
    from tests.test_stems import four_part_midi

    song = Audio(make_chiptune(4.0, seed=3), SR)

    def take():
        return [digest(engine.render(song, FAST).audio)]

    def pair():
        made = render_take_set(engine, song, FAST, TakeSetOptions(stereo_pair=True))
        return [digest(made.files[role].audio) for role in ("A", "B", "pair")]

    def preview():
        return [digest(engine.preview(song, FAST, 1.0).audio)]

    def grid():
        cells = variation_grid(FAST, [5, 6], denoise=[0.3, 0.6])
        made = render_variations(engine, song, cells, region=(1.0, 2.0))
        return [digest(v.render.audio) for v in made]

    def reroll():
        parent = engine.render(song, FAST).audio
        again = [dataclasses.replace(FAST, seed=s) for s in (11, 12)]
        return [digest(r.audio) for r in engine.reroll_many(song, parent, again, (1.5, 2.5))]

    def loop():
        looped = dataclasses.replace(FAST, start_s=0.5, duration_s=3.0, loop=True)
        return [digest(engine.render(song, looped).audio)]

    def shifted_windows():
        return [digest(engine.render(song, dataclasses.replace(FAST, windows="shifted")).audio)]

    def feature_reuse():
        return [digest(engine.render(song, dataclasses.replace(FAST, feature_reuse=2)).audio)]

    def sections():
        timeline = (Section(0.0, "soft strings"), Section(2.0, "a funk band", denoise=0.4))
        settings = dataclasses.replace(FAST, sections=timeline, transition_s=1.0)
        return [digest(engine.render(song, settings).audio)]

    def stems():
        from neurochip.sketch import load_sketch

        midi = load_sketch(four_part_midi(3.0), name="four-parts.mid")
        lead, harmony, bass, drums = (t.key for t in midi.tracks)
        instruments = [
            Stem("Band", (lead, harmony), "a horn section"),
            Stem("Bass", (bass,), "slap bass", denoise=0.25),
            Stem("Drums", (drums,), "live drum kit"),
        ]
        made = render_stems(engine, midi, FAST, instruments)
        return [digest(audio) for audio in made.audios]

    return {
        "take": take,
        "stereo pair": pair,
        "preview": preview,
        "2x2 grid": grid,
        "re-roll": reroll,
        "loop": loop,
        "shifted windows": shifted_windows,
        "feature reuse": feature_reuse,
        "sections": sections,
        "stems": stems,
    }


NAMES = list(json.loads(RECORDED.read_text())) if RECORDED.is_file() else []


@pytest.mark.parametrize("name", NAMES)
def test_a_render_is_what_it_was_when_recorded(engine, name):
    assert cases(engine)[name]() == json.loads(RECORDED.read_text())[name]


def test_every_case_is_recorded(engine):
    assert sorted(NAMES) == sorted(cases(engine))


def record(model_dir: Path) -> None:
    from neurochip.engine import Engine
    from neurochip.model import load_model
    from tests.tiny_model import build_tiny_model

    if not (model_dir / "model_index.json").is_file():
        build_tiny_model(model_dir)
    engine = Engine(load_model(model_dir, device="cpu"))
    made = {name: case() for name, case in cases(engine).items()}
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(made, indent=1, sort_keys=True) + "\n")
    print(f"Recorded {len(made)} cases in {RECORDED}")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
