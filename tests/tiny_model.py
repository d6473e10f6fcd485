"""A tiny random-weight model in Riffusion's diffusers layout, for tests.

Same architecture family and folder layout as ``riffusion/riffusion-model-v1`` (UNet, VAE with
the same 8x downsampling, CLIP text encoder and tokenizer, scheduler, model_index.json), with
tiny widths so it runs on a CPU in milliseconds. Its output is noise shaped like a spectrogram,
never music. Loaded through the same code path as the real model.

    python -m tests.tiny_model OUT_DIR
    python -m tests.tiny_model --engine ace-step OUT_DIR   # tests/tiny_ace_step.py
    python -m tests.tiny_model --engine stable-audio-3 OUT_DIR   # tests/tiny_stable_audio_3.py
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import torch


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A character-level CLIP BPE vocabulary and merges: enough to tokenise any prompt."""
    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += symbols + [s + "</w>" for s in symbols] + ["th", "the</w>"]
    return {t: i for i, t in enumerate(tokens)}, [("t", "h"), ("th", "e</w>")]


def _write_tokenizer_like_riffusion(
    folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]
) -> None:
    """Riffusion's hub repo ships the slow-tokenizer files: vocab.json and merges.txt."""
    for old in folder.iterdir():
        old.unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config | special))


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Create and save the tiny model; returns its folder."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        # Attention only at the two lowest resolutions: at full latent size it would cost
        # (64 x width)^2 per head, far more than this tiny model's convolutions.
        down_block_types=(
            "DownBlock2D",
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
        ),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=128,
    )
    vocab, merges = tiny_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    _write_tokenizer_like_riffusion(out_dir / "tokenizer", vocab, merges)
    return out_dir


def build_tiny_preview_vae(out_dir: str | Path, seed: int = 0, latent_channels: int = 4) -> Path:
    """A tiny random-weight ``AutoencoderTiny`` in TAESD's layout (config.json + safetensors),
    decoding the tiny model's latents; returns its folder."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=latent_channels,
    )
    vae.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m tests.tiny_model", description="Write a tiny random-weight model."
    )
    parser.add_argument(
        "--engine", choices=("riffusion", "ace-step", "stable-audio-3"), default="riffusion"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR")
    args = parser.parse_args()
    if args.engine == "ace-step":
        from tests.tiny_ace_step import build_tiny_ace_step

        folder = build_tiny_ace_step(args.out_dir)
        print(f"Tiny random ACE-Step model written to {folder} (not music: noise).")
    elif args.engine == "stable-audio-3":
        from tests.tiny_stable_audio_3 import build_tiny_stable_audio_3

        folder = build_tiny_stable_audio_3(args.out_dir)
        print(f"Tiny random Stable Audio 3 model written to {folder} (not music: noise).")
    else:
        print(f"Tiny random model written to {build_tiny_model(args.out_dir)} (not music: noise).")
