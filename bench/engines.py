"""Benchmark: the three engines on the same song, one table.

Each engine renders the same sketch (mono, 44.1 kHz; the NES-style tune of
``tests/chiptune.py`` unless a file is given) through ``neurochip.engine.Engine.render``, as
the app and the CLI do, with its own published defaults: Riffusion 50 steps at Denoise 0.35,
ACE-Step 1.5 (turbo) a cover in 8 steps, Stable Audio 3 (distilled) 8 steps at Denoise 0.5.
For each: wall time (after an untimed warm-up on 2 s of the song), seconds of audio per
second of wall time ("x RT"), the stage times, parameter counts (proof of which model ran).

**The weights are random unless ``--model KIND=DIR`` gives real ones** (each row says which):
no weights can be downloaded here, and the arithmetic, so the speed, does not depend on their
values. The output is then noise: only the timings mean anything. Full size (the default):

- riffusion: Stable Diffusion 1.5's architecture (``bench/render.py``'s ``FULL``);
- stable-audio-3-small: a 459M-parameter DiT (the published count, 1024 wide x 17 deep: its
  exact shape is not published here), SAME-S (diffusers' default, 108M), a T5Gemma encoder of
  T5Gemma b-b's widths, duration up to 120 s (Small Music's limit);
- stable-audio-3-medium: the DiT at diffusers' default config (1.45B: Medium's published 24
  layers x 1536), SAME-L (852M), duration up to 384 s;
- ace-step: diffusers' default ``AceStepTransformer1DModel`` (1.58B) and Oobleck VAE, with the
  tests' tiny text and condition encoders (they run once per prompt). Not the XL checkpoint.

``--quick`` uses the tests' tiny random models instead (the workflow's overhead only).

    .venv/bin/python bench/engines.py --seconds 10 --json bench/results/cpu-engines.json
    .venv/bin/python bench/engines.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from neurochip.device import describe_device, resolve_device  # noqa: E402
from neurochip.engine import Engine  # noqa: E402
from neurochip.io import Audio, load_audio  # noqa: E402
from neurochip.settings import RenderSettings  # noqa: E402

ROWS = ("riffusion", "ace-step", "stable-audio-3-small", "stable-audio-3-medium")
PROMPT = "a funk band with slap bass, live recording"
SETTINGS = {
    "riffusion": RenderSettings(prompt=PROMPT, steps=50, denoise=0.35, seed=1),
    "ace-step": RenderSettings(prompt=PROMPT, steps=8, seed=1),
    "stable-audio-3-small": RenderSettings(prompt=PROMPT, steps=8, denoise=0.5, seed=1),
    "stable-audio-3-medium": RenderSettings(prompt=PROMPT, steps=8, denoise=0.5, seed=1),
}


def stable_audio_3(size: str, device: torch.device) -> Any:
    """A random-weight Stable Audio 3 pipeline at Small's or Medium's size (see above)."""
    from diffusers import (
        AutoencoderSAME,
        FlowMatchEulerDiscreteScheduler,
        StableAudio3AudioToAudioPipeline,
        StableAudio3DiTModel,
    )
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import (
        StableAudio3DurationEmbedder,
    )
    from transformers import T5GemmaConfig, T5GemmaEncoderModel

    from tests.tiny_stable_audio_3 import tiny_tokenizer

    small = size == "small"
    with torch.device(device):
        widths = {
            "vocab_size": 256000,
            "hidden_size": 768,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 12,
            "head_dim": 64,
        }
        text = T5GemmaEncoderModel(
            T5GemmaConfig(encoder=widths, decoder=widths, is_encoder_decoder=False)
        )
        dit = (
            StableAudio3DiTModel(embed_dim=1024, depth=17, num_heads=16)
            if small
            else StableAudio3DiTModel()
        )
        vae = (
            AutoencoderSAME()
            if small
            else AutoencoderSAME(encoder_channels=256, encoder_transformer_depths=(12,))
        )
        duration = StableAudio3DurationEmbedder(max_val=120.0 if small else 384.0)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0, stochastic_sampling=True
    )
    pipe = StableAudio3AudioToAudioPipeline(vae, text, tiny_tokenizer(), duration, dit, scheduler)
    return pipe.to(device)


def ace_step(device: torch.device) -> Any:
    """A random-weight ACE-Step pipeline: diffusers' default DiT and VAE, tiny encoders."""
    from diffusers import AceStepPipeline, AceStepTransformer1DModel, AutoencoderOobleck

    from tests.tiny_ace_step import build_tiny_ace_step

    folder = build_tiny_ace_step(Path(tempfile.mkdtemp()) / "ace")
    tiny = AceStepPipeline.from_pretrained(folder)
    with torch.device(device):
        dit = AceStepTransformer1DModel()
        vae = AutoencoderOobleck(sampling_rate=48000, downsampling_ratios=[2, 4, 4, 6, 10])
    acoustic = dit.config.audio_acoustic_hidden_dim
    components = tiny.components | {
        "transformer": dit,
        "vae": vae,
        "condition_encoder": type(tiny.condition_encoder)(
            text_hidden_dim=tiny.text_encoder.config.hidden_size, timbre_hidden_dim=acoustic
        ),
        # Covers hear the song through these: at the DiT's latent width.
        "audio_tokenizer": type(tiny.audio_tokenizer)(audio_acoustic_hidden_dim=acoustic),
        "audio_token_detokenizer": type(tiny.audio_token_detokenizer)(
            audio_acoustic_hidden_dim=acoustic
        ),
    }
    return AceStepPipeline(**components).to(device)


def engine_for(row: str, quick: bool, device: torch.device, real: dict[str, str]) -> Engine:
    """The engine of a table row: real weights where given, else random (tiny if quick)."""
    from neurochip.model_spec import ModelSpec

    kind = "stable-audio-3" if row.startswith("stable-audio-3") else row
    if row in real or kind in real:
        source = real.get(row, real.get(kind))
        return Engine.from_pretrained(ModelSpec.for_kind(kind, source=source, device=device.type))
    if quick:
        from tests.tiny_ace_step import build_tiny_ace_step
        from tests.tiny_model import build_tiny_model
        from tests.tiny_stable_audio_3 import build_tiny_stable_audio_3

        build = {
            "riffusion": build_tiny_model,
            "ace-step": build_tiny_ace_step,
            "stable-audio-3": build_tiny_stable_audio_3,
        }[kind]
        folder = build(Path(tempfile.mkdtemp()) / row)
        return Engine.from_pretrained(ModelSpec.for_kind(kind, source=str(folder), device="cpu"))
    if row == "riffusion":
        sys.path.insert(0, str(REPO_ROOT / "bench"))
        from render import FULL, build_model

        return Engine(build_model(FULL, device, torch.float32))
    if row == "ace-step":
        from neurochip.engine.ace_step import AceStepBackend

        return Engine(AceStepBackend(ace_step(device), "random ACE-Step 1.5 (diffusers default)"))
    from neurochip.engine.stable_audio_3 import StableAudio3Backend

    size = row.rsplit("-", 1)[1]
    return Engine(StableAudio3Backend(stable_audio_3(size, device), f"random SA3 {size}"))


def parameters_m(engine: Engine) -> float:
    model = engine.backend.model
    modules = getattr(model, "components", None) or {
        "unet": model.unet,
        "vae": model.vae,
        "text_encoder": model.text_encoder,
    }
    return round(
        sum(
            sum(p.numel() for p in m.parameters()) / 1e6
            for m in modules.values()
            if isinstance(m, torch.nn.Module)
        ),
        1,
    )


def denoiser(engine: Engine) -> torch.nn.Module | None:
    """The model each denoising step calls: Riffusion's UNet, the others' transformer."""
    model = engine.backend.model
    components = getattr(model, "components", None) or {}
    found = components.get("transformer") or getattr(model, "unet", None)
    return found if isinstance(found, torch.nn.Module) else None


def measure(row: str, engine: Engine, song: Audio, label: str, real: bool) -> dict[str, Any]:
    settings = SETTINGS[row]
    engine.render(song, settings.replace(duration_s=2.0))  # warm-up, untimed
    stages: dict[str, float] = {}
    began = time.perf_counter()
    last = [began, None]

    def progress(fraction: float, stage: str | None = None) -> None:
        now = time.perf_counter()
        if last[1] is not None:
            stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
        # "denoise step 3 of 17" is the denoise stage.
        last[0], last[1] = now, stage.split()[0] if stage else None

    calls, items = [0], [0]

    def count(module: Any, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()))
        calls[0] += 1
        items[0] += int(first.shape[0])

    model = denoiser(engine)
    hook = model.register_forward_pre_hook(count, with_kwargs=True) if model else None
    try:
        take = engine.render(song, settings, progress=progress)
    finally:
        if hook is not None:
            hook.remove()
    wall = time.perf_counter() - began
    stages["other"] = max(0.0, wall - sum(stages.values()))  # what no stage accounts for
    assert take.audio.frames == song.span(0.0).resample(take.audio.sample_rate).frames
    return {
        "engine": row,
        "device": describe_device(engine.device),
        "weights": "real" if real else "random",
        "model": label,
        "parameters_m": parameters_m(engine),
        "seconds_of_audio": round(song.duration_s, 2),
        "steps": settings.steps,
        "denoise": settings.denoise,
        "wall_s": round(wall, 2),
        "x_realtime": round(song.duration_s / wall, 3),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "denoiser_calls": calls[0] if model else None,
        "denoiser_items": items[0] if model else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("song", nargs="?", help="an audio file (default: the synthesised tune)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of the song")
    parser.add_argument("--engines", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="the tests' tiny models")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--model", action="append", default=[], metavar="KIND=DIR", help="real weights"
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    device = resolve_device("cpu" if args.quick else args.device)
    real = dict(item.split("=", 1) for item in args.model)
    if args.song:
        song = load_audio(args.song).span(0.0, args.seconds).to_mono().resample(44100)
        label = Path(args.song).name
    else:
        from tests.chiptune import make_chiptune

        song = Audio(make_chiptune(args.seconds, stereo=False, seed=0), 44100)
        label = "synthesised NES-style tune"
    rows = []
    for row in args.engines.split(","):
        print(f"[engines] {row} ...", file=sys.stderr, flush=True)
        engine = engine_for(row, args.quick, device, real)
        kind = "stable-audio-3" if row.startswith("stable-audio-3") else row
        model = engine.backend.describe() if hasattr(engine.backend, "describe") else row
        rows.append(measure(row, engine, song, model, row in real or kind in real))
        del engine
        if args.json:  # each row as soon as it is measured: a later failure keeps it
            args.json.write_text(json.dumps({"song": label, "rows": rows}, indent=2) + "\n")
    print(f"\n{song.duration_s:.1f} s of {label}, {'tiny models' if args.quick else 'full size'}")
    print(f"{'engine':24} {'device':28} {'weights':8} {'params M':>9} {'wall s':>8} {'x RT':>7}")
    for r in rows:
        print(
            f"{r['engine']:24} {r['device'][:28]:28} {r['weights']:8} {r['parameters_m']:9.1f} "
            f"{r['wall_s']:8.2f} {r['x_realtime']:7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
