"""Handlers for the engine itself: ping, the model, predict and the test job."""

from __future__ import annotations

import time

import msgspec

from engine import __version__
from engine.errors import UserError
from engine.workspace import Workspace
from engine.jobs import Job
from engine.protocol import PROTOCOL_VERSION, ModelInfo, Pong, Prediction, Slept, WorkspaceStats


def ping(state: Workspace, params, ctx: Job) -> Pong:
    return Pong(pong=True, time=time.time(), protocol=PROTOCOL_VERSION, version=__version__)


def model_info(state: Workspace, params, ctx: Job) -> ModelInfo:
    if state.model is None:
        return ModelInfo(loaded=False)
    return msgspec.convert({"loaded": True, **state.model.info()}, ModelInfo)


def model_load(state: Workspace, params, ctx: Job) -> ModelInfo:
    from engine.models import load_model

    ctx.emit("progress", {"message": f"loading {params.spec}", "fraction": 0.0})
    with state.model_lock:
        state.set_model(load_model(params.spec, params.device, params.dtype))
    ctx.emit("progress", {"message": "loaded", "fraction": 1.0})
    return model_info(state, params, ctx)


def workspace(state: Workspace, params, ctx: Job) -> WorkspaceStats:
    return WorkspaceStats(**state.stats())


def predict(state: Workspace, params, ctx: Job) -> Prediction:
    from engine.predict import predict as run_predict

    return msgspec.convert(run_predict(state.require_model(), params.text, params.top), Prediction)


def sleep(state: Workspace, params, ctx: Job) -> Slept:
    if not (0 <= params.seconds <= 3600 and 1 <= params.steps <= 100_000):
        raise UserError("sleep takes 0 <= seconds <= 3600 and 1 <= steps <= 100000")
    for step in range(params.steps):
        time.sleep(params.seconds / params.steps)
        ctx.check()
        ctx.emit("progress", {"step": step + 1, "total": params.steps,
                              "fraction": (step + 1) / params.steps})
    return Slept(slept=params.seconds, steps=params.steps)
