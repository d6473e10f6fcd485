"""Benchmark: one VAE tile decoded by Stable Diffusion 1.5's VAE and by TAESD (the preview VAE).

A 512 x 512 tile (5.12 s of spectrogram) is what the engine decodes at a time. Both decoders
are built at their real sizes with **random weights** (none can be downloaded here): the
times mean something, the pictures do not. Whether TAESD's pictures sound close enough for
quick previews is for a listening check on the real weights.

    .venv/bin/python bench/vae_decode.py [--device cuda] [--dtype fp16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from neurochip.device import describe_device, resolve_device
from neurochip.model import resolve_dtype


def sd15_vae() -> AutoencoderKL:
    """Stable Diffusion 1.5's VAE architecture (Riffusion's), random weights."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )


def time_decode(vae, latents: torch.Tensor, repeat: int) -> list[float]:
    def sync() -> None:
        if latents.device.type == "cuda":
            torch.cuda.synchronize(latents.device)

    with torch.inference_mode():
        vae.decode(latents)  # warm-up: kernels chosen, memory grown
        times = []
        for _ in range(repeat):
            sync()
            began = time.perf_counter()
            vae.decode(latents)
            sync()
            times.append(time.perf_counter() - began)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--repeat", type=int, default=3, help="timed decodes of each (3)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the engine does on the CPU
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 64, 64, device=device, dtype=dtype)
    rows = []
    for name, vae in (("SD 1.5 VAE", sd15_vae()), ("TAESD", AutoencoderTiny())):
        vae = vae.to(device, dtype).eval()
        times = time_decode(vae, latents, args.repeat)
        params = sum(p.numel() for p in vae.decoder.parameters()) / 1e6
        rows.append({"decoder": name, "parameters_millions": round(params, 2), "times_s": times})
        print(
            f"{name:<11} decoder {params:5.1f}M parameters: median "
            f"{statistics.median(times):.3f} s, best {min(times):.3f} s per 512x512 tile"
        )
    ratio = statistics.median(rows[0]["times_s"]) / statistics.median(rows[1]["times_s"])
    print(
        f"TAESD decodes a tile {ratio:.1f}x as fast ({describe_device(device)}, "
        f"{str(dtype).removeprefix('torch.')}; random weights: times only)"
    )
    if args.json is not None:
        report = {
            "device": describe_device(device),
            "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "random_weights": True,
            "rows": rows,
            "speedup": ratio,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
