"""The tiny ACE-Step model (tests/tiny_ace_step.py) saves, loads back and renders a cover."""

from __future__ import annotations

import json

import torch

from tests.tiny_ace_step import build_tiny_ace_step


def test_the_tiny_ace_step_model_reloads_and_renders_a_cover(tmp_path):
    from diffusers import AceStepPipeline

    folder = build_tiny_ace_step(tmp_path / "tiny-ace-step")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Qwen3Model"]

    pipe = AceStepPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    src = 0.3 * torch.randn(2, 2 * 48000, generator=torch.Generator().manual_seed(0))
    audio = pipe(
        prompt="a chiptune with a funky bass line",
        task_type="cover",
        src_audio=src,
        audio_cover_strength=0.5,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    ).audios
    assert audio.shape == (1, 2, 2 * 48000)
    assert torch.isfinite(audio).all()
