"""Progress of a render as the share of its expected time done, and the rates behind it.

A backend says how many units of work each of its stages has (picture columns, model calls,
seconds of audio); the engine times each stage on this device. Progress fractions then follow
the time a stage will take, so a "time left" extrapolated from them holds steady, and an
estimate can be given before a render starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from neurochip.errors import RenderCancelled

#: progress(fraction done 0..1, stage) -- stage is e.g. "encode", "denoise step 3 of 17".
ProgressCallback = Callable[[float, str], None]


class StageRates:
    """Seconds per unit of each stage on this device, learned from every render.

    Starts from a backend's prior (another machine's rates: only their ratios matter, and only
    until the first render); ``needed`` are the stages that must be measured here before an
    estimate means anything.
    """

    def __init__(self, prior: Mapping[str, float], needed: frozenset[str]) -> None:
        self.rates = dict(prior)
        self.stages = tuple(prior)
        self.measured: set[str] = set()  # stages whose rate is this device's, not the prior
        self.needed = needed

    def seconds(self, work: Mapping[str, float]) -> float | None:
        """Expected seconds of ``work``; None before the ``needed`` stages were measured."""
        if not self.needed <= self.measured:
            return None
        return sum(work.get(stage, 0.0) * self.rates[stage] for stage in self.stages)

    def learn(self, stage: str, rate: float) -> None:
        # The first measurement replaces the prior (a guess from another machine); later
        # ones are averaged in, so one disturbed render does not throw the estimate.
        known = stage in self.measured
        self.rates[stage] = 0.5 * self.rates[stage] + 0.5 * rate if known else rate
        self.measured.add(stage)


class StagedProgress:
    """Progress as the share of the render's expected time done, stage by stage.

    Each stage's expected time is its units of work times the measured rate, so a stage that
    is slow on this device (phase on a CPU) gets the share of the bar it takes. When a stage
    ends, its measured rate updates the engine's, for the next render.
    """

    def __init__(
        self,
        progress: ProgressCallback | None,
        rates: StageRates,
        work: Mapping[str, float],
        clock: Callable[[], float],
        sync: Callable[[], None],
        cancel: threading.Event | None = None,
    ) -> None:
        self.progress, self.rates, self.work = progress, rates, work
        self.cancel = cancel
        self.clock, self.sync = clock, sync
        expected = {stage: work.get(stage, 0.0) * rates.rates[stage] for stage in rates.stages}
        total = sum(expected.values()) or 1.0
        self.starts, self.shares, done = {}, {}, 0.0
        for stage in rates.stages:
            self.starts[stage], self.shares[stage] = done / total, expected[stage] / total
            done += expected[stage]
        self.current: str | None = None
        self.began = clock()
        self.done = 0.0

    def stage(self, stage: str, within: float, label: str) -> None:
        """Report progress within a stage; stops the render here once cancelled.

        Every stage reports often (the denoising loop every step, decoding every take, phase
        rebuilding every chunk), so a cancel takes effect within one of those.
        """
        self.check_cancel()
        if stage != self.current:
            self._end_stage()
            self.current, self.began = stage, self.clock()
        fraction = self.starts[stage] + self.shares[stage] * min(1.0, max(0.0, within))
        self._report(fraction, label)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise RenderCancelled("The render was cancelled.")

    def finish(self) -> None:
        self._end_stage()
        self._report(1.0, "done")

    def _end_stage(self) -> None:
        stage, units = self.current, self.work.get(self.current or "", 0.0)
        if stage is None or units <= 0:
            return
        self.sync()
        rate = (self.clock() - self.began) / units
        if rate > 0:
            self.rates.learn(stage, rate)

    def _report(self, fraction: float, label: str) -> None:
        self.done = min(1.0, max(self.done, fraction))  # never backwards
        if self.progress is not None:
            self.progress(self.done, label)
