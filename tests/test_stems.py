"""Stems: a part per stem, rendered in shared UNet calls, mixed, exported for a DAW."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import mido
import numpy as np
import pytest
import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.library.names import take_label
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings
from neurochip.sketch import load_sketch
from neurochip.stems import (
    Stem,
    StemMix,
    apply_overrides,
    default_stems,
    heard_stems,
    mix_stems,
    parse_stem,
    render_stems,
    stem_gains,
)
from neurochip.stems_zip import (
    read_stems_json,
    stems_from_json,
    write_stems_zip,
)
from tests.chiptune import make_chiptune
from tests.test_engine import count_unet_calls

SR = 44100
FAST = RenderSettings(prompt="live recording", steps=6, denoise=0.5, phase_iterations=0)

#: (name, channel 0-based, GM program or None, first note's time in s, pitch)
PARTS = (
    ("Lead", 0, 80, 0.50, 76),
    ("Harmony", 1, None, 1.00, 64),
    ("Bass", 2, 33, 0.25, 40),
    ("Drums", 9, None, 0.75, 38),
)


def four_part_midi(seconds: float = 6.0) -> bytes:
    """A type-1 file, 120 BPM: four tracks, each starting its notes at its own time."""
    midi = mido.MidiFile(ticks_per_beat=480)
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)])
    midi.tracks.append(tempo)
    tick_s = 0.5 / 480
    for name, channel, program, first, pitch in PARTS:
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
        if program is not None:
            track.append(mido.Message("program_change", program=program, channel=channel, time=0))
        now = 0.0
        at = first
        while at + 0.3 < seconds:
            track.append(
                mido.Message(
                    "note_on",
                    note=pitch,
                    velocity=100,
                    channel=channel,
                    time=round((at - now) / tick_s),
                )
            )
            track.append(
                mido.Message(
                    "note_off", note=pitch, velocity=0, channel=channel, time=round(0.25 / tick_s)
                )
            )
            now = at + round(0.25 / tick_s) * tick_s
            at += 1.0
        midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


@pytest.fixture(scope="module")
def sketch():
    return load_sketch(four_part_midi(), name="four-parts.mid")


def first_onset_s(samples: np.ndarray, rate: int = SR) -> float:
    """Where the first 10 ms frame whose level reaches a quarter of the loudest frame's
    starts (a picture's frames smear a note's attack a little before it: not counted)."""
    hop = rate // 100
    mono = samples.mean(axis=0)
    frames = mono[: len(mono) // hop * hop].reshape(-1, hop)
    level = np.sqrt(np.mean(np.square(frames), axis=1))
    return float(np.flatnonzero(level >= 0.25 * level.max())[0] * hop) / rate


def test_parts_played_alone_add_up_to_the_sketch_and_start_on_their_notes(sketch):
    keys = [t.key for t in sketch.tracks if t.notes]
    assert len(keys) == 4
    parts = sketch.parts_audio([[k] for k in keys])
    for audio, (_, _, _, first, _) in zip(parts, PARTS, strict=True):
        assert audio.frames == sketch.audio.frames and audio.sample_rate == SR
        assert abs(first_onset_s(audio.samples) - first) < 0.010
    np.testing.assert_allclose(sum(p.samples for p in parts), sketch.audio.samples, atol=1e-5)


def test_the_default_map_has_a_stem_per_part_with_a_fitting_instrument(sketch):
    stems = default_stems(sketch)
    assert [s.name for s in stems] == ["Lead", "Harmony", "Bass", "Drums"]
    by_name = {s.name: s for s in stems}
    assert by_name["Bass"].prompt == "electric bass guitar"  # GM 33, finger bass
    assert by_name["Drums"].prompt == "live drum kit"  # channel 10
    assert by_name["Lead"].prompt == "lead guitar"  # GM 80, a synth lead
    assert by_name["Harmony"].prompt == "electric piano"  # no program: pulse 50 %
    assert all(len(s.parts) == 1 for s in stems)


def test_a_stem_is_overridden_by_name_or_part_and_parts_group(sketch):
    stems = default_stems(sketch)
    bass_key = stems[2].parts[0]
    key, new = parse_stem("bass=slap bass:0.25:9")
    changed = apply_overrides(stems, {key: new})
    assert changed[2] == Stem("Bass", (bass_key,), "slap bass", denoise=0.25, guidance=9.0)
    grouped = apply_overrides(
        stems, dict([parse_stem(f"{stems[0].parts[0]}+Harmony=string section")])
    )
    assert len(grouped) == 3 and grouped[0].name == "Lead + Harmony"
    assert grouped[0].parts == stems[0].parts + stems[1].parts
    with pytest.raises(NeuroChipError, match="no stem or part 'Kazoo'.*Lead"):
        apply_overrides(stems, dict([parse_stem("Kazoo=kazoo")]))
    for bad in ("Bass", "Bass=", "Bass=slap:loud", "Bass=slap:0.2:3:4", "Bass=slap:1.5"):
        with pytest.raises(NeuroChipError):
            parse_stem(bad)


def test_a_stems_settings_put_its_instrument_before_the_song_prompt():
    stem = Stem("Bass", ("3",), "slap bass", denoise=0.2)
    settings = stem.settings_for(FAST)
    assert settings.prompt == "slap bass, live recording"
    assert (settings.denoise, settings.guidance, settings.seed) == (0.2, FAST.guidance, FAST.seed)


def test_four_stems_share_the_unet_calls_of_one_take(engine, tiny_model, sketch):
    settings = dataclasses.replace(FAST, batch_size=64)
    sizes = count_unet_calls(tiny_model)
    engine.render(sketch.audio, settings)
    one_take = list(sizes)
    sizes.clear()
    result = render_stems(engine, sketch, settings)
    assert len(result.renders) == 4
    assert len(sizes) == len(one_take) == settings.denoise_steps  # as many calls as one take
    assert sum(sizes) == 4 * sum(one_take)  # four takes' work in them
    for render in result.renders:
        assert render.audio.frames == sketch.audio.frames


def test_each_stem_is_its_part_rendered_alone(engine, sketch):
    stems = apply_overrides(default_stems(sketch), dict([parse_stem("Bass=slap bass:0.3:4")]))
    result = render_stems(engine, sketch, FAST, stems)
    sources = sketch.parts_audio([s.parts for s in stems])
    for stem, render, source in zip(stems, result.renders, sources, strict=True):
        alone = engine.render(source, stem.settings_for(FAST))
        np.testing.assert_allclose(render.audio.samples, alone.audio.samples, atol=1e-4)
        assert render.settings.prompt.startswith(stem.prompt)
    assert result.renders[2].settings.denoise == 0.3


def test_stems_keep_their_notes_where_the_midi_has_them(engine, sketch):
    """The model left out (denoise 0): the whole way, synth to picture to audio, keeps each
    part's first note within one 10 ms frame of its MIDI time."""
    result = render_stems(engine, sketch, dataclasses.replace(FAST, denoise=0.0))
    for render, (_, _, _, first, _) in zip(result.renders, PARTS, strict=True):
        assert abs(first_onset_s(render.audio.samples) - first) < 0.010


def test_the_mix_is_the_sum_of_the_stems_at_their_faders():
    rng = np.random.default_rng(0)
    stems = [Audio((0.1 * rng.standard_normal((1, 2000))).astype(np.float32), SR) for _ in "abc"]
    mixes = [StemMix(gain_db=-6.0, pan=-1.0), StemMix(pan=0.5), StemMix(mute=True)]
    mix = mix_stems(stems, mixes)
    expected = np.zeros((2, 2000), dtype=np.float32)
    for stem, m, heard in zip(stems, mixes, heard_stems(mixes), strict=True):
        left, right = stem_gains(stem, m, heard)
        expected += np.array([[left], [right]], dtype=np.float32) * stem.samples
    np.testing.assert_allclose(mix.samples, expected, atol=1e-6)
    # Hard left is all left; -6 dB is half; a muted stem is silent.
    assert stem_gains(stems[0], mixes[0], True) == pytest.approx((10 ** (-6 / 20), 0.0), abs=1e-9)
    assert stem_gains(stems[2], mixes[2], False) == (0.0, 0.0)
    # Constant power: a centred stem is 3 dB down on each side.
    assert stem_gains(stems[0], StemMix(), True) == pytest.approx((0.7071, 0.7071), abs=1e-4)


def test_solo_hears_only_the_soloed_stems_and_mute_wins():
    mixes = [StemMix(solo=True), StemMix(), StemMix(solo=True, mute=True)]
    assert heard_stems(mixes) == [True, False, False]
    assert heard_stems([StemMix(), StemMix(mute=True)]) == [True, False]
    with pytest.raises(NeuroChipError, match="pan"):
        StemMix(pan=2.0)


def test_the_zip_holds_what_it_claims_and_its_settings_make_the_same_stems(
    engine, sketch, tmp_path
):
    settings = dataclasses.replace(FAST, start_s=1.0, duration_s=4.0)
    stems = apply_overrides(default_stems(sketch), dict([parse_stem("Drums=live drum kit:0.6")]))
    mixes = [StemMix(), StemMix(pan=-0.5), StemMix(gain_db=3.0), StemMix(mute=True)]
    library = TakeLibrary(tmp_path / "takes")
    result = render_stems(engine, sketch, settings, stems, mixes, library=library)
    target = tmp_path / "four-parts-stems.zip"
    names = write_stems_zip(target, sketch, result, mixes)

    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == sorted(names)
        stem_files = sorted(n for n in names if n.startswith("stems/"))
        assert stem_files == [
            "stems/01 Lead.wav",
            "stems/02 Harmony.wav",
            "stems/03 Bass.wav",
            "stems/04 Drums.wav",
        ]
        description = read_stems_json(archive.read("stems.json"))
        heard = {}
        for name in [*stem_files, "mix.wav"]:
            samples, rate = sf.read(io.BytesIO(archive.read(name)), always_2d=True)
            assert rate == SR and len(samples) == sketch.audio.frames  # the song, from 0:00
            assert not samples[: SR - 1].any()  # silence before the span (1 s)
            heard[name] = samples.T[:, SR : SR + 4 * SR]
        tempo = mido.MidiFile(file=io.BytesIO(archive.read("tempo.mid")))
        assert any(m.type == "set_tempo" for t in tempo.tracks for m in t)
        assert "tempo.mid" in archive.read("README.txt").decode()

    # The mix in the ZIP is the mixer's mix of the stems in it.
    np.testing.assert_allclose(heard["mix.wav"], result.mix(mixes).samples, atol=2e-4)
    # stems.json renders the same stems again.
    recipe = stems_from_json(description)
    assert (recipe.stems, recipe.mixes, recipe.pair_width) == (stems, mixes, None)
    again = render_stems(engine, sketch, recipe.settings, recipe.stems)
    for name, render in zip(stem_files, again.renders, strict=True):
        np.testing.assert_allclose(heard[name], render.audio.samples, atol=2e-4)

    # The library kept every stem and the mix, the mix naming its stems.
    mix_take = library.get(result.saved["mix"])
    assert mix_take.metadata["kind"] == "stem mix"
    assert mix_take.metadata["from_takes"] == [result.saved[s.name] for s in stems]
    assert [e["mix"]["pan"] for e in mix_take.metadata["stems"]] == [0.0, -0.5, 0.0, 0.0]
    bass = library.get(result.saved["Bass"])
    assert bass.metadata["kind"] == "stem" and bass.metadata["stem"]["name"] == "Bass"
    assert json.loads(json.dumps(description))["sketch"] == "four-parts.mid"


def test_a_kept_mix_brings_back_its_stems_and_faders_to_mix_again(engine, sketch, tmp_path):
    from neurochip.stems import StemTakes, keep_mix

    library = TakeLibrary(tmp_path / "takes")
    settings = dataclasses.replace(FAST, start_s=0.5, duration_s=3.0)
    mixes = [StemMix(gain_db=-3.0), StemMix(solo=True), StemMix(solo=True, pan=1.0), StemMix()]
    made = render_stems(engine, sketch, settings, mixes=mixes, library=library)
    kept, kept_mixes = StemTakes.from_library(library, made.saved["mix"])
    assert kept_mixes == mixes and kept.stems == made.stems and kept.start_s == 0.5
    assert kept.settings == settings and kept.stem_settings == [r.settings for r in made.renders]
    for audio, render in zip(kept.audios, made.renders, strict=True):
        np.testing.assert_allclose(audio.samples, render.audio.samples, atol=1e-4)
    # A new mix of them is a new take; the first stays as it was.
    louder = [dataclasses.replace(m, solo=False) for m in mixes]
    second = keep_mix(library, kept, louder)
    assert second != made.saved["mix"] and library.get(made.saved["mix"])
    again, again_mixes = StemTakes.from_library(library, second)
    assert again_mixes == louder
    np.testing.assert_allclose(
        library.load_audio(second).samples, kept.mix(louder).samples, atol=1e-4
    )
    # Deleted stems: said plainly.
    library.delete(made.saved["Bass"])
    with pytest.raises(NeuroChipError, match="stem Bass .* was deleted"):
        StemTakes.from_library(library, second)
    with pytest.raises(NeuroChipError, match="not a mix of stems"):
        StemTakes.from_library(library, made.saved["Lead"])


def test_an_audio_sketch_is_one_stem_and_says_why(engine):
    audio = load_sketch(
        _wav(make_chiptune(3.0)),
        name="tune.wav",
    )
    [stem] = default_stems(audio)
    assert stem.parts == ()
    result = render_stems(engine, audio, FAST)
    assert result.renders[0].audio.frames == audio.audio.frames
    with pytest.raises(NeuroChipError, match="one stem"):
        render_stems(engine, audio, FAST, [Stem("Bass", ("2",), "bass")])


def test_stems_need_distinct_names_and_an_instrument(engine, sketch):
    with pytest.raises(NeuroChipError, match="instrument"):
        Stem("Bass", ("2",), " ")
    with pytest.raises(NeuroChipError, match="stem Bass: denoise must be between 0 and 1, not 3.0"):
        Stem("Bass", ("2",), "bass", denoise=3.0)
    bass = Stem("Bass", ("2",), "bass")
    with pytest.raises(NeuroChipError, match="one name"):
        render_stems(engine, sketch, FAST, [bass, dataclasses.replace(bass, parts=("3",))])


def _wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples.T, SR, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_the_command_line_renders_stems_with_overrides_sections_and_a_zip(
    tmp_path, tiny_model_dir, capsys
):
    from neurochip.cli import main
    from neurochip.library.metadata import read_take_metadata

    song = tmp_path / "four-parts.mid"
    song.write_bytes(four_part_midi())
    out, package = tmp_path / "mix.wav", tmp_path / "stems.zip"
    argv = ["render", str(song), "-o", str(out), "--prompt", "live", "--model", str(tiny_model_dir)]
    fast = ["--steps", "4", "--iterations", "0", "--no-library", "--stems-zip", str(package)]
    timeline = ["--section", "0=soft", "--section", "bar 2=loud:0.5"]
    code = main([*argv, *fast, "--stem", "Bass=slap bass:0.25", *timeline, "--stereo-pair"])
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    for name in ("Lead", "Harmony", "Bass", "Drums"):
        stem_file = tmp_path / f"mix-{name}.wav"
        assert sf.info(stem_file).frames == sf.info(out).frames
        assert sf.info(stem_file).channels == 2  # each stem a stereo pair
        assert f"stem {name}" in said
    bass = read_take_metadata(tmp_path / "mix-Bass.wav")
    assert bass["kind"] == "stem" and bass["takes"]["Bass"]["denoise"] == 0.25
    assert bass["takes"]["Bass"]["prompt"] == "slap bass, live"
    assert len(bass["takes"]["Bass"]["sections"]) == 2  # every stem follows the timeline
    assert read_take_metadata(out)["kind"] == "stem mix"
    with zipfile.ZipFile(package) as archive:
        assert "stems/03 Bass.wav" in archive.namelist()

    # Stems of an audio sketch: one, and a part asked of it is refused before the model loads.
    wav = tmp_path / "tune.wav"
    sf.write(wav, make_chiptune(2.0).T, SR)
    code = main(["render", str(wav), "-o", str(tmp_path / "x.wav"), "--prompt", "x",
                 "--stem", "2=bass", "--model", "/no/such/model"])  # fmt: skip
    assert code != 0 and "no stem or part '2'" in capsys.readouterr().err


def test_stems_as_stereo_pairs_render_both_takes_in_the_same_calls(engine, tiny_model, sketch):
    from neurochip.mix import stereo_pair

    settings = dataclasses.replace(FAST, batch_size=64, duration_s=3.0)
    stems = default_stems(sketch)[:2]
    sizes = count_unet_calls(tiny_model)
    paired = render_stems(engine, sketch, settings, stems, pair_width=0.6)
    assert len(sizes) == settings.denoise_steps  # four takes, as many calls as one
    sources = sketch.parts_audio([s.parts for s in stems])
    for stem, audio, meta, source in zip(
        stems, paired.audios, paired.metadata, sources, strict=True
    ):
        a = engine.render(source, stem.settings_for(settings)).audio
        b_settings = stem.settings_for(dataclasses.replace(settings, seed=settings.seed + 1))
        b = engine.render(source, b_settings).audio
        np.testing.assert_allclose(audio.samples, stereo_pair(a, b, 0.6).samples, atol=1e-4)
        assert meta["width"] == 0.6 and meta["takes"][f"{stem.name} B"]["seed"] == b_settings.seed
    # A stereo stem keeps its image on the mixer: pan turns one side down.
    assert stem_gains(paired.audios[0], StemMix(pan=0.5), True) == (0.5, 1.0)
    with pytest.raises(NeuroChipError, match="width"):
        render_stems(engine, sketch, settings, stems, pair_width=1.5)


def test_a_stem_keeps_its_instrument_through_a_prompt_timeline():
    from neurochip.settings import Section

    timeline = dataclasses.replace(
        FAST,
        sections=(
            Section(0.0, "soft strings"),
            Section(4.0, "full funk band", denoise=0.6, guidance=9.0),
        ),
    )
    bass = Stem("Bass", ("4",), "slap bass", denoise=0.2).settings_for(timeline)
    assert [s.prompt for s in bass.sections] == [
        "slap bass, soft strings",
        "slap bass, full funk band",
    ]
    assert bass.sections[1].denoise is None and bass.sections[1].guidance == 9.0  # its own 0.2
    drums = Stem("Drums", ("5",), "live drum kit").settings_for(timeline)
    assert drums.sections[1].denoise == 0.6  # no denoise of its own: the section's


def test_a_part_in_two_stems_is_refused_and_a_part_in_none_is_said(sketch):
    from neurochip.stems import check_stems, stems_warnings

    lead, harmony, bass, drums = (t.key for t in sketch.tracks)
    twice = [Stem("Band", (lead, harmony), "horns"), Stem("Harmony", (harmony,), "strings")]
    with pytest.raises(NeuroChipError, match=f"Part {harmony} is in two stems"):
        check_stems(sketch, twice)
    left_out = [Stem("Band", (lead, harmony), "horns"), Stem("Bass", (bass,), "bass")]
    check_stems(sketch, left_out)
    [warning] = stems_warnings(sketch, left_out)
    assert f"part {drums} (Drums)" in warning
    assert stems_warnings(sketch, default_stems(sketch)) == []


def test_stems_and_their_mixes_are_named_by_instrument_and_faders(engine, sketch, tmp_path):
    from neurochip.stems import StemTakes, keep_mix

    library = TakeLibrary(tmp_path / "takes")
    settings = dataclasses.replace(FAST, duration_s=2.0)
    made = render_stems(engine, sketch, settings, library=library)
    bass = library.get(made.saved["Bass"])
    assert bass.name == "four-parts — stem Bass: electric bass guitar (seed 42)"
    kept, mixes = StemTakes.from_library(library, made.saved["mix"])
    changed = [dataclasses.replace(mixes[0], mute=True), mixes[1], mixes[2], StemMix(gain_db=-3)]
    second = library.get(keep_mix(library, kept, changed))
    assert second.name == "four-parts — stem mix (mute Lead · Drums -3 dB) (seed 42)"
    assert "4 stems: mute Lead · Drums -3 dB" in take_label(second.metadata)
    # Its notes kept: the mean of the stems heard in it (the muted lead is not).
    scores = [
        library.get(made.saved[n]).metadata["faithfulness"]["score"]
        for n in ("Harmony", "Bass", "Drums")
    ]
    assert second.metadata["faithfulness"]["score"] == pytest.approx(np.mean(scores), abs=1e-4)


def test_planned_stems_are_what_the_render_of_stems_runs(engine, sketch, monkeypatch):
    from neurochip.arrangement import planned, render
    from neurochip.settings import TakeSetOptions
    from neurochip.stems import stem_settings
    from tests.test_takeset import spied_renders

    settings = dataclasses.replace(FAST, duration_s=2.0)
    stems = default_stems(sketch)[:2]
    stems[1] = dataclasses.replace(stems[1], denoise=0.8, guidance=3.0)
    options = TakeSetOptions(stereo_pair=True, width=0.6)
    ran = spied_renders(engine, monkeypatch)
    made = render(engine, sketch, settings, options, stems)
    assert made.pair_width == 0.6 and made.audios[0].channels == 2 and "mix" not in made.saved
    [(songs, takes)] = ran
    [loop] = planned(sketch, settings, options, stems)
    assert loop.takes == takes == stem_settings(settings, stems, 0.6)
    assert takes[1].denoise == 0.8 and takes[3].seed == settings.seed + 1  # B of stem 2
    # One song per stem (its parts alone; the sketch's audio stands in), B hearing A's.
    ids = [[id(s) for s in songs], [id(s) for s in loop.songs]]
    assert [[each.index(i) for i in each] for each in ids] == [[0, 1, 0, 1]] * 2
    assert all(s.frames == sketch.audio.frames for s in loop.songs)
    # Stems render no intro before a loop (a take set does).
    looped = dataclasses.replace(settings, loop=True, start_s=1.0)
    assert len(planned(sketch, looped, options, stems)) == 1
