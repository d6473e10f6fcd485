"""Riffusion-compatible mel spectrogram codec, in pure torch.

Audio becomes mel amplitudes (channels x 512 x frames), which become the picture the model was
trained on: loud is dark, low notes at the bottom, one column per 10 ms. Two picture forms exist:

* the **8-bit PIL image** with EXIF tags, bit-compatible with Riffusion's own tools (files, the
  app's previews, the CLI), and
* the **float image** (a tensor in [0, 1], the same layout with no 8-bit rounding) that the
  diffusion engine feeds to the VAE, so a render never loses detail to quantisation.

Sample scale: Riffusion reads audio through pydub as int16 numbers, so its amplitudes (and the
``max_value`` it stores in EXIF) are 32768 times those of float audio. We scale the same way so
the EXIF values of our images mean the same thing in both tools.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import atomic_write

#: Float audio in [-1, 1] times this gives Riffusion's int16 sample values.
INT16_SCALE = 32768.0

#: Riffusion decodes images without a max_value tag with this; after peak normalisation the
#: scale does not matter.
DEFAULT_MAX_VALUE = 30e6


class ExifTag:
    """Integer EXIF tag ids of Riffusion's spectrogram images (NUM_SAMPLES is our addition)."""

    SAMPLE_RATE = 11000
    STEREO = 11005
    STEP_SIZE_MS = 11010
    WINDOW_DURATION_MS = 11020
    PADDED_DURATION_MS = 11030
    NUM_FREQUENCIES = 11040
    MIN_FREQUENCY = 11050
    MAX_FREQUENCY = 11060
    POWER_FOR_IMAGE = 11070
    MAX_VALUE = 11080
    # Not Riffusion's: lets an image decode to exactly the length of the clip it came from.
    NUM_SAMPLES = 11090


@dataclass(frozen=True)
class SpectrogramParams:
    """Parameters of the spectrogram format (defaults: Riffusion model v1)."""

    sample_rate: int = 44100
    stereo: bool = False
    step_size_ms: int = 10
    window_duration_ms: int = 100
    padded_duration_ms: int = 400
    num_frequencies: int = 512
    min_frequency: int = 0
    max_frequency: int = 10000
    power_for_image: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.min_frequency < self.max_frequency <= self.sample_rate / 2:
            raise NeuroChipError(
                f"Frequency range {self.min_frequency}-{self.max_frequency} Hz does not fit a "
                f"sample rate of {self.sample_rate} Hz."
            )
        if self.window_duration_ms > self.padded_duration_ms:
            raise NeuroChipError("The window cannot be longer than the padded window.")

    @property
    def hop_length(self) -> int:
        return int(self.step_size_ms / 1000.0 * self.sample_rate)

    @property
    def win_length(self) -> int:
        return int(self.window_duration_ms / 1000.0 * self.sample_rate)

    @property
    def n_fft(self) -> int:
        return int(self.padded_duration_ms / 1000.0 * self.sample_rate)

    @property
    def num_stft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """Shortest clip the centred, reflect-padded STFT can take."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Image width for a clip of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """A clip length that gives ``num_frames`` columns (the shortest such)."""
        return (num_frames - 1) * self.hop_length

    def to_exif(self) -> dict[int, int | float]:
        return {
            ExifTag.SAMPLE_RATE: self.sample_rate,
            ExifTag.STEREO: int(self.stereo),
            ExifTag.STEP_SIZE_MS: self.step_size_ms,
            ExifTag.WINDOW_DURATION_MS: self.window_duration_ms,
            ExifTag.PADDED_DURATION_MS: self.padded_duration_ms,
            ExifTag.NUM_FREQUENCIES: self.num_frequencies,
            ExifTag.MIN_FREQUENCY: self.min_frequency,
            ExifTag.MAX_FREQUENCY: self.max_frequency,
            ExifTag.POWER_FOR_IMAGE: float(self.power_for_image),
        }

    @classmethod
    def from_exif(cls, exif: dict[int, object]) -> SpectrogramParams:
        """Parameters from an image's EXIF; tags that are missing keep their defaults."""
        tags = {
            "sample_rate": ExifTag.SAMPLE_RATE,
            "stereo": ExifTag.STEREO,
            "step_size_ms": ExifTag.STEP_SIZE_MS,
            "window_duration_ms": ExifTag.WINDOW_DURATION_MS,
            "padded_duration_ms": ExifTag.PADDED_DURATION_MS,
            "num_frequencies": ExifTag.NUM_FREQUENCIES,
            "min_frequency": ExifTag.MIN_FREQUENCY,
            "max_frequency": ExifTag.MAX_FREQUENCY,
            "power_for_image": ExifTag.POWER_FOR_IMAGE,
        }
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for name, tag in tags.items():
            if tag in exif:
                raw = exif[tag]
                kind = kinds[name]
                values[name] = (
                    bool(int(raw))
                    if kind in ("bool", bool)
                    else float(raw)
                    if kind in ("float", float)
                    else int(raw)
                )
        return cls(**values)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --- mel scale --------------------------------------------------------------------------------


def hz_to_mel(hz: float | np.ndarray) -> float | np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: float | np.ndarray) -> float | np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_band_edges(params: SpectrogramParams) -> np.ndarray:
    """The n_mels + 2 corner frequencies (Hz) of the triangular filters."""
    mels = np.linspace(
        hz_to_mel(params.min_frequency),
        hz_to_mel(params.max_frequency),
        params.num_frequencies + 2,
    )
    return mel_to_hz(mels)


def mel_band_centers(params: SpectrogramParams) -> np.ndarray:
    """Peak frequency (Hz) of each mel band, bottom row of the image last."""
    return mel_band_edges(params)[1:-1]


@functools.lru_cache(maxsize=16)
def _mel_filterbank_np(params: SpectrogramParams) -> np.ndarray:
    # Built in float64: the float32 result then differs from torchaudio's only in the last bit.
    freqs = np.linspace(0.0, params.sample_rate // 2, params.num_stft_bins)
    edges = mel_band_edges(params)
    widths = np.diff(edges)
    slopes = edges[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(down, up)).T.astype(np.float32)


def mel_filterbank(params: SpectrogramParams, device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangular HTK filters, shape (n_mels, n_stft_bins), peak 1, not area-normalised."""
    return _mel_filterbank_cached(params, str(torch.device(device)))


@functools.lru_cache(maxsize=16)
def _mel_filterbank_cached(params: SpectrogramParams, device: str) -> torch.Tensor:
    return torch.from_numpy(_mel_filterbank_np(params)).to(device)


def filter_bins(params: SpectrogramParams) -> tuple[int, int]:
    """The STFT bins ``lo:hi`` under at least one mel filter; every other bin has weight 0.

    With Riffusion's format (10 kHz top, 17,640-point FFT) that is bins 1-3,999 of 8,821: a
    mel picture needs the magnitudes of under half the spectrum.
    """
    covered = np.flatnonzero(_mel_filterbank_np(params).any(axis=0))
    return int(covered[0]), int(covered[-1]) + 1


# --- STFT ---------------------------------------------------------------------------------------


def stft_window(params: SpectrogramParams, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.hann_window(params.win_length, periodic=True, device=device)


def padded_signal(waveform: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Reflect-pad (channels, samples) by n_fft // 2 on both sides, as a centred STFT does."""
    if waveform.shape[-1] < params.min_samples:
        raise NeuroChipError(
            f"The clip is too short: at least {params.min_samples / params.sample_rate:.2f} s "
            "of audio is needed for a spectrogram."
        )
    pad = params.n_fft // 2
    return torch.nn.functional.pad(waveform[:, None, :], (pad, pad), mode="reflect")[:, 0, :]


def stft_frames(
    padded: torch.Tensor, params: SpectrogramParams, start: int, stop: int
) -> torch.Tensor:
    """Complex STFT frames ``start:stop`` of a signal already padded by :func:`padded_signal`.

    Taking frames from the padded signal with ``center=False`` gives bit-for-bit the same
    columns as one centred STFT of the whole song, so long songs can be done in pieces.
    """
    hop = params.hop_length
    segment = padded[:, start * hop : (stop - 1) * hop + params.n_fft]
    return torch.stft(
        segment,
        n_fft=params.n_fft,
        hop_length=hop,
        win_length=params.win_length,
        window=stft_window(params, padded.device),
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )


def frame_chunks(num_frames: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, num_frames)) for a in range(0, num_frames, chunk)]


def as_waveform(audio: torch.Tensor | Audio, params: SpectrogramParams) -> torch.Tensor:
    """A (channels, samples) tensor the codec can take.

    A tensor is taken as it is; an :class:`~neurochip.io.audio.Audio` is resampled to
    ``params.sample_rate`` and laid out as the picture wants it (two channels for a stereo
    picture, the mono mix otherwise).
    """
    if not isinstance(audio, Audio):
        return audio
    audio = audio.resample(params.sample_rate)
    audio = audio.to_stereo() if params.stereo else audio.to_mono()
    return torch.from_numpy(audio.samples)


def mel_amplitudes(
    waveform: torch.Tensor | Audio,
    params: SpectrogramParams = SpectrogramParams(),
    chunk_frames: int = 2048,
) -> torch.Tensor:
    """Mel amplitudes of float audio.

    Args:
        waveform: (channels, samples) float audio in [-1, 1] at ``params.sample_rate``, on any
            device; or an :class:`~neurochip.io.audio.Audio` (see :func:`as_waveform`).
        params: the spectrogram format.
        chunk_frames: STFT columns computed at once; bounds memory for long songs.

    Returns:
        (channels, n_mels, 1 + samples // hop) amplitudes on Riffusion's int16 scale.
    """
    waveform = as_waveform(waveform, params)
    if waveform.ndim != 2:
        raise ValueError("waveform must be (channels, samples)")
    padded = padded_signal(waveform.float() * INT16_SCALE, params)
    # Only the bins under a filter are turned into magnitudes and summed: the rest weigh 0,
    # and skipping them makes a song's picture ~1.5x faster (same values up to float
    # summation order).
    lo, hi = filter_bins(params)
    fb = mel_filterbank(params, waveform.device)[:, lo:hi].contiguous()
    num_frames = params.num_frames(waveform.shape[-1])
    out = torch.empty(waveform.shape[0], params.num_frequencies, num_frames, device=waveform.device)
    for start, stop in frame_chunks(num_frames, chunk_frames):
        magnitude = stft_frames(padded, params, start, stop)[:, lo:hi].abs()
        out[:, :, start:stop] = fb @ magnitude
    return out


# --- picture forms ------------------------------------------------------------------------------


def amplitudes_to_float_image(
    amplitudes: torch.Tensor,
    max_value: float | None = None,
    power: float = SpectrogramParams.power_for_image,
) -> tuple[torch.Tensor, float]:
    """Mel amplitudes -> the model's picture as floats: (3, n_mels, frames) in [0, 1].

    1 is white (silence), row 0 is the highest band. One channel fills R, G and B; two fill G
    and B with R = 0, as Riffusion does.

    Returns the picture and the ``max_value`` used (the loudest amplitude unless given).
    """
    if max_value is None:
        max_value = float(amplitudes.max())
    if max_value <= 0:
        max_value = 1.0  # silence: every pixel white, whatever the scale
    level = (amplitudes / max_value).clamp(0, 1) ** power
    pixels = (1.0 - level).flip(-2)
    return _layout_channels(pixels), max_value


def _layout_channels(pixels: torch.Tensor) -> torch.Tensor:
    channels = pixels.shape[0]
    if channels == 1:
        return pixels.expand(3, -1, -1).clone()
    if channels == 2:
        return torch.cat([torch.zeros_like(pixels[:1]), pixels], dim=0)
    raise NeuroChipError(f"Spectrogram images hold 1 or 2 channels, not {channels}.")


def float_image_to_amplitudes(
    image: torch.Tensor,
    max_value: float,
    stereo: bool,
    power: float = SpectrogramParams.power_for_image,
) -> torch.Tensor:
    """Inverse of :func:`amplitudes_to_float_image`: (3, n_mels, W) in [0, 1] -> amplitudes.

    Mono reads the R channel and stereo G and B, as Riffusion decodes.
    """
    pixels = image[1:3] if stereo else image[0:1]
    level = (1.0 - pixels.clamp(0, 1)).flip(-2)
    return level ** (1.0 / power) * max_value


def image_from_amplitudes(
    amplitudes: torch.Tensor,
    params: SpectrogramParams = SpectrogramParams(),
    max_value: float | None = None,
    num_samples: int | None = None,
) -> Image.Image:
    """Mel amplitudes -> Riffusion's 8-bit RGB image, with its EXIF tags.

    The arithmetic follows Riffusion's float32 steps (normalise, power, scale, invert, truncate)
    so the bytes match the ones its tools write.
    """
    if max_value is None:
        max_value = float(amplitudes.max())
    safe_max = max_value if max_value > 0 else 1.0
    data = amplitudes.detach().float().cpu()
    data = (data / safe_max).clamp(0, 1) ** params.power_for_image
    data = 255 - data * 255
    # Truncation, not rounding: that is what numpy's astype(uint8) does in Riffusion.
    data = data.to(torch.uint8).numpy()
    if data.shape[0] == 1:
        rgb = np.repeat(data[0][:, :, None], 3, axis=2)
    elif data.shape[0] == 2:
        rgb = np.stack([np.zeros_like(data[0]), data[0], data[1]], axis=2)
    else:
        raise NeuroChipError(f"Spectrogram images hold 1 or 2 channels, not {data.shape[0]}.")
    image = Image.fromarray(np.ascontiguousarray(rgb[::-1]), mode="RGB")
    exif = image.getexif()
    for tag, value in replace(params, stereo=data.shape[0] == 2).to_exif().items():
        exif[tag] = value
    exif[ExifTag.MAX_VALUE] = float(max_value)
    if num_samples is not None:
        exif[ExifTag.NUM_SAMPLES] = int(num_samples)
    image.info["exif"] = exif.tobytes()
    return image


@dataclass(frozen=True)
class DecodedImage:
    """What a spectrogram image holds."""

    amplitudes: torch.Tensor  # (channels, n_mels, frames), int16 scale
    params: SpectrogramParams
    max_value: float | None  # None when the image carried no max_value tag
    num_samples: int | None  # exact clip length, when the image was written by NeuroChip


def amplitudes_from_image(image: Image.Image) -> DecodedImage:
    """Riffusion spectrogram image -> mel amplitudes, reading its EXIF.

    Images without EXIF (e.g. straight from the model) are read with the default parameters:
    stereo when the red channel is empty and green and blue differ, mono otherwise.
    """
    exif = dict(image.getexif())
    params = SpectrogramParams.from_exif(exif)
    rgb = np.asarray(image.convert("RGB"))
    if ExifTag.STEREO not in exif:
        looks_stereo = not rgb[:, :, 0].any() and not np.array_equal(rgb[:, :, 1], rgb[:, :, 2])
        params = replace(params, stereo=bool(looks_stereo))
    pixels, max_value = image_pixels(image, params)
    amplitudes = float_image_to_amplitudes(
        pixels, max_value or DEFAULT_MAX_VALUE, params.stereo, params.power_for_image
    )
    num_samples = int(exif[ExifTag.NUM_SAMPLES]) if ExifTag.NUM_SAMPLES in exif else None
    return DecodedImage(amplitudes, params, max_value, num_samples)


def image_pixels(
    image: Image.Image, params: SpectrogramParams = SpectrogramParams()
) -> tuple[torch.Tensor, float | None]:
    """A spectrogram image as the model sees it: its RGB pixels (3, n_mels, W) in [0, 1], and
    the amplitude its white stands for (its EXIF ``max_value``; None when it has none).

    Raises:
        NeuroChipError: It is not ``params.num_frequencies`` pixels tall.
    """
    rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[0] != params.num_frequencies:
        raise NeuroChipError(
            f"This image is {rgb.shape[0]} pixels tall, but a spectrogram image must be "
            f"{params.num_frequencies} tall (one row per mel band). Is it a Riffusion spectrogram?"
        )
    pixels = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
    exif = image.getexif()
    max_value = float(exif[ExifTag.MAX_VALUE]) if ExifTag.MAX_VALUE in exif else None
    return pixels, max_value


def spectrogram_image(
    waveform: torch.Tensor | Audio, params: SpectrogramParams = SpectrogramParams()
) -> Image.Image:
    """Float audio (channels, samples) or an Audio -> Riffusion image (stereo if it has two
    channels)."""
    waveform = as_waveform(waveform, params)
    amplitudes = mel_amplitudes(waveform, params)
    return image_from_amplitudes(amplitudes, params, num_samples=waveform.shape[-1])


#: A PNG text chunk saying NeuroChip wrote the image, so it may be replaced without
#: --overwrite (:func:`neurochip.library.metadata.written_by_neurochip`); before the pixels,
#: where PIL reads it on open.
PNG_MARKER = ("format", "neurochip-spectrogram")


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a spectrogram image as PNG with its EXIF tags (PNG keeps every pixel exact)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise NeuroChipError(
            f"Save spectrogram images as .png (not {path.suffix or 'no extension'}): "
            "lossy formats would change the pixels the model reads."
        )
    with atomic_write(path) as temporary:
        marker = PngInfo()
        marker.add_text(*PNG_MARKER)
        image.save(temporary, format="PNG", exif=image.getexif(), pnginfo=marker)
    return path


def load_image(path: str | Path) -> Image.Image:
    """Open a spectrogram image, with a clear error when it is not one."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError as err:
        raise NeuroChipError(f"No such image: {path}") from err
    except (OSError, Image.DecompressionBombError) as err:
        raise NeuroChipError(f"{path.name} is not a readable image ({err}).") from err
