"""Batch renders on a Ray cluster: one worker per GPU holding a loaded engine.

:func:`run_batch_on_ray` renders the items of a manifest (:mod:`neurochip.batch`) as the
embedded :func:`~neurochip.batch.run_batch` does, with the same results, but spread over Ray
actors: each :class:`RenderWorker` loads the model once and renders the songs sent to it (the
driver reads each song and sends its bytes, so the workers need no shared disk). The driver
writes every file, keeps the takes in the library and the index, as each item comes back. A
worker that dies (a lost machine, a killed process) loses nothing: its items go to the others,
and the batch finishes; a rerun skips what was written, as ever.

Needs the ``cluster`` extra (Ray). ``docs/CLUSTER.md`` shows how to start a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

from neurochip.batch import (
    BatchItem,
    BatchReport,
    done_row,
    index_row,
    is_finished,
    write_index,
)
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.library.store import TakeLibrary
from neurochip.model_spec import ModelSpec
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.takeset import TakeFile, TakeSet

log = logging.getLogger(__name__)


class RenderWorker:
    """A Ray actor's body: one engine, loaded once, rendering songs sent as bytes."""

    def __init__(self, model: ModelSpec) -> None:
        from neurochip.engine import Engine

        self.engine = Engine.from_pretrained(model)

    def render(
        self, song: bytes, name: str, settings: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, tuple[Any, int, dict[str, Any], Any]]:
        """Role -> (samples, sample rate, metadata, thumbnail) of each file of the take set;
        the thumbnail as an RGB array (or None), as the library keeps it for take lists."""
        from neurochip.sketch import load_sketch
        from neurochip.takeset import render_take_set

        sketch = load_sketch(song, name=name)
        takes = render_take_set(
            self.engine,
            sketch,
            RenderSettings.from_dict(settings),
            TakeSetOptions(**options),
        )
        return {
            role: (
                file.audio.samples,
                file.audio.sample_rate,
                file.metadata,
                None if file.thumbnail is None else np.asarray(file.thumbnail),
            )
            for role, file in takes.files.items()
        }


def run_batch_on_ray(
    items: list[BatchItem],
    model: ModelSpec,
    *,
    workers: int | None = None,
    library: TakeLibrary | None = None,
    progress: Callable[[float, str], None] | None = None,
    bit_depth: str = "16",
    on_submitted: Callable[[dict[Any, Any]], None] | None = None,
) -> BatchReport:
    """Render the items not finished before on Ray workers (``ray.init`` done by the caller).

    Args:
        items: From :func:`~neurochip.batch.load_manifest`.
        model: How every worker loads the model (its files are looked for on the workers).
        workers: How many workers; default one per GPU in the cluster (or one per CPU where it
            has none, each a whole machine's share of threads).
        library: Keep each take here too (the driver does, as items come back).
        on_submitted: Called with {pending task: (worker, item)} after each submission round
            (tests kill a busy worker here).

    Raises:
        NeuroChipError: When every worker has died with items left.
    """
    import ray
    from ray.exceptions import RayActorError

    report = BatchReport()
    index: dict[str, dict[str, Any]] = {}
    todo: list[BatchItem] = []
    for item in items:
        if is_finished(item):
            report.skipped.append(item.key)
            index[item.key] = {**index_row(item), "status": "done"}
        else:
            todo.append(item)
    if not todo:
        return report
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = workers or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)
    remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(RenderWorker)
    pool = [remote.remote(model) for _ in range(min(count, len(todo)))]
    idle = list(pool)
    pending: dict[Any, tuple[Any, BatchItem]] = {}
    queue = list(todo)
    done = 0
    while queue or pending:
        while queue and idle:
            worker, item = idle.pop(0), queue.pop(0)
            payload = (item.song.read_bytes(), item.song.name, item.settings.to_dict())
            options = asdict(item.options)
            pending[worker.render.remote(*payload, options)] = (worker, item)
        if on_submitted is not None:
            on_submitted(dict(pending))
        if not pending:
            raise NeuroChipError(f"Every Ray worker died with {len(queue)} item(s) left.")
        [finished], _ = ray.wait(list(pending), num_returns=1)
        worker, item = pending.pop(finished)
        try:
            files = ray.get(finished)
        except RayActorError:
            # The worker died with this item: another takes it; the worker is gone for good.
            log.warning("A Ray worker died rendering %s: it goes to another.", item.key)
            pool.remove(worker)
            queue.insert(0, item)
            continue
        except Exception as err:  # noqa: BLE001 - the item failed on a live worker: said, go on
            why = str(getattr(err, "cause", None) or err).strip().splitlines()[-1]
            report.failed[item.key] = why
            index[item.key] = {**index_row(item), "status": "failed", "error": why}
            idle.append(worker)
        else:
            index[item.key] = _write(item, files, library, bit_depth)
            report.rendered.append(item.key)
            idle.append(worker)
        done += 1
        if progress is not None:
            progress(done / len(todo), item.key)
        write_index(item.output.parents[1], index)
    return report


def _write(
    item: BatchItem,
    files: Mapping[str, tuple[Any, int, dict[str, Any], Any]],
    library: TakeLibrary | None,
    bit_depth: str,
) -> dict[str, Any]:
    """Write an item's files as the embedded batch does, and keep them in the library."""
    takes = TakeSet(renders={})
    for role, (samples, rate, meta, picture) in files.items():
        thumbnail = None if picture is None else Image.fromarray(np.asarray(picture, np.uint8))
        takes.files[role] = TakeFile(role, Audio(samples, rate), meta, thumbnail)
    takes.write(item.output, bit_depth)
    if library is not None:
        for role, file in takes.files.items():
            takes.saved[role] = library.add(file.audio, file.metadata, thumbnail=file.thumbnail).id
    return done_row(item, takes)


__all__ = ["RenderWorker", "run_batch_on_ray"]
