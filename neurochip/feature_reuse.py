"""Feature reuse across denoising steps (DeepCache, Ma et al. 2023), for draft renders.

Between neighbouring denoising steps the UNet's deep features change little; its shallow ones
carry the detail. So a full evaluation every N steps keeps the input of the last up block (the
deep path's result), and the steps in between run only the shallow path: ``conv_in``, the
first down block's layers, then the last up block on the kept deep features and the new skip
connections, and the output convolution. With Stable Diffusion 1.5 that is roughly a fifth of a
full evaluation's arithmetic.

Given the deep features of the same input, :func:`shallow_unet` returns exactly what the full
UNet does (tested); with features from an earlier step it is the DeepCache approximation.
"""

from __future__ import annotations

from typing import Any

import torch

from neurochip.errors import NeuroChipError


def check_supported(unet: Any) -> None:
    """Refuse UNets whose forward pass :func:`shallow_unet` does not reproduce."""
    unet = getattr(unet, "_orig_mod", unet)
    config = unet.config
    extras = (
        getattr(unet, "class_embedding", None) is not None,
        getattr(config, "addition_embed_type", None) is not None,
        bool(getattr(config, "center_input_sample", False)),
        len(unet.down_blocks[0].resnets) + 1 != len(unet.up_blocks[-1].resnets),
    )
    if any(extras):
        raise NeuroChipError(
            "Feature reuse works with Stable Diffusion 1.x-style UNets only; render this model "
            "with Feature reuse 1."
        )


def full_unet(
    unet: Any, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's noise prediction, and the deep features the steps after it reuse."""
    unet = getattr(unet, "_orig_mod", unet)  # compiled: hooks need the plain modules
    kept: dict[str, torch.Tensor] = {}

    def keep(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kept["deep"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handle = unet.up_blocks[-1].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        out = unet(sample, t, encoder_hidden_states=context).sample
    finally:
        handle.remove()
    return out, kept["deep"]


def written_out_unet(
    unet: Any, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`full_unet`, block by block with no hook: what ``torch.compile`` can trace
    (a hook registered inside a compiled function is not replayed). Follows
    ``UNet2DConditionModel.forward``, keeping only what SD 1.x uses."""
    unet = getattr(unet, "_orig_mod", unet)
    emb = _time_embedding(unet, sample, t)
    hidden = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (hidden,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, more = block(hidden_states=hidden, temb=emb, encoder_hidden_states=context)
        else:
            hidden, more = block(hidden_states=hidden, temb=emb)
        skips += more
    hidden = unet.mid_block(hidden, emb, encoder_hidden_states=context)
    deep = hidden
    for block in unet.up_blocks:
        deep = hidden  # the last one's input, when the loop ends
        taken, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        hidden = _up(block, hidden, emb, taken, context)
    return _out(unet, hidden), deep


def shallow_unet(
    unet: Any, sample: torch.Tensor, t: torch.Tensor, context: torch.Tensor, deep: torch.Tensor
) -> torch.Tensor:
    """The noise prediction from the shallow path and ``deep`` (see the module's docstring).

    Follows ``UNet2DConditionModel.forward`` step by step, keeping only what SD 1.x uses.
    """
    unet = getattr(unet, "_orig_mod", unet)
    emb = _time_embedding(unet, sample, t)
    hidden = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (hidden,)
    first = unet.down_blocks[0]
    attentions = getattr(first, "attentions", None) or [None] * len(first.resnets)
    for resnet, attention in zip(first.resnets, attentions, strict=True):
        hidden = resnet(hidden, emb)
        if attention is not None:
            hidden = attention(hidden, encoder_hidden_states=context, return_dict=False)[0]
        skips += (hidden,)
    return _out(unet, _up(unet.up_blocks[-1], deep, emb, skips, context))


def _time_embedding(unet: Any, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), None)
    return unet.time_embed_act(emb) if unet.time_embed_act is not None else emb


def _up(
    block: Any,
    hidden: torch.Tensor,
    emb: torch.Tensor,
    skips: tuple[torch.Tensor, ...],
    context: torch.Tensor,
) -> torch.Tensor:
    """One up block on ``hidden`` and its skip connections."""
    if getattr(block, "has_cross_attention", False):
        return block(
            hidden_states=hidden,
            temb=emb,
            res_hidden_states_tuple=skips,
            encoder_hidden_states=context,
        )
    return block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=skips)


def _out(unet: Any, hidden: torch.Tensor) -> torch.Tensor:
    if unet.conv_norm_out is not None:
        hidden = unet.conv_act(unet.conv_norm_out(hidden))
    return unet.conv_out(hidden)
