"""A tiny random-weight model in Stable Audio 3's diffusers layout, for tests.

Same architecture family and folder layout as ``stabilityai/stable-audio-3-medium``
(``StableAudio3AudioToAudioPipeline`` / ``StableAudio3InpaintPipeline``: a DiT with the inpaint
pathway, the SAME autoencoder at 44.1 kHz with the same 4096x downsampling, a duration
embedder, a T5Gemma text encoder with a Gemma tokenizer built here, a flow-matching scheduler
with stochastic sampling as the distilled checkpoint's), with tiny widths so a few seconds of
audio render on a CPU in well under a second. Its output is noise, never music. Loaded
through the same code path as the real model.

    python -m tests.tiny_stable_audio_3 OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

#: Latent channels of the autoencoder (256 in the real one).
LATENT_DIM = 8
#: The text encoder's width, which the DiT's text and duration tokens share (768 real).
COND_DIM = 16
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


def tiny_tokenizer():
    """Gemma's tokenizer class (BPE with byte fallback, "▁" for spaces, as the real one) over
    letters, digits and the 256 bytes: any text tokenises, about a token a character."""
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789▁":
        vocab[char] = len(vocab)
    return GemmaTokenizerFast(vocab=vocab, merges=[])


def _wake(model: torch.nn.Module) -> None:
    """Give random values to the weights initialised to (nearly) zero: the residual
    branches' and output projections', and SAME's upsampling tokens. Left so, the output
    would barely depend on the input, and no test could tell one take from another."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and parameter.abs().max() < 1e-3:
                parameter.normal_(0.0, 0.5)


def build_tiny_stable_audio_3(out_dir: str | Path, seed: int = 0) -> Path:
    """Create and save the tiny Stable Audio 3 pipeline (safetensors); returns its folder."""
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

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    module = {
        "vocab_size": len(tokenizer),
        "hidden_size": COND_DIM,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "sliding_window": 16,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    text_encoder = T5GemmaEncoderModel(
        T5GemmaConfig(
            encoder=module, decoder=module, vocab_size=len(tokenizer), is_encoder_decoder=False
        )
    )
    vae = AutoencoderSAME(
        audio_channels=2,
        patch_size=256,
        encoder_channels=8,
        encoder_c_mults=(2,),
        encoder_strides=(16,),  # 256 x 16 = 4096 samples a latent, as the real SAME
        encoder_transformer_depths=(1,),
        latent_dim=LATENT_DIM,
        dim_heads=8,
        sampling_rate=44100,
    )
    transformer = StableAudio3DiTModel(
        io_channels=LATENT_DIM,
        embed_dim=32,
        depth=2,
        num_heads=4,
        cond_token_dim=COND_DIM,
        global_cond_dim=COND_DIM,
        local_add_cond_dim=1 + LATENT_DIM,  # the inpaint mask and the kept latents
        timestep_features_dim=16,
        num_memory_tokens=4,
    )
    for model in (vae, transformer):
        _wake(model)
    duration_embedder = StableAudio3DurationEmbedder(output_dim=COND_DIM, fourier_dim=16)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0, stochastic_sampling=True
    )
    pipeline = StableAudio3AudioToAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        duration_embedder=duration_embedder,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.tiny_stable_audio_3 OUT_DIR")
    folder = build_tiny_stable_audio_3(sys.argv[1])
    print(f"Tiny random Stable Audio 3 model written to {folder} (not music: noise).")
