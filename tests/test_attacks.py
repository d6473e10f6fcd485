"""Bad and odd inputs, as an attacker or an unlucky composer would bring them.

Each case: a clear one-line error (exit 2, no traceback) or a valid output, and the input
file unchanged (checksums before and after). The files are made here.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurochip.cli import main
from tests.chiptune import make_chiptune

SR = 44100


def _wav(path: Path, samples: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> Path:
    sf.write(path, samples, rate, subtype=subtype, format="WAV")
    return path


def _tune(seconds: float = 1.0) -> np.ndarray:
    return make_chiptune(seconds).T


def _empty(folder: Path) -> Path:
    path = folder / "empty.wav"
    path.write_bytes(b"")
    return path


def _one_sample(folder: Path) -> Path:
    return _wav(folder / "one.wav", np.array([0.5], dtype=np.float32))


def _nan_inf(folder: Path) -> Path:
    samples = _tune().copy()
    samples[::100] = np.nan
    samples[50::100] = np.inf
    return _wav(folder / "nan.wav", samples.astype(np.float32), subtype="FLOAT")


def _six_channels(folder: Path) -> Path:
    return _wav(folder / "surround.wav", np.repeat(_tune(), 6, axis=1) * 0.3)


def _eight_bit(folder: Path) -> Path:
    return _wav(folder / "8bit.wav", _tune(), subtype="PCM_U8")


def _hi_res_float(folder: Path) -> Path:
    t = np.arange(96000) / 96000
    return _wav(
        folder / "hires.wav",
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        rate=96000,
        subtype="FLOAT",
    )


def _two_hour_header(folder: Path) -> Path:
    path = _wav(folder / "liar.wav", _tune())
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = struct.pack("<I", 2 * 3600 * SR * 2)  # says two hours
    path.write_bytes(bytes(data))
    return path


def _folder(folder: Path) -> Path:
    path = folder / "album.wav"
    path.mkdir()
    return path


def _named(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return _wav(folder / name, _tune())

    make.__name__ = f"named {name}"
    return make


def _text_as_wav(folder: Path) -> Path:
    path = folder / "notes.wav"
    path.write_text("not audio at all\n" * 20)
    return path


def _truncated_flac(folder: Path) -> Path:
    path = folder / "cut.flac"
    sf.write(path, _tune(2.0), SR, format="FLAC")
    path.write_bytes(path.read_bytes()[:2000])
    return path


CASES = [
    _empty,
    _one_sample,
    _nan_inf,
    _six_channels,
    _eight_bit,
    _hi_res_float,
    _two_hour_header,
    _folder,
    _text_as_wav,
    _truncated_flac,
    _named("$(touch pwned).wav"),
    _named("-x.wav"),
    _named("a:b.wav"),
    _named("|concat:x.wav"),
    _named("Füße – 夜 🎵.wav"),
    _named("..wav"),
]


def _digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("make", CASES, ids=lambda make: make.__name__.strip("_"))
@pytest.mark.parametrize("command", ["roundtrip", "spectrogram"])
def test_bad_input_is_a_clear_line_or_a_valid_output(make, command, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    before = _digest(path)
    monkeypatch.chdir(folder)  # a shell-injection attempt would create its file here
    out = tmp_path / ("out.wav" if command == "roundtrip" else "out.png")
    extra = ["--iterations", "0"] if command == "roundtrip" else []
    code = main([command, str(path), "-o", str(out), *extra])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if code == 0:
        if command == "roundtrip":
            data, rate = sf.read(out, always_2d=True)
            assert rate == SR and data.shape[0] > 0 and np.isfinite(data).all()
        else:
            assert out.read_bytes().startswith(b"\x89PNG")
    else:
        assert code == 2, captured
        assert err.startswith("neurochip: ") and "\n" not in err, err
        assert "Errno" not in err and "System error" not in err, err
        assert not out.exists()
    assert _digest(path) == before
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # nothing else appeared


def test_the_two_hour_header_is_not_believed(tmp_path, capsys):
    path = _two_hour_header(tmp_path)
    out = tmp_path / "out.wav"
    if main(["roundtrip", str(path), "-o", str(out), "--iterations", "0"]) == 0:
        assert sf.info(out).duration < 2  # what is really there, not what the header says
    else:
        assert "liar.wav" in capsys.readouterr().err


# --- whose file an output may replace (issue 22) ------------------------------------------------

DEMO_MIDI = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: every refusal here comes before the slow part."""
    from neurochip.engine import Engine

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Engine, "from_pretrained", classmethod(fail))


def _sidecar_text() -> str:
    """A NeuroChip take's settings, as its .json sidecar holds them."""
    import json

    from neurochip.library.metadata import take_metadata
    from neurochip.settings import RenderSettings

    return json.dumps(take_metadata("take", {"A": RenderSettings(prompt="x")}))


def _refused(code: int, capsys, *words: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert err.startswith("neurochip: ") and "\n" not in err, err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize(
    ("command", "name"), [("roundtrip", "mine.wav"), ("spectrogram", "data.png")]
)
def test_a_neurochip_sidecar_beside_a_users_file_does_not_make_it_ours(
    command, name, tmp_path, capsys
):
    song = _wav(tmp_path / "six.wav", _tune())
    mine = tmp_path / name
    mine.write_bytes(b"my own file, not a take")
    mine.with_suffix(".json").write_text(_sidecar_text())
    before = _digest(mine), _digest(mine.with_suffix(".json"))
    code = main([command, str(song), "-o", str(mine)])
    _refused(code, capsys, name, "--overwrite")
    assert (_digest(mine), _digest(mine.with_suffix(".json"))) == before


def test_a_render_never_replaces_a_users_json_beside_its_output(tmp_path, capsys, no_model):
    song = _wav(tmp_path / "song.wav", _tune())
    data = tmp_path / "data.json"
    data.write_text('{"my": "spreadsheet export"}\n')
    code = main(["render", str(song), "-o", str(tmp_path / "data.wav"), "--prompt", "x"])
    _refused(code, capsys, "data.json", "--overwrite")
    assert data.read_text() == '{"my": "spreadsheet export"}\n'
    assert not (tmp_path / "data.wav").exists()


def test_a_spectrogram_neurochip_wrote_is_replaced_without_overwrite(tmp_path, capsys):
    song = _wav(tmp_path / "song.wav", _tune())
    out = tmp_path / "song.png"
    assert main(["spectrogram", str(song), "-o", str(out)]) == 0
    assert main(["spectrogram", str(song), "-o", str(out), "--duration", "0.5"]) == 0
    from PIL import Image

    with Image.open(out) as image:
        assert image.width < 100  # the second, shorter picture


@pytest.mark.parametrize(
    "command",
    [
        ["roundtrip", "{song}", "-o", "{out}.wav", "--iterations", "0"],
        ["spectrogram", "{song}", "-o", "{out}.png"],
        ["invert", "{png}", "-o", "{out}.wav", "--iterations", "0"],
        ["synth", str(DEMO_MIDI), "-o", "{out}.wav"],
        ["render", "{song}", "-o", "{out}.wav", "--prompt", "x"],
        ["reroll", "{song}", "{song}", "--seconds", "0-0.5", "-o", "{out}.wav"],
        ["comp", "-o", "{out}.wav", "--take", "3f2a9c1d0b4e:1-2"],
        ["sweep", "{song}", "-o", "{out}", "--prompt", "x", "--seeds", "1"],
    ],
    ids=lambda command: command[0],
)
def test_no_command_writes_inside_the_take_library(
    command, tmp_path, capsys, no_model, private_take_library
):
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import save_take, take_metadata
    from neurochip.settings import RenderSettings
    from neurochip.spectrogram import save_image, spectrogram_image

    song = _wav(tmp_path / "song.wav", _tune())
    png = save_image(spectrogram_image(Audio(_tune().T, SR)), tmp_path / "song.png")
    # A kept take's file: NeuroChip's own, so only the library rule protects it.
    kept = private_take_library / "takes" / "3f2a9c1d0b4e" / "take"
    metadata = take_metadata("take", {"A": RenderSettings(prompt="x")})
    save_take(kept.with_suffix(".wav"), Audio(_tune().T, SR), metadata)
    save_image(spectrogram_image(Audio(_tune().T, SR)), kept.with_suffix(".png"))
    kept.mkdir()  # sweep's folder
    before = {p: _digest(p) for p in kept.parent.iterdir()}
    names = {"song": str(song), "png": str(png), "out": str(kept)}
    argv = [part.format(**names) for part in command]
    code = main([*argv, "--overwrite"])  # not even with --overwrite
    _refused(code, capsys, "take library", "Takes page")
    assert {p: _digest(p) for p in kept.parent.iterdir()} == before


def test_an_output_under_a_file_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    from neurochip.cli import roundtrip as roundtrip_command

    def fail(*args, **kwargs):
        raise AssertionError("the round trip ran")

    monkeypatch.setattr(roundtrip_command, "roundtrip", fail)
    song = _wav(tmp_path / "song.wav", _tune())
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    code = main(["roundtrip", str(song), "-o", str(notes / "x.wav")])
    _refused(code, capsys, "notes.txt is a file, not a folder")
    assert notes.read_text() == "mine\n"
