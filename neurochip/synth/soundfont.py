"""Playing a MIDI file through FluidSynth and a General MIDI SoundFont.

The alternative to the built-in chip synth: :func:`render_soundfont` plays the same file with
the external ``fluidsynth`` program and a General MIDI SoundFont. :func:`find_fluidsynth` and
:func:`find_soundfont` say whether this machine has both (``$NEUROCHIP_FLUIDSYNTH`` and
``$NEUROCHIP_SOUNDFONT`` override where they are looked for).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.synth.common import PEAK_LEVEL, _check_sample_rate
from neurochip.synth.midi import MAX_MIDI_SECONDS, read_midi

__all__ = ["find_fluidsynth", "find_soundfont", "render_soundfont"]

_SOUNDFONT_DIRS = (
    Path("/usr/share/sounds/sf2"),
    Path("/usr/share/soundfonts"),
    Path("/usr/local/share/soundfonts"),
    Path("/opt/homebrew/share/soundfonts"),
    Path("~/.local/share/soundfonts").expanduser(),
)
_SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2", "default.sf2")

_INSTALL_FLUIDSYNTH_HINT = (
    "Install it (`sudo apt-get install fluidsynth fluid-soundfont-gm` or "
    "`brew install fluid-synth`), or play the MIDI with the built-in chip synth instead."
)
_INSTALL_SOUNDFONT_HINT = (
    "Install one (`sudo apt-get install fluid-soundfont-gm` or timgm6mb-soundfont), or pass "
    "one with --soundfont FILE.sf2 (soundfont= in Python, or set $NEUROCHIP_SOUNDFONT)."
)


def find_fluidsynth() -> str | None:
    """Path of the ``fluidsynth`` program: ``$NEUROCHIP_FLUIDSYNTH`` if set, else PATH."""
    configured = os.environ.get("NEUROCHIP_FLUIDSYNTH")
    if configured:
        return shutil.which(configured)
    return shutil.which("fluidsynth")


def find_soundfont() -> Path | None:
    """A General MIDI SoundFont on this machine, or ``None``.

    ``$NEUROCHIP_SOUNDFONT`` wins when set (``None`` if it names no file); otherwise the
    usual Linux and Homebrew folders are searched for FluidR3_GM.sf2 (Debian's
    fluid-soundfont-gm), default-GM.sf2, TimGM6mb.sf2 (timgm6mb-soundfont) or default.sf2.
    """
    configured = os.environ.get("NEUROCHIP_SOUNDFONT")
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    for folder in _SOUNDFONT_DIRS:
        for name in _SOUNDFONT_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def render_soundfont(
    path: str | os.PathLike[str],
    soundfont: str | os.PathLike[str] | None = None,
    *,
    sample_rate: int = 44100,
    max_seconds: float = MAX_MIDI_SECONDS,
) -> Audio:
    """Play a MIDI file through FluidSynth with a General MIDI SoundFont.

    The file is first read with :func:`read_midi` (so bad files give the same errors), then
    rendered with ``fluidsynth -ni -F`` (reverb and chorus on, FluidSynth's defaults).
    The result is stereo, cut or padded to the same length as :func:`render_midi` gives
    (the MIDI's length plus :data:`RELEASE_TAIL_S`) and peak-normalised to
    :data:`PEAK_LEVEL`.

    Args:
        path: The MIDI file.
        soundfont: The ``.sf2`` file; ``None`` uses :func:`find_soundfont`.
        sample_rate: Rate of the result.
        max_seconds: Refuse longer songs.

    Raises:
        NeuroChipError: If fluidsynth or the SoundFont is missing (saying how to install
            them), the MIDI is bad, or FluidSynth fails.
    """
    fluidsynth = find_fluidsynth()
    if fluidsynth is None:
        raise NeuroChipError(
            f"Rendering with a SoundFont needs FluidSynth, which was not found. "
            f"{_INSTALL_FLUIDSYNTH_HINT}"
        )
    if soundfont is None:
        soundfont = find_soundfont()
        if soundfont is None:
            raise NeuroChipError(f"No General MIDI SoundFont was found. {_INSTALL_SOUNDFONT_HINT}")
    soundfont = Path(soundfont).expanduser()
    if not soundfont.is_file():
        raise NeuroChipError(f"The SoundFont {soundfont} was not found. {_INSTALL_SOUNDFONT_HINT}")
    if not _looks_like_soundfont(soundfont):
        raise NeuroChipError(
            f"{soundfont.name} is not a SoundFont (.sf2 files start with RIFF....sfbk). "
            f"{_INSTALL_SOUNDFONT_HINT}"
        )
    sample_rate = _check_sample_rate(sample_rate)
    song = read_midi(path, max_seconds=max_seconds)
    path = Path(path).expanduser()

    with tempfile.TemporaryDirectory(prefix="neurochip-fluidsynth-") as folder:
        out = Path(folder) / "render.wav"
        command = [
            fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(int(sample_rate)),
            "-T", "wav", "-O", "float", "-F", str(out), str(soundfont), str(path.resolve()),
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                # Far slower than real time means something is wrong; never hang.
                timeout=60 + 2 * song.duration_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise NeuroChipError(f"FluidSynth took too long to render {path.name}.") from err
        except OSError as err:
            raise NeuroChipError(f"FluidSynth could not be started ({err}).") from err
        errors = _fluidsynth_errors(result.stdout + result.stderr)
        # A SoundFont it cannot load is only an error message: it still exits with 0.
        font_failed = any("soundfont" in error.lower() for error in errors)
        if result.returncode != 0 or not out.is_file() or font_failed:
            detail = errors[-1] if errors else f"exit status {result.returncode}"
            raise NeuroChipError(
                f"FluidSynth could not render {path.name} with {soundfont.name} ({detail}). "
                "Check that the SoundFont is a valid .sf2 file."
            )
        try:
            samples, rate = sf.read(out, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise NeuroChipError(f"FluidSynth's output for {path.name} is unreadable.") from err

    frames = max(1, round(song.duration_s * sample_rate))
    audio = np.zeros((2, frames), dtype=np.float32)
    rendered = Audio(samples.T, rate).to_stereo().resample(sample_rate).samples[:, :frames]
    audio[:, : rendered.shape[1]] = rendered
    peak = float(np.max(np.abs(audio)))
    if peak == 0:
        raise NeuroChipError(
            f"FluidSynth rendered {path.name} as silence with {soundfont.name}. The SoundFont "
            "may lack the instruments the file uses; try a General MIDI SoundFont."
        )
    audio *= PEAK_LEVEL / peak
    return Audio(audio, int(sample_rate))


def _looks_like_soundfont(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            header = f.read(12)
    except OSError:
        return False
    return header[:4] == b"RIFF" and header[8:12] == b"sfbk"


def _fluidsynth_errors(output: bytes) -> list[str]:
    lines = output.decode("utf-8", "replace").splitlines()
    return [line.strip() for line in lines if "error" in line.lower()]
