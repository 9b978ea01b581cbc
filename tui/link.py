"""The app's side of the engine connection: one `EngineClient`, the model, the jobs.

`EngineLink` starts (and restarts) the engine, loads the model after the hello,
runs requests for the panes and keeps the list of running jobs. It reports
everything as messages (`tui.messages`) through the `post` callable it is given,
so widgets never touch the client and the client knows nothing about Textual.

Notes
- Panes call `run()`; with `needs_model=True` it first waits for a model load in
  progress, so a prompt typed while the model loads is answered when it is ready.
- Job progress arrives as fast as the engine sends it; the status bar is told at
  most every `JOBS_REFRESH` seconds, but at once when a job starts or ends.
- A TCP engine may already hold the model (loaded at its start, or for another
  client); `model.info` is asked first so it is not loaded twice.
- `finished` keeps the last few (id, method, status) so tests and the log can see
  how each job ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import replace
from typing import Callable

from textual.message import Message

from tui.client import EngineClient, EngineError, EngineGone, result_of
from tui.messages import ConnectionChanged, JobFailed, JobsChanged, JobView, LogLine, ModelChanged
from tui.target import EngineTarget

JOBS_REFRESH = 0.2  # seconds between status-bar updates for job progress


class EngineLink:
    def __init__(self, target: EngineTarget, model_spec: str, post: Callable[[Message], object]):
        self.target, self.model_spec, self._post = target, model_spec, post
        self.how = target.describe()
        self.client: EngineClient | None = None
        self.model: dict | None = None
        self.model_error = ""
        self._model_task: asyncio.Task | None = None
        self._jobs: dict[str, JobView] = {}
        self._jobs_flush: asyncio.TimerHandle | None = None
        self.finished: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=20)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    @property
    def model_loading(self) -> bool:
        return self._model_task is not None and not self._model_task.done()

    @property
    def engine_pid(self) -> int | None:
        return self.client.hello.pid if self.client and self.client.hello else None

    def log(self, text: str) -> None:
        self._post(LogLine("app", text))

    # ---- connecting ---------------------------------------------------------------
    async def connect(self) -> None:
        """Start the engine and load the model; failures become messages, never exceptions."""
        self._post(ConnectionChanged("connecting", self.how))
        self.client = EngineClient(self.target, on_log=self._on_log, on_disconnect=self._on_disconnect)
        self.log(f"starting the engine ({self.how}): {' '.join(self.target.argv) or self.how}")
        try:
            hello = await self.client.start()
        except EngineError as e:
            self.log(f"could not reach the engine: {e}")
            self._post(ConnectionChanged("disconnected", self.how, str(e)))
            return
        self.log(f"engine {hello.version} (pid {hello.pid}) connected {self.how}")
        self._post(ConnectionChanged("connected", self.how))
        self._model_task = asyncio.create_task(self._load_model())

    async def restart(self) -> None:
        self.log("reconnecting to the engine" if self.target.how == "tcp" else "restarting the engine")
        await self.close()
        await self.connect()

    async def close(self) -> None:
        if self._model_task is not None:
            self._model_task.cancel()
        if self.client is not None:
            await self.client.close()
        self._set_jobs_now({})

    async def _load_model(self) -> None:
        spec = self.model_spec
        self.model, self.model_error = None, ""
        self._post(ModelChanged("loading", spec))
        try:
            info = await self._live_client().call("model.info")
            if not (info.loaded and info.spec == spec):
                info = await self.run("model.load", {"spec": spec})
        except EngineError as e:
            self.model_error = f"the model {spec!r} did not load: {e}"
            self.log(self.model_error)
            self._post(ModelChanged("failed", spec, detail=str(e)))
            return
        self.model = info
        self.log(f"model {info.name} loaded on {info.device} ({info.dtype})")
        self._post(ModelChanged("loaded", spec, info.name or spec, info.device))

    def _on_log(self, source: str, line: str) -> None:
        self._post(LogLine(source, line))  # type: ignore[arg-type]

    def _on_disconnect(self, reason: str) -> None:
        self.log(f"the engine died: {reason}")
        self._set_jobs_now({})
        self._post(ConnectionChanged("disconnected", self.how, reason, died=True))

    # ---- requests -----------------------------------------------------------------
    async def model_ready(self) -> dict:
        """The loaded model's info, once a load in progress ends; raises EngineError."""
        self._live_client()
        if self.model_loading:
            await asyncio.shield(self._model_task)
        if self.model is None:
            raise EngineError(self.model_error or "no model is loaded")
        return self.model

    async def run(self, method: str, params: dict | None = None, *, needs_model: bool = False,
                  on_event: Callable | None = None, on_start: Callable[[str], None] | None = None) -> dict:
        """Run one request as a tracked job; returns its result or raises EngineError.

        `on_start` gets the request id once it is sent (to `cancel` just this job)."""
        if needs_model:
            await self.model_ready()
        client = self._live_client()

        def handle(event) -> None:
            if event.kind == "progress" and event.id in self._jobs:
                fraction = event.data.fraction
                self._jobs[event.id] = replace(self._jobs[event.id], fraction=fraction)
                self._jobs_changed()
            if on_event is not None:
                on_event(event)

        pending = await client.send_request(method, params, handle)
        self._set_jobs_now({**self._jobs, pending.id: JobView(pending.id, method)})
        if on_start is not None:
            on_start(pending.id)
        try:
            reply = await client.wait(pending)
        finally:
            self._set_jobs_now({k: v for k, v in self._jobs.items() if k != pending.id})
        self.finished.append((pending.id, method, reply.status))
        if reply.status != "ok" and method not in ("predict",):
            self.log(f"{method} (request {pending.id}) ended: {reply.status} {reply.error or ''}".rstrip())
            if reply.status == "error":
                self._post(JobFailed(method, reply.error or ""))
        return result_of(method, reply)

    async def cancel_jobs(self, method: str | None = None) -> int:
        """Ask the engine to cancel running jobs (of `method`, or all); returns how many."""
        client = self._live_client()
        targets = [j.id for j in self._jobs.values() if method in (None, j.method)]
        for target in targets:
            with contextlib.suppress(EngineError):  # it may have just finished
                await client.cancel(target)
        return len(targets)

    def _live_client(self) -> EngineClient:
        if self.client is None or not self.client.connected:
            why = self.client.gone if self.client else "not started"
            raise EngineGone(f"the engine is not running ({why}); ctrl+r restarts it")
        return self.client

    # ---- job list -----------------------------------------------------------------
    def _set_jobs_now(self, jobs: dict[str, JobView]) -> None:
        self._jobs = jobs
        if self._jobs_flush is not None:
            self._jobs_flush.cancel()
            self._jobs_flush = None
        self._post(JobsChanged(tuple(self._jobs.values())))

    def _jobs_changed(self) -> None:
        if self._jobs_flush is None:
            self._jobs_flush = asyncio.get_running_loop().call_later(JOBS_REFRESH, self._flush_jobs)

    def _flush_jobs(self) -> None:
        self._jobs_flush = None
        self._post(JobsChanged(tuple(self._jobs.values())))
