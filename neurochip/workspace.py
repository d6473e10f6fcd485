"""The workspace: what the app had open, kept on disk so a refresh or a restart brings it back.

NeuroChip is a local tool for one composer, so there is one workspace per home
(``$NEUROCHIP_HOME/workspace``, beside the take library). It holds:

- the sketch as it was loaded: the file's bytes, its name and the MIDI voices
  (``sketch.bin``, ``sketch.json``), so it is decoded again exactly as before;
- the page's state: settings and view choices, plain JSON (``state.json``);
- the last preview: its audio, pictures and note faithfulness (``preview.npz``,
  ``preview.json``; arrays only, read with ``allow_pickle=False``).

Every file is written atomically. One that cannot be read is set aside as ``*.damaged`` and
treated as absent: a damaged workspace costs what it held, never the app.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurochip.engine import Render
from neurochip.faithfulness import Faithfulness
from neurochip.io.audio import Audio
from neurochip.io.write import write_bytes_atomically, write_text_atomically
from neurochip.library.store import default_home
from neurochip.settings import RenderSettings

log = logging.getLogger(__name__)

#: The largest sketch file kept for reopening (uploads are limited to 200 MB anyway).
MAX_SKETCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Preview:
    """A finished preview: the take of a region, its note faithfulness, and what it was for.

    ``key`` is whatever the front end asked with (the app: song key, settings, region start),
    kept as JSON, so it can tell whether the preview is out of date.
    """

    song_key: str
    key: Any
    render: Render
    faithfulness: Faithfulness


@dataclass(frozen=True)
class SketchFile:
    """A sketch as it was loaded: enough to load it again."""

    data: bytes
    name: str
    voices: dict[str, str]
    decode_as: str  # a name whose suffix picks the decoder (the name itself, mostly)


class Workspace:
    """The open sketch, the page's settings and the last preview of one NeuroChip home."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.root = Path(home).expanduser() if home is not None else default_home()
        self.root = self.root / "workspace"

    # -- the sketch --------------------------------------------------------------------------

    def keep_sketch(
        self,
        data: bytes,
        name: str,
        voices: Mapping[str, str] | None = None,
        decode_as: str | None = None,
    ) -> None:
        """Remember the sketch now open (its file, as loaded). Too large a file is skipped.

        ``decode_as`` names the file for its decoder when the bytes are not what ``name``
        says (a take library's FLAC copy of ``minuet.wav``)."""
        if len(data) > MAX_SKETCH_BYTES:
            log.info("Not keeping %s for reopening: %d bytes", name, len(data))
            return
        self.root.mkdir(parents=True, exist_ok=True)
        # The bytes first: a crash between the two writes leaves the old name with new bytes
        # only if the JSON fails, and then the load check (length) sets both aside.
        write_bytes_atomically(self.root / "sketch.bin", data)
        meta = {
            "name": name,
            "voices": dict(voices or {}),
            "size": len(data),
            "decode_as": decode_as or name,
        }
        write_text_atomically(self.root / "sketch.json", json.dumps(meta))

    def sketch(self) -> SketchFile | None:
        """The sketch last kept, or None."""
        meta = self._read_json("sketch.json")
        if meta is None:
            return None
        try:
            data = (self.root / "sketch.bin").read_bytes()
            if len(data) != meta["size"] or not isinstance(meta["name"], str):
                raise ValueError("the sketch file does not match its description")
            voices = {str(k): str(v) for k, v in dict(meta.get("voices") or {}).items()}
            return SketchFile(
                data, meta["name"], voices, str(meta.get("decode_as") or meta["name"])
            )
        except (OSError, KeyError, TypeError, ValueError) as err:
            self._set_aside("sketch.json", err)
            self._set_aside("sketch.bin", err)
            return None

    def forget_sketch(self) -> None:
        for name in ("sketch.json", "sketch.bin", "preview.json", "preview.npz"):
            (self.root / name).unlink(missing_ok=True)

    # -- the page's state --------------------------------------------------------------------

    def keep_state(self, state: Mapping[str, Any]) -> None:
        """Remember the page's settings and choices (JSON-able values)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.root / "state.json", json.dumps(dict(state), sort_keys=True))

    def state(self) -> dict[str, Any]:
        """The state last kept ({} if none)."""
        state = self._read_json("state.json")
        return state if isinstance(state, dict) else {}

    # -- the last preview --------------------------------------------------------------------

    def keep_preview(self, preview: Preview) -> None:
        """Remember the newest finished preview (the one the page shows)."""
        render = preview.render
        arrays = {
            "audio": render.audio.samples,
            "source": render.source.samples,
            "input_image": render.input_image.to(torch.float16).numpy(),
            "output_image": render.output_image.to(torch.float16).numpy(),
            "times_s": np.asarray(preview.faithfulness.times_s, dtype=np.float64),
            "strip": np.asarray(preview.faithfulness.strip, dtype=np.float64),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        faith = preview.faithfulness
        meta = {
            "song_key": preview.song_key,
            "key": preview.key,
            "sample_rate": render.audio.sample_rate,
            "settings": render.settings.to_dict(),
            "start_s": render.start_s,
            "info": render.info,
            "faithfulness": {
                "score": faith.score,
                "segment": faith.segment,
                "duration_s": faith.duration_s,
                "counted_s": faith.counted_s,
            },
        }
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(self.root / "preview.npz", buffer.getvalue())
        write_text_atomically(self.root / "preview.json", json.dumps(meta))

    def preview(self) -> Preview | None:
        """The preview last kept, or None."""
        meta = self._read_json("preview.json")
        if meta is None:
            return None
        try:
            with np.load(self.root / "preview.npz", allow_pickle=False) as arrays:
                data = {name: arrays[name] for name in arrays.files}
            rate = int(meta["sample_rate"])
            faith = meta["faithfulness"]
            render = Render(
                audio=Audio(data["audio"].astype(np.float32), rate),
                source=Audio(data["source"].astype(np.float32), rate),
                settings=RenderSettings.from_dict(meta["settings"]),
                input_image=torch.from_numpy(data["input_image"].astype(np.float32)),
                output_image=torch.from_numpy(data["output_image"].astype(np.float32)),
                start_s=float(meta["start_s"]),
                info=dict(meta.get("info") or {}),
            )
            faithfulness = Faithfulness(
                score=float(faith["score"]),
                times_s=data["times_s"],
                strip=data["strip"],
                segment=faith["segment"],
                duration_s=float(faith["duration_s"]),
                counted_s=float(faith["counted_s"]),
            )
            key = meta["key"]
            return Preview(
                str(meta["song_key"]),
                tuple(key) if isinstance(key, list) else key,
                render,
                faithfulness,
            )
        except Exception as err:  # noqa: BLE001 -- any damage: set aside, never fatal
            self._set_aside("preview.json", err)
            self._set_aside("preview.npz", err)
            return None

    # -- files -------------------------------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        path = self.root / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            self._set_aside(name, err)
            return None

    def _set_aside(self, name: str, err: BaseException) -> None:
        path = self.root / name
        if not path.exists():
            return
        log.warning("Workspace file %s cannot be used (%s): set aside", path, err)
        try:
            path.replace(path.with_name(name + ".damaged"))
        except OSError:
            path.unlink(missing_ok=True)
