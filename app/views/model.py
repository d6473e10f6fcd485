"""Model & device: which engine and weights, where they run, and what this machine can do."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st
import torch

from app import state, ui
from neurochip.device import DEVICE_CHOICES
from neurochip.doctor import run_checks
from neurochip.kinds import cpu_advice
from neurochip.model import DTYPES
from neurochip.model_spec import (
    ABOUT_KINDS,
    DEFAULT_SOURCES,
    KIND_DEFAULTS,
    KIND_NAMES,
    KINDS,
    ModelSpec,
)
from neurochip.preview_vae import DEFAULT_PREVIEW_VAE_ID
from neurochip.settings import describe

st.title("Model & device")
choice = ui.model_choice()


def about(name: str) -> dict[str, str]:
    """A ModelSpec field's label and help, as its widget shows them."""
    setting = describe(ModelSpec, name)
    return {"label": setting.label, "help": setting.help}


# Outside the form, so that what is said of an engine follows the choice as it is made.
kind = st.selectbox(
    options=KINDS,
    index=KINDS.index(choice.kind),
    format_func=KIND_NAMES.get,
    **about("kind"),
)
st.caption(
    ABOUT_KINDS[kind]
    + ("" if kind == choice.kind else " **Press Use this model to switch to it.**")
)
with st.form("model_form"):
    source = st.text_input(value=choice.source, **about("source"))
    device = st.selectbox(
        options=DEVICE_CHOICES,
        index=DEVICE_CHOICES.index(choice.device) if choice.device in DEVICE_CHOICES else 0,
        **about("device"),
    )
    dtype = st.selectbox(
        options=list(DTYPES),
        index=list(DTYPES).index(choice.dtype) if choice.dtype in DTYPES else 0,
        **about("dtype"),
    )
    lora_col, scale_col = st.columns([3, 1])
    lora = lora_col.text_input(value=choice.lora, **about("lora"))
    scale = describe(ModelSpec, "lora_scale")
    lora_scale = scale_col.slider(
        scale.label,
        scale.minimum,
        scale.maximum,
        min(max(choice.lora_scale, scale.minimum), scale.maximum),
        step=scale.step,
        help=scale.help,
    )
    vae = about("preview_vae")
    preview_vae = st.text_input(
        value=choice.preview_vae,
        placeholder=f"empty: none (e.g. {DEFAULT_PREVIEW_VAE_ID})",
        label=vae["label"],
        help=vae["help"] + " A hub id is fetched with the model when you press Download.",
    )
    if st.form_submit_button("Use this model", type="primary"):
        switched = kind != choice.kind
        if switched:  # the other engine's own default source; Riffusion's options cleared
            # A folder typed for it stays; the last engine's own source does not.
            own = source.strip() not in ("", DEFAULT_SOURCES[choice.kind], choice.source)
            choice = ModelSpec.for_kind(kind, device=choice.device, dtype=choice.dtype)
            source = source if own else choice.source
            lora, preview_vae = ("", "") if kind != "riffusion" else (lora, preview_vae)
            state.set_settings(steps=KIND_DEFAULTS[kind].get("steps", 50))
        # What the page does not show (compile, channels last) stays as it was.
        # Its kind's source remembered too (and the last engine's): Compare engines loads
        # each kind's last-used model.
        state.composer().use_model(
            dataclasses.replace(
                choice,
                source=source.strip(),
                device=device,
                dtype=dtype,
                lora=lora.strip(),
                lora_scale=float(lora_scale),
                preview_vae=preview_vae.strip(),
            )
        )
        state.save()  # the next session (a refresh, a restart) uses it too
        ui.forget_engine()
        st.rerun()

engine, error = ui.engine()
if engine is None and error is None:
    ui.watch_model_load()
elif engine is not None:
    st.success(f"Loaded: {engine.describe()}", icon=":material/check_circle:")
    caps = engine.backend.capabilities
    can = [
        ("seamless loops", caps.loops),
        ("re-rolls of bars", caps.repaint),
        ("sections (a prompt timeline)", caps.sections),
        ("parts added" + (": " + ", ".join(caps.parts) if caps.parts else ""), bool(caps.parts)),
    ]
    st.caption(
        f"{caps.sample_rate / 1000:g} kHz. Does: "
        + ", ".join(what for what, yes in can if yes)
        + (
            ". Not: " + ", ".join(what for what, yes in can if not yes)
            if not all(y for _, y in can)
            else ""
        )
        + "."
    )
    if engine.device.type == "cpu":
        st.info(cpu_advice(), icon=":material/speed:")
    problem = ui.preview_vae_problem()
    preview_vae_of = getattr(engine.model, "preview_vae", None)
    if problem is not None:
        st.warning(
            f"Quick previews decode with the model's own VAE: {problem}",
            icon=":material/warning:",
        )
    elif preview_vae_of is not None:
        st.caption(f"Quick previews decode with {engine.model.preview_vae_source}.")
    if engine.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(engine.device)
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
