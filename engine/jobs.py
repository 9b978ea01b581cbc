"""The job object every long loop takes: a cancel check, progress and log lines.

One `Job` is made per engine request (by the server) or per CLI command (by the
CLI, with a printer for the terminal). Loops call `job.check()` often enough that
a cancel is seen within about a second, `job.progress(...)` as they go and
`job.log(...)` for lines a person may want to read later. `Job()` with no sink is
a silent job that is never cancelled, for library callers and tests.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is seen."""


Sink = Callable[[str, dict], None]  # (kind, data): kind is "progress", "metrics" or "log"

PROGRESS_EVERY_S = 0.1  # progress events closer together than this are dropped (see `Job.progress`)


class Job:
    def __init__(self, request_id: str = "", method: str = "", emit: Sink | None = None,
                 min_interval: float = PROGRESS_EVERY_S):
        self.request_id, self.method = request_id, method
        self.emit: Sink = emit or (lambda kind, data: None)
        self.cancel_flag = threading.Event()
        self.started = time.time()
        self.thread: threading.Thread | None = None
        self.min_interval = min_interval
        self._last_progress: tuple[float, str | None] | None = None  # (time, message) of the last one sent

    def cancel(self) -> None:
        self.cancel_flag.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_flag.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if a cancel was asked for."""
        if self.cancel_flag.is_set():
            raise Cancelled()

    def progress(self, fraction: float | None = None, message: str | None = None, **extra: Any) -> None:
        """Send a progress event. A loop may call this every step: an event less than
        `min_interval` after the last one is dropped unless its message changed or
        it is the last one (fraction 1)."""
        now = time.monotonic()
        last = self._last_progress
        if (last is not None and now - last[0] < self.min_interval and message == last[1]
                and (fraction is None or fraction < 1.0)):
            return
        self._last_progress = (now, message)
        data: dict[str, Any] = dict(extra)
        if fraction is not None:
            data["fraction"] = max(0.0, min(1.0, float(fraction)))
        if message is not None:
            data["message"] = message
        self.emit("progress", data)

    def log(self, message: str) -> None:
        self.emit("log", {"message": message})

    def metrics(self, data: dict) -> None:
        self.emit("metrics", data)

    # ---- helpers for the loops ------------------------------------------------------
    def span(self, start: float, end: float) -> "Job":
        """A job for one part of this one's work: the same cancel flag, its progress
        fractions mapped into `[start, end]` of this job's."""
        parent = self

        def emit(kind: str, data: dict) -> None:
            if kind == "progress" and "fraction" in data:
                data = {**data, "fraction": start + (end - start) * data["fraction"]}
            parent.emit(kind, data)

        child = Job(self.request_id, self.method, emit=emit, min_interval=self.min_interval)
        child.cancel_flag = self.cancel_flag
        return child

    def check_hooks(self, model) -> list:
        """TransformerLens forward hooks that call `check()` before every block, for
        forward passes that can take longer than a second (a large model on a CPU)."""
        def hook(act, hook):
            self.check()

        return [(f"blocks.{i}.hook_resid_pre", hook) for i in range(model.cfg.n_layers)]


def as_job(job: Job | None = None, check: Callable[[], None] | None = None,
           progress: Callable[[float], None] | None = None) -> Job:
    """The job a loop runs under: `job`, or a silent one that is never cancelled.
    The older `check=`/`progress=` callables, where a caller still passes them, are
    folded in: `check` is called by `job.check()`, `progress` gets each fraction."""
    if check is None and progress is None:
        return job if job is not None else Job()
    base = job if job is not None else Job()

    def emit(kind: str, data: dict) -> None:
        base.emit(kind, data)
        if kind == "progress" and progress is not None and "fraction" in data:
            progress(data["fraction"])

    wrapped = _CheckedJob(base.request_id, base.method, emit=emit, min_interval=base.min_interval)
    wrapped.cancel_flag, wrapped.extra_check = base.cancel_flag, check
    return wrapped


class _CheckedJob(Job):
    extra_check: Callable[[], None] | None = None

    def check(self) -> None:
        super().check()
        if self.extra_check is not None:
            self.extra_check()
