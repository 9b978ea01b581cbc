"""What each request method does: thin wrappers over the engine's plain functions.

A handler takes the shared `EngineState`, its typed parameters and a `JobContext`
(to stream events and notice cancellation) and returns the result dict of its
reply. Handlers in `INLINE` are answered on the reading thread at once; the rest
run as jobs on their own threads, so `ping` and `cancel` answer while they work.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine import __version__
from engine.errors import UserError
from engine.protocol import PROTOCOL_VERSION


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is seen."""


@dataclass
class JobContext:
    request_id: str
    method: str
    emit: Callable[[str, dict], None]
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)

    def check(self) -> None:
        if self.cancel_flag.is_set():
            raise Cancelled()


@dataclass
class EngineState:
    """What outlives a request: the loaded model (shared by all connections)."""

    model: Any = None  # engine.models.LoadedModel
    model_lock: threading.Lock = field(default_factory=threading.Lock)

    def require_model(self):
        if self.model is None:
            raise UserError("no model is loaded: send model.load first")
        return self.model


def ping(state: EngineState, params, ctx: JobContext) -> dict:
    return {"pong": True, "time": time.time(), "protocol": PROTOCOL_VERSION, "version": __version__}


def model_info(state: EngineState, params, ctx: JobContext) -> dict:
    if state.model is None:
        return {"loaded": False}
    info = state.model.info()
    info.pop("hooks")
    return {"loaded": True, **info, "hooks": sorted(state.model.model.hook_dict)}


def model_load(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.models import load_model

    ctx.emit("progress", {"message": f"loading {params.spec}", "fraction": 0.0})
    with state.model_lock:
        lm = load_model(params.spec, params.device, params.dtype)
        state.model = lm
    ctx.emit("progress", {"message": "loaded", "fraction": 1.0})
    return model_info(state, params, ctx)


def predict(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.predict import predict as run_predict

    return run_predict(state.require_model(), params.text, params.top)


def sleep(state: EngineState, params, ctx: JobContext) -> dict:
    if not (0 <= params.seconds <= 3600 and 1 <= params.steps <= 100_000):
        raise UserError("sleep takes 0 <= seconds <= 3600 and 1 <= steps <= 100000")
    for step in range(params.steps):
        time.sleep(params.seconds / params.steps)
        ctx.check()
        ctx.emit("progress", {"step": step + 1, "total": params.steps,
                              "fraction": (step + 1) / params.steps})
    return {"slept": params.seconds, "steps": params.steps}


HANDLERS: dict[str, Callable] = {
    "ping": ping,
    "model.info": model_info,
    "model.load": model_load,
    "predict": predict,
    "sleep": sleep,
}
INLINE = {"ping", "model.info", "cancel", "jobs"}
CAPABILITIES = sorted(set(HANDLERS) | {"cancel", "jobs"})
