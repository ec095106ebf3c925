"""Progress of the stages of ``assess`` on stderr (never stdout), for the CLI only.

The pipeline calls ``progress(name, done, total)``; a name ``"STAGE: step"`` is a step inside
``STAGE`` (e.g. ``"NNC transfer: sensitivity of tensor groups"``). Two displays:

* stderr is a terminal: a ``rich`` progress bar per stage (spinner, bar, done/total, elapsed time),
  removed when the run ends;
* stderr is not a terminal (CI logs, pipes): one plain line per finished stage with its elapsed time,
  ``eeki-label: static profile 0.41 s``.

``--quiet`` silences both (:class:`StageProgress` with ``enabled=False``).
"""

from __future__ import annotations

import sys
import time
from typing import IO


def stage_of(name: str) -> str:
    return name.split(":", 1)[0].strip()


class StageProgress:
    """Callable ``(name, done, total)``; :meth:`close` ends the display (and prints the last stage's line)."""

    def __init__(self, enabled: bool = True, stream: "IO[str] | None" = None, interactive: "bool | None" = None,
                 clock=time.perf_counter) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.stage: "str | None" = None
        self.started = 0.0
        self._rich = None
        self._tasks: dict[str, int] = {}

    # -- the callback -------------------------------------------------------------------------------
    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        stage = stage_of(name)
        if stage != self.stage:
            self._finish_stage()
            self.stage, self.started = stage, self.clock()
        if self.interactive:
            self._rich_update(stage, name, done, total)

    def close(self, ok: bool = True) -> None:
        """End the display; ``ok=False`` (the run failed) prints no line for the unfinished stage."""
        if not self.enabled:
            return
        if ok:
            self._finish_stage()
        self.stage = None
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def stage_done(self, name: str, seconds: float) -> None:
        """Report a stage timed by the caller (e.g. writing the outputs)."""
        if not self.enabled:
            return
        self._finish_stage()
        self._line(name, seconds)

    # -- displays -----------------------------------------------------------------------------------
    def _finish_stage(self) -> None:
        if self.stage is None:
            return
        elapsed = self.clock() - self.started
        if self.interactive and self._rich is not None and self.stage in self._tasks:
            task = self._tasks[self.stage]
            total = self._rich.tasks[self._tasks_index(task)].total or 1
            self._rich.update(task, completed=total, description=self.stage)
        else:
            self._line(self.stage, elapsed)
        self.stage = None

    def _line(self, stage: str, seconds: float) -> None:
        if self.interactive:
            return
        self.stream.write(f"eeki-label: {stage} {seconds:.2f} s\n")
        self.stream.flush()

    def _tasks_index(self, task_id: int) -> int:
        return next(i for i, t in enumerate(self._rich.tasks) if t.id == task_id)

    def _rich_update(self, stage: str, name: str, done: int, total: int) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
            )

            self._rich = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._rich.start()
        if stage not in self._tasks:
            self._tasks[stage] = self._rich.add_task(name, total=max(total, 1))
        self._rich.update(self._tasks[stage], description=name, completed=min(done, max(total, 1)),
                          total=max(total, 1))


def _duration(seconds: "float | None") -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class BatchProgress:
    """Progress of ``eeki-label batch`` on stderr: models done, failed, reused and remaining, and an ETA.

    A terminal gets one ``rich`` bar (removed at the end); anything else one plain line per finished
    model, ``eeki-label: [ 3/20] ok  zoo/a.onnx · done 2, failed 1, reused 0, left 17, ETA 1m12s``.
    Called with a ``eeki_label.batch.runner.Progress``."""

    def __init__(self, enabled: bool = True, stream: "IO[str] | None" = None, interactive: "bool | None" = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._rich = None
        self._task = None
        self._seen = 0

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        finished = p.done + p.failed + p.skipped
        counts = f"done {p.done}, failed {p.failed}, reused {p.skipped}, left {p.remaining}"
        if self.interactive:
            self._bar(p, finished, counts)
        elif p.last and finished > self._seen:
            width = len(str(p.total))
            self.stream.write(f"eeki-label: [{finished:>{width}}/{p.total}] {p.last_status:<3} {p.last} · {counts}, "
                              f"ETA {_duration(p.eta_s) if p.remaining else '0s'}\n")
            self.stream.flush()
        elif not self._seen and not p.last:
            self.stream.write(f"eeki-label: {p.total} models: {p.skipped} reused from an earlier run, "
                              f"{p.failed} failed earlier or refused, {p.remaining} to assess\n")
            self.stream.flush()
        self._seen = finished

    def _bar(self, p, finished: int, counts: str) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                                  TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task("", total=max(p.total, 1))
        eta = f", ETA {_duration(p.eta_s)}" if p.remaining and p.eta_s is not None else ""
        self._rich.update(self._task, completed=finished, description=counts + eta)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
