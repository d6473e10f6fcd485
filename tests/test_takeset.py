"""The arrangement workflow: what one render makes, for every front end."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from neurochip import faithfulness
from neurochip.errors import RenderCancelled
from neurochip.faithfulness import midi_time_signatures, note_faithfulness
from neurochip.io.audio import Audio
from neurochip.library.metadata import read_take_metadata, settings_from_take
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import Sketch
from neurochip.synth import read_midi
from neurochip.takeset import render_take_set
from neurochip.transcription import reference_notes
from tests.chiptune import make_chiptune

SR = 44100
DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
FAST = RenderSettings(prompt="a brass band", steps=4, denoise=0.5, phase_iterations=0)


def sketch(seconds: float = 2.0, stereo: bool = False, rate: int = SR) -> Sketch:
    audio = Audio(make_chiptune(seconds, stereo=stereo), SR).resample(rate)
    return Sketch(audio, "minuet.wav", "key")


def test_a_single_take(engine):
    takes = render_take_set(engine, sketch(), FAST)
    assert list(takes.files) == ["A"] and takes.main is takes.files["A"]
    meta = takes.files["A"].metadata
    assert meta["kind"] == "take" and meta["source"] == "minuet.wav"
    assert meta["takes"] == {"A": FAST.to_dict()}


def test_a_stereo_pair_keys_take_b_as_take_b(engine, tmp_path):
    takes = render_take_set(engine, sketch(), FAST, TakeSetOptions(stereo_pair=True, seed_b=7))
    assert list(takes.files) == ["A", "B", "pair"] and takes.main is takes.files["pair"]
    assert takes.renders["B"].settings.seed == 7
    paths = takes.write(tmp_path / "cover.wav")
    assert [p.name for p in paths] == ["cover-A.wav", "cover-B.wav", "cover.wav"]
    assert read_take_metadata(tmp_path / "cover-B.wav")["takes"].keys() == {"B"}
    assert settings_from_take(tmp_path / "cover-B.wav").seed == 7
    assert settings_from_take(tmp_path / "cover.wav", "B").seed == 7
    assert takes.files["pair"].metadata["width"] == 1.0


@pytest.mark.parametrize(("stereo_sketch", "pair"), [(True, False), (False, True), (True, True)])
def test_the_comparison_starts_as_the_sketch_the_composer_hears(engine, stereo_sketch, pair):
    song = sketch(3.0, stereo=stereo_sketch)
    options = TakeSetOptions(stereo_pair=pair, compare=True, compare_at_s=1.5)
    compare = render_take_set(engine, song, FAST, options).files["compare"]
    assert compare.audio.channels == 2
    heard = song.audio.to_stereo().samples
    np.testing.assert_array_equal(compare.audio.samples[:, :SR], heard[:, :SR])
    meta = compare.metadata
    assert (meta["fade_at_s"], meta["fade_s"], meta["back_at_s"]) == (1.5, 2.0, None)


def test_a_comparison_of_a_48_khz_span_lines_up_with_the_render(engine):
    song = sketch(3.0, rate=48000)
    settings = FAST.replace(start_s=0.5, duration_s=2.0)
    takes = render_take_set(engine, song, settings, TakeSetOptions(compare=True))
    compare, take = takes.files["compare"].audio, takes.files["A"].audio
    assert compare.sample_rate == take.sample_rate == SR and compare.frames == take.frames
    assert takes.files["compare"].metadata["fade_at_s"] == pytest.approx(2.0 / 3)


def test_every_file_is_kept_in_the_library_as_soon_as_it_exists(engine, tmp_path):
    library = TakeLibrary(tmp_path / "home")
    options = TakeSetOptions(stereo_pair=True, compare=True)
    takes = render_take_set(engine, sketch(), FAST, options, library=library)
    assert set(takes.saved) == {"A", "B", "pair", "compare"}
    for role, take_id in takes.saved.items():
        take = library.get(take_id)
        assert take.metadata == takes.files[role].metadata
        # As stored: 24-bit, and clipped where a comparison's fade went over full scale.
        expected = np.clip(takes.files[role].audio.samples, -1, 1)
        np.testing.assert_allclose(library.load_audio(take_id).samples, expected, atol=1e-6)
        assert take.thumbnail_path is not None


def test_a_cancelled_pair_keeps_nothing_half_made(engine, tmp_path):
    # Takes A and B denoise together: a cancel stops both, and neither is kept half-made.
    library = TakeLibrary(tmp_path / "home")
    cancel = threading.Event()

    def progress(fraction: float, stage: str) -> None:
        if stage.startswith("denoise step 1 "):
            cancel.set()

    with pytest.raises(RenderCancelled):
        render_take_set(
            engine,
            sketch(),
            FAST,
            TakeSetOptions(stereo_pair=True),
            library=library,
            progress=progress,
            cancel=cancel,
        )
    assert library.list() == []


def test_a_pair_renders_both_takes_in_the_calls_of_one(engine, tiny_model):
    sizes: list[int] = []
    tiny_model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(int(args[0].shape[0])), with_kwargs=True
    )
    roomy = dataclasses.replace(FAST, batch_size=32)
    render_take_set(engine, sketch(), roomy, TakeSetOptions(stereo_pair=False, compare=False))
    one_take = list(sizes)
    sizes.clear()
    render_take_set(engine, sketch(), roomy, TakeSetOptions(stereo_pair=True, compare=False))
    assert len(sizes) == len(one_take) and sum(sizes) == 2 * sum(one_take)


def test_progress_covers_the_whole_set_in_order(engine):
    seen: list[tuple[float, str]] = []
    render_take_set(
        engine,
        sketch(),
        FAST,
        TakeSetOptions(stereo_pair=True),
        progress=lambda f, s: seen.append((f, s)),
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[0][1] == "encode" and seen[-1][1] == "done"
    assert f"denoise step {FAST.denoise_steps} of {FAST.denoise_steps}" in [s for _, s in seen]


# --- note faithfulness in every take's metadata ---------------------------------------------------


def test_every_file_says_how_faithful_its_takes_are(engine, tmp_path):
    library = TakeLibrary(tmp_path / "home")
    options = TakeSetOptions(stereo_pair=True, compare=True)
    song = sketch(3.0)
    takes = render_take_set(engine, song, FAST, options, library=library)
    a, b = (takes.files[k].metadata["faithfulness"] for k in "AB")
    for one, render in ((a, takes.renders["A"]), (b, takes.renders["B"])):
        # Notes counted against the sketch's own (its transcription, over the span).
        reference = reference_notes(song, render.start_s, render.source.duration_s)
        expected = note_faithfulness(render.source, render.audio, reference=reference).to_dict()
        assert one == expected and one["segment"] == "second" and 0 <= one["score"] <= 1
        assert len(one["strip"]) == 3  # per second of the 3 s span
    kept = round((a["notes"]["score"] + b["notes"]["score"]) / 2, 4)
    both = {
        "score": round((a["score"] + b["score"]) / 2, 4),
        "takes": {"A": a, "B": b},
        "notes": {"score": kept},
    }
    assert takes.files["pair"].metadata["faithfulness"] == both
    assert takes.files["compare"].metadata["faithfulness"] == both
    # Indexed, so the Takes page sorts by it: notes kept, then chroma.
    for role, take_id in takes.saved.items():
        found = takes.files[role].metadata["faithfulness"]
        score, notes = found["score"], found["notes"]["score"]
        assert library.get(take_id).faithfulness == score
        assert library.get(take_id).notes_kept == notes
        assert library.get(take_id).label.endswith(f"notes kept {notes:.0%} · chroma {score:.2f}")


def test_a_file_of_several_takes_carries_their_mean_notes_kept_when_all_were_counted():
    from neurochip.takeset import combined_faithfulness

    a = {"score": 0.9, "notes": {"score": 0.8}}
    b = {"score": 0.7, "notes": {"score": 0.5}}
    chroma_only = {"score": 0.5}
    assert combined_faithfulness({"A": a}) == a
    assert combined_faithfulness({"A": a, "B": b}) == {
        "score": 0.8,
        "takes": {"A": a, "B": b},
        "notes": {"score": 0.65},
    }
    assert "notes" not in combined_faithfulness({"A": a, "B": chroma_only})
    assert "notes" not in combined_faithfulness({"A": a, "B": None})
    assert combined_faithfulness({"A": None, "B": None}) is None


def test_a_comparison_of_one_take_carries_its_faithfulness(engine):
    takes = render_take_set(engine, sketch(), FAST, TakeSetOptions(compare=True))
    measured = takes.files["A"].metadata["faithfulness"]
    assert measured["score"] > 0
    assert takes.files["compare"].metadata["faithfulness"] == measured


def test_a_midi_sketch_is_measured_per_bar_of_its_span(engine):
    from neurochip.sketch import load_sketch

    song = load_sketch(DEMO_MIDI)  # 3/4 at 100 bpm: a bar every 1.8 s
    bars = faithfulness.bar_times(read_midi(DEMO_MIDI), midi_time_signatures(song.midi))
    spacing = bars[1] - bars[0]
    settings = FAST.replace(start_s=bars[2] + spacing / 3, duration_s=4.0)
    take = render_take_set(engine, song, settings).files["A"].metadata["faithfulness"]
    assert take["segment"] == "bar" and take["first_bar"] == 3  # starts inside bar 3
    starts = [0.0] + [round(t - settings.start_s, 3) for t in bars[3:] if t < settings.start_s + 4]
    assert take["times_s"] == pytest.approx(starts, abs=2e-3)


def test_a_failing_meter_loses_no_take(engine, tmp_path, monkeypatch, caplog):
    import neurochip.takeset as takeset

    def broken(*args, **kwargs):
        raise RuntimeError("librosa is broken")

    monkeypatch.setattr(takeset, "span_faithfulness", broken)
    library = TakeLibrary(tmp_path / "home")
    options = TakeSetOptions(stereo_pair=True)
    takes = render_take_set(engine, sketch(), FAST, options, library=library)
    assert set(takes.saved) == {"A", "B", "pair"}
    assert all(f.metadata["faithfulness"] is None for f in takes.files.values())
    assert all(library.get(i).faithfulness is None for i in takes.saved.values())
    assert "librosa is broken" in caplog.text


# --- one entry for a take set or stems: what it renders, said before it runs ------------------


def spied_renders(engine, monkeypatch) -> list[tuple[list, list[RenderSettings]]]:
    """Each ``engine.render_many`` call from now on: (one song per take, the takes)."""
    ran = []
    original = engine.render_many

    def spy(songs, takes, *args, **kwargs):
        takes = list(takes)
        ran.append((songs if isinstance(songs, list) else [songs] * len(takes), takes))
        return original(songs, takes, *args, **kwargs)

    monkeypatch.setattr(engine, "render_many", spy)
    return ran


def test_planned_is_what_the_render_of_a_take_set_runs(engine, monkeypatch):
    from neurochip.arrangement import planned, render

    song = sketch(4.0)
    settings = dataclasses.replace(FAST, loop=True, start_s=1.0, duration_s=2.0)
    options = TakeSetOptions(stereo_pair=True, seed_b=9)
    ran = spied_renders(engine, monkeypatch)
    made = render(engine, song, settings, options)
    assert list(made.files) == ["A", "B", "pair", "intro"]
    loops = planned(song, settings, options)
    assert [loop.takes for loop in loops] == [takes for _, takes in ran]
    assert [[id(s) for s in loop.songs] for loop in loops] == [[id(s) for s in s_] for s_, _ in ran]
    takes, intro = loops
    assert [t.seed for t in takes.takes] == [settings.seed, 9]  # take B, as the options say
    assert intro.takes[0] == dataclasses.replace(settings, start_s=0.0, duration_s=1.0, loop=False)
    # No intro without a loop after the song's start, or when asked for none.
    assert len(planned(song, FAST, options)) == 1
    assert len(planned(song, settings, dataclasses.replace(options, loop_intro=False))) == 1


def test_the_estimate_is_the_engines_for_each_loop_planned():
    from neurochip.arrangement import estimate_s, planned

    class Clock:
        def __init__(self, answers):
            self.answers, self.asked = list(answers), []

        def estimate_s(self, songs, takes):
            self.asked.append((songs, takes))
            return self.answers.pop(0)

    song = sketch(4.0)
    settings = dataclasses.replace(FAST, loop=True, start_s=1.0)
    clock = Clock([3.0, 1.0])
    assert estimate_s(clock, song, settings) == 4.0  # the loop and its intro
    assert clock.asked == [tuple(loop) for loop in planned(song, settings)]
    assert estimate_s(Clock([None]), song, settings) is None  # not measured yet
    assert estimate_s(Clock([2.0, None]), song, settings) == 2.0
