"""Handlers for training runs: start one (as its own process), follow, list, stop, read
back, and find the runs in a folder (side-by-side runs share a parent folder).

Notes
- `train.start` launches the job's training process (`engine.train.detached`) and
  then follows it like `train.follow`: the run goes on when the client disconnects
  or the engine ends. Cancelling `train.start` (or `train.stop`) stops the run:
  checkpointed, state `stopped`, and `resume` continues it; cancelling
  `train.follow` only stops following.
- Settings are checked here first, so bad ones are an error reply at once, before
  any process starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec

from engine.errors import UserError
from engine.workspace import Workspace
from engine.jobs import Cancelled, Job
from engine.protocol import RunEval, RunFolders, RunRead, TrainJobs, TrainRecord, TrainResult, TrainStopping


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


def _evals(results: list[dict]) -> list[RunEval]:
    return [msgspec.convert(r, RunEval, strict=False) for r in results]


def _follow(job: str, ctx: Job, replay: bool, owner: bool = False) -> TrainResult:
    """Follow `job` to its end. `owner` (train.start): a cancel request stops the training
    (and the reply waits until it has stopped, checkpointed); the client going away
    (end of input, a dropped connection) only ends the following."""
    from engine.train import detached

    throttle = Throttle(ctx.emit)

    def emit(run: int, record: dict, replaying: bool) -> None:
        throttle(run, record, final=replaying)

    try:
        state, results = detached.follow(job, emit, ctx.check, replay=replay)
    except Cancelled:
        if not owner or getattr(ctx, "client_gone", False):
            raise
        detached.stop(job)
        state, results = detached.follow(job, emit, lambda: None, replay=False)
        if state.state == "finished":  # it ended before the stop was seen
            return TrainResult(job=job, runs=_evals(results))
        raise
    if state.state == "stopped":
        raise Cancelled()
    if state.state == "failed":
        raise UserError(state.message or "the training failed")
    return TrainResult(job=job, runs=_evals(results))


def train_start(state: Workspace, params, ctx: Job) -> TrainResult:
    from engine.train import detached
    from engine.train.config import TrainConfig
    from engine.train.loop import check_new, check_resumable

    if not params.runs:
        raise UserError("train.start needs at least one run")
    from engine.distributed import MAX_RANKS

    if not 1 <= params.ranks <= MAX_RANKS:
        raise UserError(f"ranks must be between 1 and {MAX_RANKS}, got {params.ranks}")
    runs, cfgs = [], []
    for run in params.runs:
        run = dict(run)
        out = run.pop("out", None)
        if not out or not isinstance(out, str):
            raise UserError("each run needs an `out` folder")
        path = Path(out).expanduser()
        if params.resume:  # settings left out are the saved run's
            check_resumable(path)
            saved = TrainConfig.load(path)
            run = {**saved.as_dict(), **run}
        elif "model" not in run and state.model is not None:
            run["model"] = state.model.spec
        cfg = TrainConfig.from_dict(run)
        cfg.validate()
        if (other := detached.busy(path)) is not None:
            raise UserError(f"{out} is already training (job {other}): train.stop stops it")
        if params.resume:
            if saved != cfg:
                diff = [f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in cfg.__struct_fields__
                        if getattr(saved, k) != getattr(cfg, k)]
                raise UserError(f"{out} holds a run with a different configuration ({'; '.join(diff)})")
        else:
            check_new(path, cli=False)
        runs.append((out, path, cfg.as_dict()))
        cfgs.append(cfg)
    if len({p.resolve() for _, p, _ in runs}) != len(runs):
        raise UserError("each run needs its own output folder")
    from engine.train.loop import check_side_by_side

    check_side_by_side(cfgs)
    from engine.train.launch import check_plan

    check_plan(params.ranks, cfgs, [], params.resume, params.spread)  # the folders are checked above
    device = state.model.device if state.model is not None and state.model.spec == cfgs[0].model else None
    job = detached.launch(runs, params.resume, device, params.ranks, params.spread)
    ctx.emit("log", {"message": f"training job {job} started (train.stop stops it; "
                                f"train.follow follows it again)"})
    return _follow(job, ctx, replay=True, owner=True)


def train_follow(state: Workspace, params, ctx: Job) -> TrainResult:
    from engine.train import detached

    return _follow(detached.find_job(params.job, params.out), ctx, replay=params.replay)


def train_list(state: Workspace, params, ctx: Job) -> TrainJobs:
    from engine.train import detached

    out = []
    for job in detached.jobs():
        try:
            out.append(detached.info(job))
        except UserError:
            continue
    return TrainJobs(jobs=out)


def train_stop(state: Workspace, params, ctx: Job) -> TrainStopping:
    from engine.train import detached

    job = detached.find_job(params.job, params.out, live_only=params.job is None)
    st = detached.stop(job)
    return TrainStopping(job=job, state=st.state)


def train_scan(state: Workspace, params, ctx: Job) -> RunFolders:
    """The run folders at `params.path`, named as the client named the folder (`path/<name>`)."""
    from engine.train.config import run_folders

    path = Path(params.path).expanduser()
    found = run_folders(path)
    if found == [path]:
        return RunFolders(path=params.path, runs=[params.path])
    base = params.path.rstrip("/") or params.path
    return RunFolders(path=params.path, runs=[f"{base}/{f.name}" for f in found])


def train_read(state: Workspace, params, ctx: Job) -> RunRead:
    from engine.train import checkpoint as ckpt
    from engine.train import detached
    from engine.train.config import TrainConfig

    path = Path(params.path).expanduser()
    cfg = TrainConfig.load(path)
    final = path / "eval.json"
    records = msgspec.convert(ckpt.read_metrics(path) if (path / ckpt.METRICS).exists() else [],
                              list[TrainRecord], strict=False)
    run_state = ckpt.read_state(path)
    if run_state is not None:
        job_st = detached.job_state(run_state.job) if run_state.job and (detached.job_dir(run_state.job)
                                                                          / "job.json").exists() else None
        if job_st is not None:
            run_state = detached.run_state(path, run_state.job, job_st)
        elif run_state.state in ("starting", "running") and not detached.pid_alive(run_state.pid):
            point = ckpt.checkpoint_step(path)
            run_state = msgspec.structs.replace(
                run_state, state="failed", message=f"the training process (pid {run_state.pid}) died",
                checkpoint=point, resumable=point is not None)
    return RunRead(path=str(path), config=cfg.settings(), records=records,
                   eval=msgspec.convert(json.loads(final.read_text()), RunEval, strict=False)
                   if final.exists() else None, state=run_state)


def train_emergence(state: Workspace, params, ctx: Job):
    """`train.emergence`: a run's emergence curve, matched snapshot by snapshot (a job:
    it reports progress and can be cancelled between snapshots)."""
    from engine.train.emergence import emergence

    against = Path(params.against).expanduser() if params.against else None
    return emergence(Path(params.path).expanduser(), params.threshold, against, params.shared_threshold, job=ctx)
