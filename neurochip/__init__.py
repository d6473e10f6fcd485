"""NeuroChip: chiptune and MIDI sketches -> live arrangement mockups with Riffusion.

The library is usable on its own (no Streamlit needed). Data flows
audio -> spectrogram -> (latents -> spectrogram) -> audio::

    from neurochip import load_audio, roundtrip, SpectrogramParams
    song = load_audio("sketch.wav")
"""

from neurochip.audio import Audio, load_audio, save_audio
from neurochip.errors import AudioLoadError, NeuroChipError
from neurochip.phase import PhaseSettings, roundtrip, waveform_from_amplitudes
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_from_image,
    image_from_amplitudes,
    mel_amplitudes,
    spectrogram_image,
)

__version__ = "0.1.0"

__all__ = [
    "Audio",
    "AudioLoadError",
    "NeuroChipError",
    "PhaseSettings",
    "SpectrogramParams",
    "amplitudes_from_image",
    "image_from_amplitudes",
    "load_audio",
    "mel_amplitudes",
    "roundtrip",
    "save_audio",
    "spectrogram_image",
    "waveform_from_amplitudes",
]
