"""Model & device: which Riffusion weights, where they run, and what this machine can do."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from app import state, ui
from neurochip.device import DEVICE_CHOICES
from neurochip.doctor import run_checks
from neurochip.model import DTYPES
from neurochip.preview_vae import DEFAULT_PREVIEW_VAE_ID
from neurochip.session import ModelChoice

st.title("Model & device")
choice = ui.model_choice()

with st.form("model_form"):
    source = st.text_input(
        "Model",
        value=choice.source,
        help="A Hugging Face id (riffusion/riffusion-model-v1), a local folder in diffusers "
        "layout, or a single .safetensors file.",
    )
    device = st.selectbox("Device", DEVICE_CHOICES, index=DEVICE_CHOICES.index(choice.device))
    dtype = st.selectbox(
        "Number format",
        list(DTYPES),
        index=list(DTYPES).index(choice.dtype),
        help="auto: fp16 on CUDA GPUs (fast, half the memory), fp32 on the CPU.",
    )
    lora_col, scale_col = st.columns([3, 1])
    lora = lora_col.text_input(
        "LoRA (optional)",
        value=choice.lora,
        help="A LoRA fused into the model: a .safetensors file, a folder or a hub id. "
        "latent-consistency/lcm-lora-sdv1-5 with the lcm scheduler, 8 steps and guidance "
        "1-2 makes fast drafts (not yet checked by ear on Riffusion). Only .safetensors "
        "files are read.",
    )
    lora_scale = scale_col.slider("LoRA strength", 0.05, 2.0, choice.lora_scale, step=0.05)
    preview_vae = st.text_input(
        "Preview VAE (optional)",
        value=choice.preview_vae,
        placeholder=f"empty: none (e.g. {DEFAULT_PREVIEW_VAE_ID})",
        help=f"A tiny VAE (TAESD, about 10 MB: {DEFAULT_PREVIEW_VAE_ID}) that decodes Quick "
        "previews in a fraction of the time. Its pictures are close to the model's own, not "
        "the same, so takes are always decoded by the model's VAE. A local folder, or a hub "
        "id from the Hugging Face cache (fetched with the model when you press Download).",
    )
    if st.form_submit_button("Use this model", type="primary"):
        state.composer().model = ModelChoice(
            source.strip(),
            device,
            dtype,
            lora=lora.strip(),
            lora_scale=float(lora_scale),
            preview_vae=preview_vae.strip(),
        )
        state.save()  # the next session (a refresh, a restart) uses it too
        ui.forget_engine()
        st.rerun()

engine, error = ui.engine()
if engine is None and error is None:
    ui.watch_model_load()
elif engine is not None:
    st.success(f"Loaded: {engine.model.describe()}", icon=":material/check_circle:")
    problem = ui.preview_vae_problem()
    if problem is not None:
        st.warning(
            f"Quick previews decode with the model's own VAE: {problem}",
            icon=":material/warning:",
        )
    elif engine.model.preview_vae is not None:
        st.caption(f"Quick previews decode with {engine.model.preview_vae_source}.")
    if engine.model.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(engine.model.device)
        st.metric("GPU memory free", f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB")
else:
    st.error(error, icon=":material/cloud_off:")
    st.caption("Spectrogram previews on the Arrange page keep working without the model.")
    left, right = st.columns(2)
    if left.button("Try again"):
        ui.forget_engine()
        st.rerun()
    is_hub_id = "/" in choice.source and not Path(choice.source).expanduser().exists()
    if (
        is_hub_id
        and not ui.download_allowed()
        and right.button(
            "Download from the Hugging Face hub",
            type="primary",
            icon=":material/download:",
            help="About 4 GB, once; it is kept in the Hugging Face cache for every later start.",
        )
    ):
        st.session_state["model_download"] = True
        ui.forget_engine()
        st.rerun()

st.subheader("This machine")
for check in run_checks(choice.source):
    icon = (
        ":material/check_circle:"
        if check.ok
        else (":material/error:" if check.essential else ":material/info:")
    )
    st.markdown(
        f"{icon} **{check.name}**: {check.detail}"
        + (f"  \n*Fix:* {check.fix}" if not check.ok and check.fix else "")
    )
