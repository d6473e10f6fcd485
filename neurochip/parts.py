"""An instrument added as a part of its own (ACE-Step's "lego"): made alone over the sketch,
in time with it, and kept as a take like any stem."""

from __future__ import annotations

from pathlib import Path

from neurochip.engine import Engine, ProgressCallback, Render
from neurochip.library.metadata import save_take, take_metadata
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch


def render_part(
    engine: Engine,
    sketch: Sketch,
    settings: RenderSettings,
    instrument: str,
    path: str | Path | None = None,
    library: TakeLibrary | None = None,
    progress: ProgressCallback | None = None,
    bit_depth: str = "24",
) -> tuple[Render, str | None]:
    """``instrument`` (one of the engine's ``capabilities.parts``) alone over the sketch's span,
    as ``settings.prompt`` describes it; written to ``path`` and kept in ``library`` where
    given. Returns the render and its take id (None when not kept)."""
    render = engine.render_many(sketch.audio, [settings], progress=progress, part=instrument)[0]
    metadata = take_metadata("added part", {instrument: settings}, sketch.name, render.info)
    if path is not None:
        save_take(path, render.audio, metadata, bit_depth)
    take_id = None
    if library is not None:
        take_id = library.add(render.audio, metadata, name=f"{sketch.name}: {instrument}").id
    return render, take_id
