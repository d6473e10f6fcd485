"""The Arrange page, a module per part of it, top to bottom: the sketch, the settings, the
tables (sections, stems), the preview, the variation grid, the render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch


@dataclass
class Page:
    """What the parts of the page hand on to the parts below them."""

    song: Sketch
    bars_s: list[float]
    settings: RenderSettings | None = None
    engine: Any = None  # the Engine, None while it loads or when it cannot
    preview_start: float = 0.0
    quick: bool = False
    notices: tuple = ()  # the upload error's and the opened take's places, to clear them

    @property
    def audio(self):
        return self.song.audio
