"""``neurochip doctor``: what this machine can do, and how to fix what it cannot."""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from neurochip.device import best_device, describe_device
from neurochip.io.decode import FFMPEG_FORMATS, find_ffmpeg, supported_formats
from neurochip.model import DEFAULT_MODEL_ID, hub_offline, owner_slash_name


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    essential: bool = True

    def line(self) -> str:
        status = "ok" if self.ok else ("missing" if self.essential else "note")
        text = f"[{status:>7}] {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text}\n          fix: {self.fix}"


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return Check("Python", ok, version, "install Python 3.10 or newer")


def check_torch() -> Check:
    return Check("PyTorch", True, torch.__version__)


def check_device() -> Check:
    device = best_device()
    if device.type == "cpu":
        return Check(
            "Device",
            False,
            "cpu only: spectrograms work, full renders will be slow",
            "a CUDA GPU (NVIDIA) or Apple silicon (MPS) renders many times faster",
            essential=False,
        )
    return Check("Device", True, describe_device(device))


def check_ffmpeg() -> Check:
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return Check(
            "ffmpeg",
            False,
            "not found: WAV, FLAC, OGG and MP3 still work; M4A, WebM and chip/tracker "
            "formats do not",
            "sudo apt-get install ffmpeg (Debian/Ubuntu), brew install ffmpeg (macOS), "
            "or set NEUROCHIP_FFMPEG to its path",
            essential=False,
        )
    try:
        first = subprocess.run(
            [ffmpeg, "-version"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        first = "present, but did not answer -version"
    return Check("ffmpeg", True, f"{ffmpeg} ({first})")


def check_chip_formats() -> Check:
    formats = supported_formats()
    chip = sorted(suffix for suffix in FFMPEG_FORMATS if suffix in formats)
    working = [s for s in chip if formats[s]]
    missing = [s for s in chip if not formats[s]]
    detail = "reads " + (" ".join(working) if working else "none")
    if missing:
        detail += "; cannot read " + " ".join(missing)
    return Check(
        "Formats through ffmpeg",
        not missing,
        detail,
        "install an ffmpeg built with libopenmpt (trackers) and libgme (chip rips), "
        "e.g. Debian's ffmpeg package; or render your song to WAV first",
        essential=False,
    )


def check_midi() -> Check:
    from neurochip.synth import find_fluidsynth, find_soundfont

    fluidsynth, soundfont = find_fluidsynth(), find_soundfont()
    detail = "built-in chip synth ready"
    if fluidsynth and soundfont:
        return Check("MIDI", True, f"{detail}; SoundFont rendering with {soundfont.name}")
    missing = "fluidsynth" if not fluidsynth else "a General MIDI SoundFont"
    return Check(
        "MIDI",
        False,
        f"{detail}; SoundFont rendering needs {missing}",
        "sudo apt-get install fluidsynth fluid-soundfont-gm (Debian/Ubuntu), "
        "brew install fluid-synth (macOS), or pass --soundfont FILE.sf2",
        essential=False,
    )


def check_model_cache(model_id: str = DEFAULT_MODEL_ID) -> Check:
    local = Path(model_id).expanduser()
    if local.exists():
        kind = "folder" if local.is_dir() else "file"
        return Check("Model weights", True, f"{model_id} (a local {kind}: no download needed)")
    if not owner_slash_name(model_id):
        return Check(
            "Model weights",
            False,
            f"{model_id}: no such file or folder",
            "choose a hub id, or a local diffusers folder or .safetensors file that exists",
            essential=False,
        )
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return Check(
            "Model weights",
            False,
            "huggingface_hub is not installed",
            "make run (or pip install -r requirements.txt)",
            essential=False,
        )
    cached = try_to_load_from_cache(model_id, "model_index.json")
    if isinstance(cached, str):
        return Check("Model weights", True, f"{model_id} is in the cache ({HF_HUB_CACHE})")
    offline = hub_offline()
    return Check(
        "Model weights",
        False,
        f"{model_id} is not in the cache ({HF_HUB_CACHE})"
        + (" and HF_HUB_OFFLINE is set" if offline else ""),
        f"huggingface-cli download {model_id} (about 4 GB, once), or pass --model with a "
        "local folder or .safetensors file",
        essential=False,
    )


def check_engines() -> Check:
    """The engines this install can load: each one's pipeline class is in diffusers."""
    import diffusers

    from neurochip.model_spec import DEFAULT_SOURCES, KINDS

    needs = {
        "riffusion": "StableDiffusionPipeline",
        "ace-step": "AceStepPipeline",
        "stable-audio-3": "StableAudio3AudioToAudioPipeline",
    }
    there = [kind for kind in KINDS if hasattr(diffusers, needs[kind])]
    missing = [kind for kind in KINDS if kind not in there]
    detail = ", ".join(f"{kind} (default {DEFAULT_SOURCES[kind]})" for kind in there)
    return Check(
        "Engines",
        not missing,
        detail
        + (
            f"; not with diffusers {diffusers.__version__}: {', '.join(missing)}" if missing else ""
        ),
        "make install (diffusers as pyproject.toml pins it)",
        essential=False,
    )


def run_checks(model: str = DEFAULT_MODEL_ID) -> list[Check]:
    """Every check, the weights' for ``model`` (a hub id, or a local folder or file)."""
    return [
        check_python(),
        check_torch(),
        check_device(),
        check_ffmpeg(),
        check_chip_formats(),
        check_midi(),
        check_engines(),
        check_model_cache(model),
    ]
