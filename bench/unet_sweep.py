"""Benchmark: the UNet's throughput alone, in items per second, by batch size and dtype.

One item is one 512-column window (64 x 64 latents) through Stable Diffusion 1.5's UNet
(random weights: the arithmetic, so the speed, does not depend on their values), with a
77-token prompt embedding: the unit every render's denoising loop is made of. The sweep says
which batch and dtype the card likes, and how far the renders' items/s are from the UNet's
own best; achieved TFLOP/s from the counted FLOPs of one item (``bench/render.py``'s count).

    python bench/unet_sweep.py --json unet-sweep.json          # a GPU: fp16 and bf16
    python bench/unet_sweep.py --quick                         # the CPU: reduced width
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.render import FULL, QUICK, TINY, build_model, device_peak_tflops  # noqa: E402
from neurochip.device import describe_device, resolve_device  # noqa: E402

BATCHES = (2, 8, 16, 32, 64)
QUICK_BATCHES = (1, 2)
LATENT = 64  # a 512-column window's latents, 512 / 8 on each side


def items_per_s(model: Any, batch: int, repeat: int) -> float:
    """The UNet's items per second at ``batch``, best of ``repeat`` timed calls."""
    device, dtype = model.device, model.dtype
    height = model.unet.config.sample_size or LATENT
    sample = torch.randn(batch, 4, height, height, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device)
    context = torch.randn(
        batch, 77, model.unet.config.cross_attention_dim, device=device, dtype=dtype
    )
    best = float("inf")
    with torch.inference_mode():
        model.unet(sample, t, encoder_hidden_states=context)  # warm: kernels chosen
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            began = time.perf_counter()
            model.unet(sample, t, encoder_hidden_states=context)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - began)
    return batch / best


def item_flop(model: Any) -> float:
    """FLOPs of one UNet item, counted by PyTorch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    height = model.unet.config.sample_size or LATENT
    sample = torch.randn(1, 4, height, height, device=model.device, dtype=model.dtype)
    context = torch.randn(
        1, 77, model.unet.config.cross_attention_dim, device=model.device, dtype=model.dtype
    )
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.unet(sample, torch.tensor([500], device=model.device), encoder_hidden_states=context)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced width, fp32, batch 1-2")
    parser.add_argument("--tiny", action="store_true", help="the smallest layout (dry runs)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per cell (3)")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    small = args.quick or args.tiny
    dtypes = ("fp16", "bf16") if device.type == "cuda" and not small else ("fp32",)
    batches = QUICK_BATCHES if small else BATCHES
    arch = TINY if args.tiny else QUICK if args.quick else FULL
    peak = device_peak_tflops(device)
    rows = []
    for name in dtypes:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
        model = build_model(arch, device, dtype)
        flop = item_flop(model)
        for batch in batches:
            try:
                rate = items_per_s(model, batch, args.repeat)
            except torch.OutOfMemoryError:
                rows.append({"dtype": name, "batch": batch, "items_per_s": None, "oom": True})
                torch.cuda.empty_cache()
                break
            tflops = rate * flop / 1e12
            row = {
                "dtype": name,
                "batch": batch,
                "items_per_s": round(rate, 2),
                "tflops": round(tflops, 3),
                "peak_share": None if peak is None else round(tflops / peak, 4),
            }
            rows.append(row)
            print(
                f"{name} batch {batch:>3}: {rate:8.1f} items/s, {tflops:7.2f} TFLOP/s"
                + ("" if peak is None else f" ({100 * tflops / peak:.0f}% of peak)")
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    done = [r for r in rows if r.get("items_per_s")]
    best = max(done, key=lambda r: r["items_per_s"]) if done else None
    report = {
        "device": describe_device(device),
        "architecture": arch.name,
        "random_weights": True,
        "item_gflop": round(flop / 1e9, 2),
        "device_peak_tflops": peak,
        "rows": rows,
        "best": best,
    }
    if best is not None:
        print(f"best: {best['dtype']} at batch {best['batch']}: {best['items_per_s']} items/s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
