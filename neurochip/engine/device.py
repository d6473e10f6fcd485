"""What renders share about a device: its render lock, and how much of its memory a batch may use.

Every engine on a device renders under the device's one lock (:func:`device_lock`), whatever
model it holds: two renders at once would only run a GPU out of memory. The memory probes
measure what one model call needs once per shape, so batches fill the free memory.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl  # the kernel's file locks: renders take turns across processes (POSIX)
except ImportError:  # Windows: within one process only
    fcntl = None


class DeviceLock:
    """The render lock of one device.

    Threads of this process queue on a lock; with ``lock_file``, processes of this machine
    queue too, on an exclusive ``flock`` of that file (the app and ``neurochip serve`` side by
    side on one GPU: two renders at once would only run it out of memory). The file lock is
    the kernel's: a process that dies lets go of it.
    """

    def __init__(self, lock_file: Path | None = None) -> None:
        self._threads = threading.Lock()
        self.lock_file = lock_file
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        if not self._threads.acquire(blocking):
            return False
        if self.lock_file is None:
            return True
        try:
            self._fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
            fcntl.flock(self._fd, flags)
        except BlockingIOError:
            self._close()
            self._threads.release()
            return False
        except BaseException:
            self._close()
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        self._close()  # closing the file lets go of its lock
        self._threads.release()

    def locked(self) -> bool:
        return self._threads.locked()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DeviceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_DEVICE_LOCKS: dict[str, DeviceLock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def device_lock(device: torch.device | str) -> DeviceLock:
    """The one render lock of a device.

    Every engine on a device renders under it, so two engines (two models, or the app's old
    and new model while one still renders) never share a GPU at once: that would only run it
    out of memory. On a CUDA device the lock holds across the processes of this machine too
    (a lock file in the temporary folder, per user and device). Engines on different devices
    do not wait for each other.
    """
    device = torch.device(device)
    key = str(device)
    with _DEVICE_LOCKS_GUARD:
        if key not in _DEVICE_LOCKS:
            # An Apple GPU is one per machine, shared by its processes as a CUDA card is.
            shared = device.type in ("cuda", "mps") and fcntl is not None
            _DEVICE_LOCKS[key] = DeviceLock(device_lock_file(key) if shared else None)
        return _DEVICE_LOCKS[key]


def device_lock_file(key: str) -> Path:
    """Where the processes of this machine meet to take turns on a device."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    safe = re.sub(r"[^A-Za-z0-9]+", "-", key)
    return Path(tempfile.gettempdir()) / f"neurochip-{user}-{safe}.lock"


#: Most UNet items per call the automatic batch size picks: past this a bigger batch gains
#: nothing measurable on an H100 (issue 8's bench) and only holds memory.
MAX_AUTO_BATCH = 64

#: Share of the free GPU memory the automatic batch size fills with activations; the rest is
#: headroom (the allocator's fragmentation, the VAE's tiles, other programs).
MEMORY_SHARE = 0.6


def batch_for_memory(free_bytes: int, item_bytes: int, per_window: int) -> int:
    """UNet items per call for ``free_bytes`` of GPU memory at ``item_bytes`` per item:
    a share of the free memory, at least one window (``per_window`` items), at most
    :data:`MAX_AUTO_BATCH`."""
    fits = int(free_bytes * MEMORY_SHARE // max(1, item_bytes))
    return max(per_window, min(MAX_AUTO_BATCH, fits))


def synchronize(device: torch.device) -> None:
    """Wait for the device to catch up: a GPU runs ahead of Python, so a stage's time is only
    its own once the GPU finished it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class MemoryProbe:
    """GPU memory of one model call of a given shape, measured once by running it.

    A probe that sets a new peak is read from CUDA's peak counter as it stands, without
    resetting it. Only a probe that stays under an earlier peak is run again on a reset
    counter; the peak before that reset is kept in :attr:`peak_seen`, so :meth:`peak_bytes`
    covers the whole render either way.
    """

    def __init__(self, device: torch.device, memory_limit: int | None = None) -> None:
        self.device = device
        # GPU memory (bytes) the automatic batch size keeps the activations within, besides
        # what is free: e.g. 8 GiB, to check that a consumer card's share is enough.
        self.memory_limit = memory_limit
        self.peak_seen = 0
        self._measured: dict[tuple[Any, ...], int] = {}

    def bytes_of(self, key: tuple[Any, ...], probe: Callable[[], object]) -> int:
        """Peak memory ``probe`` allocates above what was allocated before it, measured once
        per ``key`` (a window or tile shape)."""
        if key not in self._measured:
            device = self.device
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            peak_before = torch.cuda.max_memory_allocated(device)
            with torch.no_grad():
                probe()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            if peak <= peak_before:  # hidden under an earlier peak: measure it on its own
                self.peak_seen = max(self.peak_seen, peak)
                torch.cuda.reset_peak_memory_stats(device)
                with torch.no_grad():
                    probe()
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device)
            self._measured[key] = max(1, peak - before)
        return self._measured[key]

    def free_bytes(self) -> int:
        """GPU memory free for activations: the device's free memory, within ``memory_limit``."""
        free, _ = torch.cuda.mem_get_info(self.device)
        if self.memory_limit is not None:
            used = torch.cuda.memory_allocated(self.device)
            free = min(free, max(0, self.memory_limit - used))
        return free

    def peak_bytes(self) -> int:
        """The most GPU memory allocated since :meth:`reset_peak`, probes included."""
        return max(self.peak_seen, torch.cuda.max_memory_allocated(self.device))

    def reset_peak(self) -> None:
        """Start a new measurement of :meth:`peak_bytes` (a benchmark's, before a render)."""
        self.peak_seen = 0
        torch.cuda.reset_peak_memory_stats(self.device)
