"""A tiny random-weight model in ACE-Step 1.5's diffusers layout, for tests.

Same architecture family and folder layout as ``ACE-Step/acestep-v15-xl-turbo-diffusers``
(``AceStepPipeline``: DiT transformer, condition encoder with its silence latent, audio tokenizer
and detokenizer for covers, Oobleck VAE at 48 kHz with the same 1920x downsampling, so 25
latents a second, Qwen3 text encoder with a Qwen2 byte-level tokenizer, flow-matching scheduler,
model_index.json), with tiny widths so a few seconds of audio render on a CPU in well under a
second. Its output is noise, never music. Loaded through the same code path as the real model.

    python -m tests.tiny_ace_step OUT_DIR
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch

#: The widths every tiny part shares: 4 query heads, 2 key/value heads, 8 dims a head.
_WIDTHS = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "rope_theta": 10000.0,
    "sliding_window": 16,
}
#: VAE latent channels, as ``audio_acoustic_hidden_dim`` (64 in the real model).
ACOUSTIC_DIM = 8
EOS = "<|endoftext|>"


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, the base alphabet of Qwen's BPE."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


#: Words the BPE merges spell whole: those of ACE-Step's prompt templates, so a prompt takes
#: about as many tokens as with the real vocabulary (and its metadata fits the 256-token limit).
VOCABULARY_WORDS = (
    "Instruction Caption Metas Languages Lyric Fill Generate Repaint Extract Complete the audio "
    "semantic mask based on given conditions tokens area track from context input with bpm "
    "timesignature keyscale duration seconds and bass drums piano guitar synth"
)


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE training: merge the most frequent adjacent pair until each word is one
    symbol. Ties go to the greatest pair, so the merges are the same on every run."""
    spelled = [list(word) for word in words]
    merges: list[tuple[str, str]] = []
    while pairs := Counter(pair for s in spelled for pair in zip(s, s[1:], strict=False)):
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        for s in spelled:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i : i + 2] = [s[i] + s[i + 1]]
                i += 1
    return merges


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE: every byte (so any text tokenises), ``<|endoftext|>``, and merges that
    spell each of ``VOCABULARY_WORDS``, bare and after a space."""
    words = VOCABULARY_WORDS.split()
    vocab = {symbol: i for i, symbol in enumerate(_byte_level_alphabet())}
    vocab[EOS] = len(vocab)
    space = _byte_level_alphabet()[ord(" ")]  # Ġ
    merges = _learn_merges([*words, *(space + word for word in words)])
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return vocab, merges


def tiny_tokenizer():
    """Qwen's tokenizer class (byte-level BPE, as in the real model) over the tiny vocabulary,
    with ``<|endoftext|>`` as its one special token: end of text and padding."""
    from transformers import Qwen2Tokenizer

    vocab, merges = tiny_vocabulary()
    return Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)


def build_tiny_ace_step(out_dir: str | Path, seed: int = 0, turbo: bool = True) -> Path:
    """Create and save the tiny ACE-Step pipeline (safetensors); returns its folder.
    ``turbo`` picks the guidance-distilled variant (no CFG) or the base one (CFG)."""
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    )
    transformer = AceStepTransformer1DModel(
        **_WIDTHS,
        num_hidden_layers=2,
        # The DiT reads [source latents, chunk mask, noisy latents] side by side.
        in_channels=3 * ACOUSTIC_DIM,
        audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        patch_size=2,
        is_turbo=turbo,
        model_version="turbo" if turbo else "base",
    )
    condition_encoder = AceStepConditionEncoder(
        **_WIDTHS,
        text_hidden_dim=text_encoder.config.hidden_size,
        timbre_hidden_dim=ACOUSTIC_DIM,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
    )
    # The real one is the VAE's encoding of silence; zeros would make every take's timbre
    # (and text2music's source latents) degenerate.
    silence = condition_encoder.silence_latent
    silence.copy_(0.1 * torch.randn(silence.shape, generator=torch.Generator().manual_seed(seed)))
    audio_tokenizer = AceStepAudioTokenizer(
        **_WIDTHS,
        audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        pool_window_size=5,
        fsq_dim=_WIDTHS["hidden_size"],  # the quantizer projects the pooler's output
        fsq_input_levels=[4, 4, 4],
        fsq_input_num_quantizers=1,
        num_attention_pooler_hidden_layers=2,
    )
    audio_token_detokenizer = AceStepAudioTokenDetokenizer(
        **_WIDTHS,
        audio_acoustic_hidden_dim=ACOUSTIC_DIM,
        pool_window_size=5,
        num_attention_pooler_hidden_layers=2,
    )
    vae = AutoencoderOobleck(
        # The encoder's output is split into mean and scale: 16 channels, 8-dim latents.
        encoder_hidden_size=2 * ACOUSTIC_DIM,
        downsampling_ratios=[2, 4, 4, 6, 10],  # 1920 samples a latent: 25 a second at 48 kHz
        channel_multiples=[1, 1, 2, 2, 4],
        decoder_channels=4,
        decoder_input_channels=ACOUSTIC_DIM,
        audio_channels=2,
        sampling_rate=48000,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    pipeline = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
        audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.tiny_ace_step OUT_DIR")
    folder = build_tiny_ace_step(sys.argv[1])
    print(f"Tiny random ACE-Step model written to {folder} (not music: noise).")
