"""Which torch device to compute on."""

from __future__ import annotations

import torch

from neurochip.errors import NeuroChipError

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")


def best_device() -> torch.device:
    """CUDA if present, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto|cuda|mps|cpu`` (or ``cuda:1``) -> a device that exists on this machine."""
    if name == "auto":
        return best_device()
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise NeuroChipError(f"Unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise NeuroChipError(
            "No CUDA GPU is visible to PyTorch here. Use --device cpu (slow but works), or "
            "install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise NeuroChipError("Apple's MPS backend is not available here. Use --device cpu.")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return device.type
