"""Riffusion img2img over a whole song, as one latent image: the algorithm, top to bottom.

:func:`img2img` is one render's denoising path; :func:`predict_windows` is one step's model
calls for every take at once, their windows blended into one prediction per take.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from neurochip.engine.progress import StagedProgress
from neurochip.engine.riffusion.lanes import Lane, take_noise
from neurochip.engine.riffusion.latents import SongLatents, region_columns
from neurochip.engine.riffusion.windows import (
    WINDOW_COLUMNS,
    FeatureReuse,
    WindowPlan,
    pack_calls,
    window_columns,
)
from neurochip.errors import NeuroChipError
from neurochip.settings import RenderSettings

#: (latent columns a, b) -> (latents to keep, mask): a re-roll keeps the parent take's latents
#: where the mask is 0.
Keep = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def img2img(
    backend: Any,
    songs: Sequence[SongLatents],
    first: int,
    frames: int,
    takes: Sequence[RenderSettings],
    report: StagedProgress,
    *,
    context: int = WINDOW_COLUMNS,
    noise_period: tuple[int, int] | None = None,
    song_start_s: float = 0.0,
    vae: Any = None,
    keep: Keep | None = None,
    noise: Callable[..., torch.Tensor] = take_noise,
) -> list[torch.Tensor]:
    """The denoised pictures of picture columns ``first`` .. ``+ frames``: ``takes[i]`` from
    the song whose latents are ``songs[i]`` (usually one song, repeated; stems are several),
    all in one denoising loop, each as it would come out alone. ``backend`` is the
    :class:`~neurochip.engine.riffusion.RiffusionBackend` that holds the model.

    ``context`` picture columns each side are denoised with the region (a preview's company);
    ``noise_period`` makes the noise repeat (a loop); ``song_start_s`` is where the song
    starts in the sketch (a prompt timeline's sections are in the sketch's seconds); ``vae``
    decodes (None: the model's own); ``keep`` holds latents outside a re-roll's region.
    """
    model = backend.model
    scale, multiple = model.vae_scale, model.unet_multiple

    # 1. Region: the latent columns a..b denoised, the region and its context, UNet-sized.
    shape = songs[0].shape  # every song here is of one length
    a, b = region_columns(shape[-1], first, frames, scale, multiple, context)
    whole = (a, b) == (0, shape[-1])  # shifted windows wrap round a whole song only

    # 2. Encode: those columns of each song (tiles encoded once, kept for the next preview).
    made: dict[int, torch.Tensor] = {}
    for song in songs:
        if id(song) not in made:
            made[id(song)] = song.columns(a, b)
    latents = [made[id(song)] for song in songs]
    kept = keep(a, b) if keep is not None else None

    # 3. Noise: each take's seed's noise for the whole song, cut where this region is (so a
    # preview gets what the full render puts there).
    noises = [noise(shape, s, model.device, noise_period)[..., a:b] for s in takes]

    # 4. Lanes: each take's scheduler, prompts and noised latents; windows and their blend.
    with torch.inference_mode():  # no version counters on the loop's many small tensors
        lanes = [
            Lane.start(model, init, n, s, backend.prompt_embedding)
            for s, init, n in zip(takes, latents, noises, strict=True)
        ]
        column_s = scale * backend.params.hop_length / backend.params.sample_rate
        for lane, settings in zip(lanes, takes, strict=True):
            lane.place(settings, a, b - a, column_s, song_start_s)
        window = WINDOW_COLUMNS // scale
        plan = WindowPlan(takes[0], b - a, window, a, whole, model.device)
        compiled = getattr(model, "compile_options", None)
        reuse = FeatureReuse(model.unet, takes[0].feature_reuse, compiled)
        chosen = [s.batch_size for s in takes if s.batch_size]
        batch = min(chosen) if chosen else backend.unet_batch(latents[0].shape, 2)
        smallest = max(lane.items(0) for lane in lanes)  # one window of the costliest take

        # 5. Denoise: every step, each take still denoising sends its windows (and guidance
        # pairs) through shared UNet calls, then steps with its own scheduler. Takes with
        # fewer steps finish early. Reported here first, so the first step is not timed as
        # part of the encoding.
        steps = max(len(lane.timesteps) for lane in lanes)
        report.stage("denoise", 0.0, "denoise")
        for k in range(steps):
            active = [lane for lane in lanes if k < len(lane.timesteps)]
            inputs = [
                lane.scheduler.scale_model_input(lane.latents, lane.timesteps[k]) for lane in active
            ]
            while True:
                try:
                    predictions = predict_windows(
                        model, active, inputs, k, plan, batch, reuse, report.check_cancel
                    )
                    break
                except torch.OutOfMemoryError as err:
                    # The free-memory estimate was optimistic (or another program took
                    # memory): halve the batch and redo this step; the result is the same.
                    if batch <= smallest:
                        raise NeuroChipError(
                            "Out of GPU memory even one window at a time: close other "
                            "programs using the GPU, or use fp16 (--dtype fp16)."
                        ) from err
                    batch = max(smallest, batch // 2)
                    reuse.forget()  # its features were kept per call, and the calls change
                    if model.device.type == "cuda":
                        torch.cuda.empty_cache()
            for lane, prediction in zip(active, predictions, strict=True):
                lane.step(prediction, k)
                if kept is not None:
                    lane.keep(*kept, k)
            report.stage("denoise", (k + 1) / steps, f"denoise step {k + 1} of {steps}")
        denoised = [lane.latents for lane in lanes]

    # 6. Decode: latents -> pictures, cut back to the region.
    offset = first - a * scale
    images = backend.decode_many(denoised, report, vae)
    return [image[..., offset : offset + frames] for image in images]


def predict_windows(
    model: Any,
    lanes: Sequence[Lane],
    inputs: Sequence[torch.Tensor],
    k: int,
    plan: WindowPlan,
    batch: int,
    reuse: FeatureReuse,
    before_call: Callable[[], None],
) -> list[torch.Tensor]:
    """Each lane's guided noise prediction at its step ``k``, windows blended.

    The windows of all lanes are packed into UNet calls of at most ``batch`` items (a
    guided window is two: the unconditioned and the prompted prediction). Each column's
    prediction is the mean of the windows over it, weighted by :meth:`WindowPlan.at`.
    """
    total = inputs[0].shape[-1]
    starts, weight, norm = plan.at(k)
    width = weight.shape[0]
    outs = [torch.zeros_like(x, dtype=torch.float32) for x in inputs]
    # One item per window, lane and voice heard there (a prompt timeline's boundary is
    # heard with both sections' prompts; without sections, one voice).
    work = [
        (i, s, v)
        for i in range(len(lanes))
        for s in starts
        for v in lanes[i].voices_in(window_columns(s, width, total))
    ]
    sizes = [lanes[i].items(k, v) for i, _, v in work]
    for number, call in enumerate(pack_calls(sizes, batch)):
        group = [work[j] for j in call]
        signature = tuple((work[j], sizes[j]) for j in call)
        before_call()
        columns = [plan.columns(s) for _, s, _ in group]
        crops = [
            inputs[i][..., c].to(model.dtype) for (i, _, _), c in zip(group, columns, strict=True)
        ]
        guided = [j for j, (i, _, v) in enumerate(group) if lanes[i].guided_at(k, v)]
        # The unconditioned halves first, then every window with its prompt (the order
        # diffusers' pipeline uses for one take).
        sample = torch.cat([crops[j] for j in guided] + crops)
        t = torch.stack(
            [lanes[group[j][0]].timesteps[k] for j in guided]
            + [lanes[i].timesteps[k] for i, _, _ in group]
        )
        context = torch.cat(
            [lanes[group[j][0]].negatives[group[j][2]] for j in guided]
            + [lanes[i].positives[v] for i, _, v in group]
        )
        out = reuse.predict(number, signature, k, sample, t, context).float()
        uncond, cond = out[: len(guided)], out[len(guided) :]
        pairs = dict(zip(guided, uncond, strict=True))
        for j, ((i, _, v), c) in enumerate(zip(group, columns, strict=True)):
            lane = lanes[i]
            prediction = cond[j : j + 1]
            if j in pairs:
                prediction = pairs[j][None] + lane.guidances[v] * (prediction - pairs[j][None])
            blend = weight if lane.weights is None else weight * lane.weights[v, c]
            if isinstance(c, slice):
                outs[i][..., c] += prediction * blend
            else:
                outs[i].index_add_(-1, c, prediction * blend)
    return [out / norm for out in outs]
