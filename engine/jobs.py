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


class Job:
    def __init__(self, request_id: str = "", method: str = "", emit: Sink | None = None):
        self.request_id, self.method = request_id, method
        self.emit: Sink = emit or (lambda kind, data: None)
        self.cancel_flag = threading.Event()
        self.started = time.time()
        self.thread: threading.Thread | None = None

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
