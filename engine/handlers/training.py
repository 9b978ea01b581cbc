"""Handlers for training runs: start (and stream their metrics) and read back."""

from __future__ import annotations

import json
import time

from engine.errors import UserError
from engine.handlers.state import EngineState
from engine.jobs import Job


class Throttle:
    """Forward at most `rate` metric events per second per run; always the last one."""

    def __init__(self, emit, rate: float = 10.0):
        self.emit, self.gap, self.last = emit, 1.0 / rate, {}

    def __call__(self, run: int, record: dict, final: bool = False) -> None:
        now = time.time()
        if final or record.get("kind") != "step" or now - self.last.get(run, 0) >= self.gap \
                or "density_histogram" in record:
            self.last[run] = now
            self.emit("metrics", {"run": run, "record": record})


def train_start(state: EngineState, params, ctx: Job) -> dict:
    from pathlib import Path

    from engine.train.config import TrainConfig
    from engine.train.loop import train

    if not params.runs:
        raise UserError("train.start needs at least one run")
    cfgs, dirs = [], []
    for run in params.runs:
        run = dict(run)
        out = run.pop("out", None)
        if not out:
            raise UserError("each run needs an `out` folder")
        if "model" not in run and state.model is not None:
            run["model"] = state.model.spec
        cfgs.append(TrainConfig.from_dict(run))
        dirs.append(Path(out).expanduser())
    lm = state.model if state.model is not None and state.model.spec == cfgs[0].model else None
    throttle = Throttle(ctx.emit)
    results = train(cfgs, dirs, lm=lm, on_record=throttle, check=ctx.check, resume=params.resume,
                    log=lambda m: ctx.emit("log", {"message": m}))
    return {"runs": results}


def train_read(state: EngineState, params, ctx: Job) -> dict:
    from pathlib import Path

    from engine.train.checkpoint import read_metrics
    from engine.train.config import TrainConfig

    path = Path(params.path).expanduser()
    cfg = TrainConfig.load(path)
    final = path / "eval.json"
    return {"config": json.loads(cfg.to_json()), "records": read_metrics(path),
            "eval": json.loads(final.read_text()) if final.exists() else None}
