"""Progress of a long CLI command: one `Job` sink, three ways of showing it.

- `bar`: a rich progress bar on stderr, when stderr is a terminal.
- `plain`: without a terminal (a script, `nohup`, a pipe), plain lines on stderr,
  at most one every `PLAIN_EVERY_S` seconds, plus the first, the last and one
  whenever the message (the phase) changes.
- `json` (`--json`): one JSON object per line on stderr for every event,
  `{"event": "progress", "fraction": 0.42, "message": "indexing ...", "step": 110,
  "total": 256, "elapsed": 3.2}`, `{"event": "log", "message": ...}` and
  `{"event": "metrics", ...}`; stdout keeps just the command's result (one JSON
  object), so `saescope ... --json > out.json` stays parseable.

Log events print as lines in every mode. Use it as

    with cli_job(as_json) as job:
        result = some_long_loop(..., job=job)

A Ctrl+C inside the block (or a `Cancelled`) ends the command with one line
`saescope: cancelled` and exit code 130; the loops write files atomically, so
nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any, TextIO

from engine.jobs import Cancelled, Job

PLAIN_EVERY_S = 5.0


def pick_mode(as_json: bool, stream: TextIO | None = None) -> str:
    if as_json:
        return "json"
    stream = stream or sys.stderr
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):
        return "plain"


class CliProgress:
    """The sink: `emit(kind, data)` shows an event the way `mode` says."""

    def __init__(self, mode: str, stream: TextIO | None = None, every: float = PLAIN_EVERY_S):
        if mode not in ("bar", "plain", "json"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode, self.every = mode, every
        self.stream = stream or sys.stderr
        self.started = time.time()
        self._last_plain: tuple[float, str | None] | None = None
        self._bar = self._task = None

    # ---- life ----------------------------------------------------------------
    def start(self) -> None:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(file=self.stream), refresh_per_second=8)
            self._bar.start()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def job(self, method: str = "") -> Job:
        return Job(method=method, emit=self.emit)

    # ---- events --------------------------------------------------------------
    def emit(self, kind: str, data: dict) -> None:
        elapsed = time.time() - self.started
        if self.mode == "json":
            self._write(json.dumps({"event": kind, **data, "elapsed": round(elapsed, 3)}))
        elif kind == "log":
            if self._bar is not None:
                self._bar.console.print(data.get("message", ""), highlight=False, markup=False)
            else:
                self._write(str(data.get("message", "")))
        elif kind == "progress":
            self._progress(data, elapsed)
        # metrics: only in json; training prints its own lines

    def _progress(self, data: dict[str, Any], elapsed: float) -> None:
        fraction, message = data.get("fraction"), data.get("message")
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(message or "working", total=1.0)
            self._bar.update(self._task, completed=fraction if fraction is not None else 0.0,
                             description=message or self._bar.tasks[0].description)
            return
        now, last = time.monotonic(), self._last_plain
        final = fraction is not None and fraction >= 1.0
        if last is not None and not final and message == last[1] and now - last[0] < self.every:
            return
        self._last_plain = (now, message)
        parts = [message or "working"]
        if fraction is not None:
            parts.append(f"{fraction:.0%}")
        if data.get("total"):
            parts.append(f"({data.get('step', 0)}/{data['total']})")
        parts.append(f"{elapsed:.1f}s")
        self._write("  ".join(parts))

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away; the work goes on


@contextlib.contextmanager
def cli_job(as_json: bool = False, method: str = "", stream: TextIO | None = None,
            mode: str | None = None, every: float = PLAIN_EVERY_S):
    """A `Job` that shows its progress on the terminal (see the module notes)."""
    sink = CliProgress(mode or pick_mode(as_json, stream), stream, every)
    sink.start()
    try:
        yield sink.job(method)
    except (KeyboardInterrupt, Cancelled):
        sink.stop()
        print("saescope: cancelled", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        sink.stop()
