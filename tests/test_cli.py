from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from neurochip.cli import main
from neurochip.io.decode import find_ffmpeg
from neurochip.spectrogram import ExifTag
from tests.chiptune import make_chiptune, protracker_module

SR = 44100


@pytest.fixture
def song(tmp_path: Path) -> Path:
    path = tmp_path / "song.wav"
    sf.write(path, make_chiptune(3.3, stereo=True).T, SR, subtype="PCM_16")
    return path


def test_spectrogram_command_writes_a_riffusion_image(song, tmp_path, capsys):
    out = tmp_path / "clip.png"
    code = main(["spectrogram", str(song), "-o", str(out), "--start", "0.5", "--duration", "2"])
    assert code == 0
    image = Image.open(out)
    assert image.size == (1 + (2 * SR) // 441, 512)
    assert image.getexif()[ExifTag.STEREO] == 0
    assert "Wrote" in capsys.readouterr().out


def test_spectrogram_command_stereo(song, tmp_path):
    out = tmp_path / "clip.png"
    assert main(["spectrogram", str(song), "-o", str(out), "--stereo"]) == 0
    pixels = np.asarray(Image.open(out))
    assert (pixels[:, :, 0] == 0).all() and not (pixels[:, :, 1] == pixels[:, :, 2]).all()


def test_roundtrip_command_keeps_length_and_channels(song, tmp_path):
    out = tmp_path / "heard.wav"
    code = main(["roundtrip", str(song), "-o", str(out), "--iterations", "1"])
    assert code == 0
    data, rate = sf.read(out, always_2d=True)
    assert rate == SR
    assert data.shape == (sf.info(song).frames, 2)
    assert np.abs(data).max() > 0.1


def test_roundtrip_command_span_and_random_phase(song, tmp_path):
    out = tmp_path / "heard.flac"
    args = ["roundtrip", str(song), "-o", str(out), "--phase", "random", "--iterations", "2"]
    assert main([*args, "--start", "1.0", "--duration", "1.5", "--bit-depth", "24"]) == 0
    assert sf.info(out).frames == round(1.5 * SR)
    assert sf.info(out).subtype == "PCM_24"


def test_invert_command_restores_exact_length(song, tmp_path):
    image = tmp_path / "clip.png"
    main(["spectrogram", str(song), "-o", str(image), "--duration", "2.0017"])
    out = tmp_path / "back.wav"
    code = main(
        ["invert", str(image), "-o", str(out), "--phase-from", str(song), "--iterations", "1"]
    )
    assert code == 0
    assert sf.info(out).frames == round(2.0017 * SR)


def test_invert_without_exif_normalises(tmp_path, song):
    image = tmp_path / "clip.png"
    main(["spectrogram", str(song), "-o", str(image), "--duration", "1"])
    plain = tmp_path / "plain.png"
    Image.fromarray(np.asarray(Image.open(image))).save(plain)  # drops the EXIF tags
    out = tmp_path / "back.wav"
    assert main(["invert", str(plain), "-o", str(out), "--iterations", "1"]) == 0
    data, _ = sf.read(out)
    assert np.abs(data).max() == pytest.approx(0.99, abs=0.01)


@pytest.mark.skipif(find_ffmpeg() is None, reason="needs ffmpeg with libopenmpt")
def test_tracker_module_through_the_cli(tmp_path):
    module = tmp_path / "tune.mod"
    module.write_bytes(protracker_module())
    out = tmp_path / "tune.png"
    assert main(["spectrogram", str(module), "-o", str(out), "--duration", "1"]) == 0
    assert Image.open(out).size == (101, 512)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["roundtrip", "missing.wav", "-o", "x.wav"], "missing.wav"),
        (["spectrogram", "{song}", "-o", "x.jpg"], ".png"),
        (["roundtrip", "{song}", "-o", "x.xyz"], ".xyz"),
        (["roundtrip", "{song}", "-o", "x.wav", "--start", "99"], "start"),
        (["roundtrip", "{song}", "-o", "x.wav", "--max-duration", "1"], "long"),
        (["invert", "{song}", "-o", "x.wav"], "song.wav"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, song, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([a.replace("{song}", str(song)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("neurochip: ") and message.lower() in err.lower()
    assert "Traceback" not in err


def test_too_long_input_advice_names_the_clis_own_option(song, tmp_path, capsys):
    code = main(["roundtrip", str(song), "-o", str(tmp_path / "x.wav"), "--max-duration", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "over the limit of 1.0 s" in err
    assert err.rstrip().endswith("Or raise the limit with --max-duration SEC.")


@pytest.mark.parametrize(
    "argv",
    [
        ["roundtrip", "a.wav", "-o", "b.wav", "--duration", "-1"],
        ["roundtrip", "a.wav", "-o", "b.wav", "--iterations", "-3"],
        ["roundtrip", "a.wav", "-o", "b.wav", "--phase", "magic"],
        ["render-everything"],
    ],
)
def test_invalid_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_doctor_reports_each_check(capsys):
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("Python", "PyTorch", "Device", "ffmpeg", "Model weights"):
        assert name in out


def test_help_explains_options():
    out = subprocess.run(
        [sys.executable, "-m", "neurochip", "roundtrip", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--phase" in out and "Griffin-Lim" in out and "denoise 0" in out


# --- render -------------------------------------------------------------------------------------

RENDER_FAST = ["--steps", "4", "--denoise", "0.5", "--iterations", "0"]


def test_render_writes_a_take_that_carries_its_settings(song, tmp_path, tiny_model_dir, capsys):
    from neurochip.library.metadata import settings_from_take

    out = tmp_path / "cover.wav"
    argv = ["render", str(song), "-o", str(out), "--prompt", "a string quartet"]
    code = main([*argv, "--model", str(tiny_model_dir), "--start", "0.5", *RENDER_FAST])
    assert code == 0
    assert "on this CPU (Ctrl+C stops it" in capsys.readouterr().err  # said before it starts
    assert sf.info(out).frames == sf.info(song).frames - round(0.5 * SR)
    settings = settings_from_take(out)
    assert settings.prompt == "a string quartet" and settings.start_s == 0.5
    assert out.with_suffix(".json").is_file()


def test_draft_renders_carry_their_draft_options(song, tmp_path, tiny_model_dir):
    from neurochip.library.metadata import settings_from_take

    out = tmp_path / "draft.wav"
    argv = ["render", str(song), "-o", str(out), "--prompt", "a string quartet", "--draft"]
    code = main([*argv, "--feature-reuse", "2", "--model", str(tiny_model_dir), *RENDER_FAST])
    assert code == 0
    settings = settings_from_take(out)
    # --draft fills what was not given; a given option wins.
    assert (settings.windows, settings.feature_reuse, settings.guidance_until) == (
        "shifted",
        2,
        0.5,
    )
    assert sf.info(out).frames == sf.info(song).frames


def test_render_with_a_lora_records_it_with_the_model(song, tmp_path, tiny_model_dir):
    from neurochip.library.metadata import read_take_metadata
    from neurochip.model import load_model
    from tests.test_model import make_lora

    make_lora(load_model(tiny_model_dir, device="cpu"), tmp_path / "style")
    out = tmp_path / "styled.wav"
    argv = ["render", str(song), "-o", str(out), "--prompt", "x", "--model", str(tiny_model_dir)]
    assert (
        main([*argv, "--lora", str(tmp_path / "style"), "--lora-scale", "0.8", *RENDER_FAST]) == 0
    )
    assert "LoRA style x0.8" in json.dumps(read_take_metadata(out))


def test_render_speed_options_reach_the_model(song, tmp_path, tiny_model_dir, monkeypatch):
    import torch

    from neurochip.model import RiffusionModel

    modes, layouts = [], []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: modes.append(kw["mode"]) or module)
    real = RiffusionModel.use_channels_last
    monkeypatch.setattr(
        RiffusionModel, "use_channels_last", lambda self: layouts.append(1) or real(self)
    )
    out = tmp_path / "fast.wav"
    argv = ["render", str(song), "-o", str(out), "--prompt", "x", "--model", str(tiny_model_dir)]
    assert main([*argv, "--compile", "reduce-overhead", "--channels-last", *RENDER_FAST]) == 0
    assert modes == ["reduce-overhead"] and layouts == [1]
    assert sf.info(out).frames == sf.info(song).frames
    with pytest.raises(SystemExit):
        main([*argv, "--compile", "fastest", *RENDER_FAST])


def test_render_stereo_pair_and_comparison(song, tmp_path, tiny_model_dir):
    from neurochip.library.metadata import read_take_metadata, settings_from_take

    out = tmp_path / "cover.flac"
    argv = ["render", str(song), "-o", str(out), "--prompt", "funk", *RENDER_FAST]
    argv += ["--model", str(tiny_model_dir), "--stereo-pair", "--width", "0.8"]
    assert main([*argv, "--crossfade-compare", "--crossfade-at", "1.0"]) == 0
    pair, _ = sf.read(out, always_2d=True)
    assert pair.shape == (sf.info(song).frames, 2)
    assert not np.allclose(pair[:, 0], pair[:, 1])
    meta = read_take_metadata(out)
    assert meta["kind"] == "stereo pair" and meta["takes"]["B"]["seed"] == 43
    for name in ("cover-A.flac", "cover-B.flac", "cover-compare.flac"):
        assert sf.info(tmp_path / name).frames == sf.info(song).frames
    compare, _ = sf.read(tmp_path / "cover-compare.flac", always_2d=True)
    original, _ = sf.read(song, always_2d=True)
    np.testing.assert_allclose(compare[:SR], original[:SR], atol=1e-4)
    # Take B's own file says it is take B, and every file gives its settings back.
    assert read_take_metadata(tmp_path / "cover-B.flac")["takes"].keys() == {"B"}
    for name in ("cover.flac", "cover-A.flac", "cover-B.flac", "cover-compare.flac"):
        assert settings_from_take(tmp_path / name).prompt == "funk"
    assert settings_from_take(tmp_path / "cover-B.flac").seed == 43


def test_render_keeps_its_takes_in_the_library_unless_told_not_to(
    song, tmp_path, tiny_model_dir, private_take_library
):
    from neurochip.library.store import TakeLibrary

    argv = ["render", str(song), "--prompt", "funk", "--model", str(tiny_model_dir), *RENDER_FAST]
    assert main([*argv, "-o", str(tmp_path / "kept.wav"), "--duration", "1"]) == 0
    assert main([*argv, "-o", str(tmp_path / "not.wav"), "--duration", "1", "--no-library"]) == 0
    [take] = TakeLibrary(private_take_library).list()
    assert take.source_name == "song.wav" and take.settings().prompt == "funk"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--denoise", "1.5"], "denoise"),
        (["--steps", "0"], "steps"),
        (["--scheduler", "warp"], "scheduler"),
        (["--width", "2"], "width"),
        (["--model", "/no/such/model"], "huggingface-cli download"),
        # Found before the model loads (the model here does not exist): nothing half-done.
        (["--start", "3.29", "--model", "/no/such/model"], "at least"),
        (["--crossfade-compare", "--crossfade-at", "9", "--model", "/no/such"], "crossfade"),
        (["--crossfade-compare", "--crossfade-back", "1", "--model", "/no/such"], "fade back"),
        (["--feature-reuse", "9", "--model", "/no/such/model"], "feature reuse must be 1-5"),
        (["--guidance-until", "2", "--model", "/no/such/model"], "guidance for the first"),
        (["--lora", "/no/such/lora.safetensors", "--model", "/no/such/model"], "no lora at"),
        (["--lora", "x/y", "--lora-scale", "3", "--model", "/no/such/model"], "lora strength"),
    ],
)
def test_render_rejects_bad_settings_clearly(song, tmp_path, capsys, extra, message):
    code = main(["render", str(song), "-o", str(tmp_path / "x.wav"), "--prompt", "x", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message.lower() in err.lower()
    assert "Traceback" not in err and not (tmp_path / "x.wav").exists()


# --- MIDI ---------------------------------------------------------------------------------------

DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


def test_synth_renders_the_demo_and_lists_voices(tmp_path, capsys):
    out = tmp_path / "demo.wav"
    assert main(["synth", str(DEMO_MIDI), "-o", str(out), "--voice", "4=pulse50"]) == 0
    printed = capsys.readouterr().out
    assert "pulse50" in printed and "Lead" in printed and "drums" in printed
    data, rate = sf.read(out, always_2d=True)
    assert rate == SR and data.shape[1] == 2
    assert data.shape[0] == pytest.approx(29.84 * SR, abs=SR * 0.05)


def test_synth_with_the_systems_soundfont(tmp_path):
    from neurochip.synth import find_fluidsynth, find_soundfont

    if not (find_fluidsynth() and find_soundfont()):
        pytest.skip("FluidSynth or a General MIDI SoundFont is missing (make test installs both)")
    out = tmp_path / "gm.flac"
    assert main(["synth", str(DEMO_MIDI), "-o", str(out), "--soundfont"]) == 0
    data, _ = sf.read(out, always_2d=True)
    assert np.abs(data).max() > 0.1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--voice", "9=pulse25"], "9"),
        (["--voice", "2=kazoo"], "kazoo"),
        (["--soundfont", "missing.sf2"], "missing.sf2"),
        (["--soundfont", "--voice", "2=saw"], "--voice"),
    ],
)
def test_synth_bad_options_are_clear(tmp_path, capsys, extra, message):
    code = main(["synth", str(DEMO_MIDI), "-o", str(tmp_path / "x.wav"), *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_every_audio_command_takes_midi(tmp_path):
    image = tmp_path / "demo.png"
    assert main(["spectrogram", str(DEMO_MIDI), "-o", str(image), "--duration", "2"]) == 0
    assert Image.open(image).size == (1 + 2 * SR // 441, 512)


def test_roundtrip_command_reads_mp3(tmp_path):
    from neurochip.io import Audio, save_audio

    mp3 = save_audio(tmp_path / "sketch.mp3", Audio(make_chiptune(2.0), SR))
    out = tmp_path / "heard.wav"
    assert main(["roundtrip", str(mp3), "-o", str(out), "--iterations", "1"]) == 0
    data, rate = sf.read(out, always_2d=True)
    assert rate == SR and abs(data.shape[0] - 2 * SR) < 0.1 * SR  # MP3 adds encoder padding
    assert np.abs(data).max() > 0.1


# --- never write over what the composer has ----------------------------------------------------


def checksums(*paths: Path) -> dict[Path, bytes]:
    import hashlib

    return {p: hashlib.sha256(p.read_bytes()).digest() for p in paths}


@pytest.mark.parametrize(
    "command",
    [
        ["roundtrip", "{song}", "-o", "{song}"],
        ["spectrogram", "{song}", "-o", "{song}"],
        ["render", "{song}", "-o", "{song}", "--prompt", "x"],
        ["render", "{song}", "-o", "{link}", "--prompt", "x"],
        ["render", "{song}", "-o", "{hard}", "--prompt", "x"],
        ["render", "{song_a}", "-o", "{cover}", "--prompt", "x", "--stereo-pair"],
        ["render", "{song}", "-o", "{other}", "--prompt", "x", "--crossfade-compare"],
        ["invert", "{png}", "-o", "{song}", "--phase-from", "{song}"],
    ],
)
def test_no_command_writes_over_its_input(command, song, tmp_path, capsys, tiny_model_dir):
    png = tmp_path / "song.png"
    assert main(["spectrogram", str(song), "-o", str(png)]) == 0
    link = tmp_path / "link.wav"
    link.symlink_to(song)
    hard = tmp_path / "hard.wav"
    hard.hardlink_to(song)
    song_a = tmp_path / "cover-A.wav"
    song_a.write_bytes(song.read_bytes())
    other_compare = tmp_path / "x-compare.wav"  # the comparison of -o x.wav lands here
    names = {
        "song": song,
        "png": png,
        "link": link,
        "hard": hard,
        "song_a": song_a,
        "other": tmp_path / "x.wav",
        "cover": tmp_path / "cover.wav",
    }
    if "{other}" in command:
        other_compare.hardlink_to(song)
    before = checksums(song, png, song_a)
    argv = [part.format(**{k: str(v) for k, v in names.items()}) for part in command]
    # --overwrite never reaches an input.
    extra = ["--overwrite"] + (["--model", str(tiny_model_dir)] if command[0] == "render" else [])
    code = main([*argv, *extra])
    err = capsys.readouterr().err
    assert code == 2 and "replace your input" in err, err
    assert checksums(song, png, song_a) == before


def test_an_existing_file_is_replaced_only_with_overwrite_or_when_we_rendered_it(
    song, tmp_path, capsys, tiny_model_dir
):
    mine = tmp_path / "mix.wav"
    mine.write_bytes(b"RIFF my own mixdown")
    code = main(["roundtrip", str(song), "-o", str(mine)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert mine.read_bytes() == b"RIFF my own mixdown"
    assert main(["roundtrip", str(song), "-o", str(mine), "--overwrite"]) == 0
    assert sf.info(mine).frames == sf.info(song).frames
    # A take NeuroChip rendered carries its settings: rendering again replaces it.
    take = tmp_path / "cover.wav"
    argv = ["render", str(song), "-o", str(take), "--prompt", "x", "--model", str(tiny_model_dir)]
    argv += [*RENDER_FAST, "--duration", "1", "--no-library"]
    assert main(argv) == 0
    assert main([*argv, "--seed", "7"]) == 0
    from neurochip.library.metadata import settings_from_take

    assert settings_from_take(take).seed == 7


def test_a_full_disk_is_one_clear_line_and_leaves_the_old_file(song, tmp_path, capsys, monkeypatch):
    import errno

    from PIL import Image

    out = tmp_path / "song.png"
    assert main(["spectrogram", str(song), "-o", str(out)]) == 0
    before = out.read_bytes()

    def full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    code = main(["spectrogram", str(song), "-o", str(out), "--start", "1", "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the disk is full" in err and "\n" not in err
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
