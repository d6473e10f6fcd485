"""Riffusion's audio -> image path, restated step by step for compatibility tests.

Riffusion (github.com/riffusion/riffusion) computes an image as follows:
``pydub`` int16 samples as float32 -> ``torchaudio.transforms.Spectrogram(n_fft=17640,
hop_length=441, win_length=4410, window_fn=torch.hann_window, power=None, center=True,
pad_mode="reflect", onesided=True)`` -> ``abs`` -> ``torchaudio.transforms.MelScale(n_mels=512,
sample_rate=44100, f_min=0, f_max=10000, n_stft=8821, norm=None, mel_scale="htk")`` ->
``image_util.image_from_spectrogram`` (numpy float32: divide by max, power 0.25, x255, 255 - x,
astype uint8, R=0/G/B for stereo, flip). torchaudio cannot be installed here (its wheels are
CUDA builds), so its two transforms are restated from torchaudio's source: the filter bank in
float32 exactly as ``torchaudio.functional.melscale_fbanks`` computes it, the STFT as the same
``torch.stft`` call. Everything is written independently of ``neurochip.spectrogram``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

N_FFT, HOP, WIN, SR, N_MELS, F_MIN, F_MAX = 17640, 441, 4410, 44100, 512, 0.0, 10000.0


def torchaudio_melscale_fbanks() -> torch.Tensor:
    """(n_freqs, n_mels), as torchaudio.functional.melscale_fbanks(htk, norm=None)."""
    n_freqs = N_FFT // 2 + 1
    all_freqs = torch.linspace(0, SR // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + F_MIN / 700.0)
    m_max = 2595.0 * math.log10(1.0 + F_MAX / 700.0)
    m_pts = torch.linspace(m_min, m_max, N_MELS + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))


def riffusion_mel_amplitudes(int16_samples: np.ndarray) -> np.ndarray:
    """(channels, samples) int16 -> (channels, 512, frames) float32, as Riffusion computes."""
    waveform = torch.from_numpy(int16_samples.astype(np.float32))
    spec = torch.stft(
        waveform,
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=WIN,
        window=torch.hann_window(WIN),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    amplitudes = torch.abs(spec)
    mel = torch.matmul(amplitudes.transpose(-1, -2), torchaudio_melscale_fbanks()).transpose(-1, -2)
    return mel.numpy()


def riffusion_image(spectrogram: np.ndarray, power: float = 0.25) -> Image.Image:
    """image_util.image_from_spectrogram, without the EXIF tags."""
    max_value = np.max(spectrogram)
    data = spectrogram / max_value
    data = np.power(data, power)
    data = data * 255
    data = 255 - data
    data = data.astype(np.uint8)
    if data.shape[0] == 1:
        image = Image.fromarray(data[0], mode="L").convert("RGB")
    else:
        data = np.array([np.zeros_like(data[0]), data[0], data[1]]).transpose(1, 2, 0)
        image = Image.fromarray(data, mode="RGB")
    return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """What pydub hands Riffusion for a 16-bit file of these float samples."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
