"""NeuroChip: chiptune and MIDI sketches -> live arrangement mockups with Riffusion.

The library stands alone (no Streamlit needed); the CLI and the app are thin front ends over
it. Data flows sketch -> spectrogram -> latents -> spectrogram -> audio -> mix -> takes::

    from neurochip import Engine, RenderSettings, TakeSetOptions, load_sketch, render_take_set

    engine = Engine.from_pretrained("riffusion/riffusion-model-v1")
    sketch = load_sketch("sketch.mid")
    takes = render_take_set(engine, sketch, RenderSettings(prompt="a funk band"),
                            TakeSetOptions(stereo_pair=True))
    takes.write("cover.wav")

    # A MIDI sketch's parts as stems, each with its own instrument, mixed, for a DAW:
    stems = render_stems(engine, sketch, RenderSettings(prompt="live recording"))
    write_stems_zip("stems.zip", sketch, stems, [StemMix()] * len(stems.stems))

See docs/ARCHITECTURE.md for the map of the package.
"""

__version__ = "0.1.0"

import os  # noqa: E402

# On Apple GPUs (MPS) an operator PyTorch has no Metal kernel for (some complex-number steps
# of the phase rebuild) then runs on the CPU instead of failing the render. Read when torch
# is first imported, so it is set before ours is; a value someone set wins.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

# After __version__: the take library's metadata records it.
from neurochip.engine import (  # noqa: E402
    FAITHFUL_PREVIEW,
    QUICK_PREVIEW,
    Engine,
    PreviewQuality,
    Render,
    device_lock,
)
from neurochip.errors import (  # noqa: E402
    AudioLoadError,
    ModelLoadError,
    ModelNotFoundError,
    NeuroChipError,
    RenderCancelled,
    TooLongError,
)
from neurochip.io import Audio, load_audio, save_audio  # noqa: E402
from neurochip.library import Take, TakeLibrary, settings_from_take  # noqa: E402
from neurochip.mix import crossfade_compare, stereo_pair  # noqa: E402
from neurochip.model_spec import ModelSpec  # noqa: E402
from neurochip.phase import PhaseSettings, roundtrip, waveform_from_amplitudes  # noqa: E402
from neurochip.settings import RenderSettings, TakeSetOptions  # noqa: E402
from neurochip.sketch import Sketch, load_sketch  # noqa: E402
from neurochip.spectrogram import (  # noqa: E402
    SpectrogramParams,
    amplitudes_from_image,
    image_from_amplitudes,
    mel_amplitudes,
    spectrogram_image,
)
from neurochip.stems import (  # noqa: E402
    Stem,
    StemMix,
    StemTakes,
    default_stems,
    mix_stems,
    render_stems,
)
from neurochip.stems_zip import write_stems_zip  # noqa: E402
from neurochip.takeset import TakeSet, pair_takes, render_take_set  # noqa: E402

__all__ = [
    "FAITHFUL_PREVIEW",
    "QUICK_PREVIEW",
    "Audio",
    "AudioLoadError",
    "Engine",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelSpec",
    "NeuroChipError",
    "PhaseSettings",
    "PreviewQuality",
    "Render",
    "RenderCancelled",
    "RenderSettings",
    "Sketch",
    "SpectrogramParams",
    "Stem",
    "StemMix",
    "StemTakes",
    "Take",
    "TakeLibrary",
    "TakeSet",
    "TakeSetOptions",
    "TooLongError",
    "amplitudes_from_image",
    "crossfade_compare",
    "default_stems",
    "device_lock",
    "image_from_amplitudes",
    "load_audio",
    "load_sketch",
    "mel_amplitudes",
    "mix_stems",
    "pair_takes",
    "render_stems",
    "render_take_set",
    "roundtrip",
    "save_audio",
    "settings_from_take",
    "spectrogram_image",
    "stereo_pair",
    "waveform_from_amplitudes",
    "write_stems_zip",
]
