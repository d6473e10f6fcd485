"""Benchmark preflight: before the expensive steps, what this machine runs with.

Imports (torch, diffusers, transformers, neurochip and its engines), the device and its
versions, and which of PyTorch's attention kernels (``scaled_dot_product_attention``) runs
a Stable Diffusion attention shape in fp16 here: flash, memory-efficient, cuDNN or the plain
math one. A GPU run whose wheels or imports are broken fails here in seconds, not inside a
10-minute step. Also sets nothing: ``cudnn.benchmark`` and TF32 are reported as found.

    python bench/preflight.py --json preflight.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

#: What every GPU step imports; one that fails is named in the report.
MODULES = (
    "torch",
    "diffusers",
    "transformers",
    "neurochip",
    "neurochip.engine",
    "neurochip.engine.ace_step",
    "neurochip.engine.stable_audio_3",
)

#: SD 1.5's largest self-attention at one 512-column window: (batch, heads, tokens, head dim).
ATTENTION_SHAPE = (2, 8, 4096, 40)


def imports() -> dict[str, str]:
    """Each module's version (or "ok"), or the error that stops it importing."""
    found = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            found[name] = str(getattr(module, "__version__", "ok"))
        except Exception as err:  # noqa: BLE001 (the report names whatever broke)
            found[name] = f"FAILED: {type(err).__name__}: {err}"
    return found


def attention_kernels(torch: Any, device: Any) -> dict[str, Any]:
    """Which SDPA kernels run SD's attention shape here, and the time of each (ms)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(ATTENTION_SHAPE, device=device, dtype=dtype) for _ in range(3))
    kernels: dict[str, Any] = {}
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        chosen = getattr(SDPBackend, backend, None)
        if chosen is None:
            continue
        try:
            with sdpa_kernel([chosen]):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)  # warm
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                began = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            kernels[backend.lower()] = round((time.perf_counter() - began) * 1e3, 3)
        except RuntimeError as err:
            kernels[backend.lower()] = f"unavailable: {str(err).splitlines()[0][:120]}"
    return kernels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"python": sys.version.split()[0], "imports": imports()}
    broken = [name for name, said in report["imports"].items() if said.startswith("FAILED")]
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    report["device"] = torch.cuda.get_device_name(device) if cuda else "cpu (no GPU)"
    report["cuda"] = torch.version.cuda
    report["cudnn"] = torch.backends.cudnn.version() if cuda else None
    report["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    report["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    if cuda:
        props = torch.cuda.get_device_properties(device)
        report["memory_gib"] = round(props.total_memory / 2**30, 1)
        report["capability"] = f"{props.major}.{props.minor}"
    report["attention_ms"] = attention_kernels(torch, device)
    report["ok"] = not broken
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if broken:
        print(f"error: these do not import: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
