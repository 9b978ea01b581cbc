"""Training runs that outlive the engine and the client: one OS process per
`train.start` (its runs side by side), a registry of them, following their
metrics files, stopping them.

A job is a folder `<registry>/<id>/` (`$SAESCOPE_RUNS`, else `training/` in
`engine.paths.cache_dir()`, so `SAESCOPE_CACHE` isolates tests too) with
- `job.json`: its runs (folder as given, absolute folder, settings), resume, device;
- `state.json`: the job's `engine.protocol.RunState` (starting/running with the
  training process's pid, then finished, stopped or failed with its message),
  written atomically by the engine at launch and by the process afterwards;
- `worker.log`: the training process's own output.
Each run folder has its own `state.json` too (written by `engine.train.loop.train`).

Notes
- The process is `python -m engine.train.worker <job folder>`, in a session of its
  own (`start_new_session`), stdin from /dev/null and output to `worker.log`: it
  survives the engine's end, a kill of the engine, the app, and a dropped SSH
  transport (no SIGHUP reaches it, and it writes to no pipe).
- Following a job is tailing its runs' `metrics.jsonl` (complete lines only). A
  file replaced by a resume (a new inode, or shorter) is read again from its start;
  the client drops records past a step it sees again.
- A process that is gone while its state still says starting/running died
  (`kill -9`, out of memory): it is reported `failed`, resumable when a checkpoint
  exists. The engine reaps the processes it started (a thread waits on each), so
  a finished one is never a zombie that looks alive.
- Stopping is a `stop` file in the job's folder plus SIGTERM once the process has
  its handler in place: it stops at its next step, checkpointed
  (`engine.train.worker`). Cancelling a follow only stops the following.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import msgspec

from engine.errors import UserError
from engine.paths import cache_dir
from engine.protocol import RunState, RunSummary, TrainJobInfo, TrainSettings
from engine.train import checkpoint as ckpt

FINAL = ("finished", "stopped", "failed")
STOP_FILE = "stop"  # asks the job's process to stop (see `stop`)
POLL_S = 0.2


class RunSpec(msgspec.Struct):
    out: str  # as the client gave it
    path: str  # absolute
    config: dict


class JobSpec(msgspec.Struct):
    id: str
    runs: list[RunSpec]
    resume: bool = False
    device: Optional[str] = None
    created: float = 0.0
    ranks: int = 1  # > 1: the worker runs on that many ranks under torchrun
    spread: bool = False  # the runs dealt to the ranks, not data-parallel (`engine.train.loop.train`)


def registry() -> Path:
    """`$SAESCOPE_RUNS`, else `training/` in the cache folder."""
    return Path(os.environ["SAESCOPE_RUNS"]) if os.environ.get("SAESCOPE_RUNS") else cache_dir() / "training"


def job_dir(job: str) -> Path:
    return registry() / job


# ---- processes ------------------------------------------------------------------------
def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not reaped yet) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"
    except (OSError, ValueError, IndexError):
        return True


def _is_worker(pid: int) -> bool:
    """Whether `pid` is (still) a training process, not a recycled pid."""
    try:
        return b"engine.train.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc: trust the pid


def launch(runs: list[tuple[str, Path, dict]], resume: bool, device: str | None = None, ranks: int = 1,
           spread: bool = False) -> str:
    """Start the training process for these runs ((out as given, folder, settings) each),
    on `ranks` data-parallel ranks (torchrun, see `engine.train.launch`); returns the job id."""
    job = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    folder = job_dir(job)
    folder.mkdir(parents=True)
    spec = JobSpec(job, [RunSpec(out, str(Path(path).resolve()), cfg) for out, path, cfg in runs], resume,
                   device, time.time(), ranks, spread)
    from engine.atomic import atomic_write_bytes

    atomic_write_bytes(folder / "job.json", msgspec.json.encode(spec))
    from engine.distributed import torchrun_command
    from engine.train.launch import rank_env

    env = rank_env(ranks)
    cmd = [sys.executable, "-m", "engine.train.worker", str(folder)]
    if ranks > 1:
        cmd = torchrun_command(ranks, cmd[2:])
    with open(folder / "worker.log", "ab") as log:
        proc = subprocess.Popen(cmd,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    write_job_state(job, RunState("starting", job=job, pid=proc.pid, updated=time.time()), only_if_not_final=True)
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{job}").start()
    return job


def write_job_state(job: str, state: RunState, only_if_not_final: bool = False) -> None:
    from engine.atomic import atomic_write_bytes

    if only_if_not_final:  # the process may already have written a later state
        old = _read_state(job_dir(job))
        if old is not None and old.state != "starting":
            return
    atomic_write_bytes(job_dir(job) / "state.json", msgspec.json.encode(state))


def _read_state(folder: Path) -> RunState | None:
    return ckpt.read_state(folder)


def load_spec(job: str) -> JobSpec:
    try:
        return msgspec.json.decode((job_dir(job) / "job.json").read_bytes(), type=JobSpec)
    except FileNotFoundError:
        raise UserError(f"no training job {job!r} (see train.list)") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise UserError(f"the training job {job!r} has a broken job.json ({e})") from None


def job_state(job: str) -> RunState:
    """The job's state, with a dead process told apart from a running one."""
    folder = job_dir(job)
    state = _read_state(folder)
    if state is None:
        state = RunState("failed", job=job, message="the job has no state")
    if state.state in ("starting", "running") and not pid_alive(state.pid):
        again = _read_state(folder)  # it may have written its final state as it exited
        if again is not None and again.state in FINAL:
            return again
        state = _died(job, state)
    return state


def _died(job: str, state: RunState) -> RunState:
    spec = load_spec(job)
    steps = [ckpt.checkpoint_step(Path(r.path)) for r in spec.runs]
    have = [s for s in steps if s is not None]
    return RunState("failed", job=job, pid=state.pid, updated=state.updated,
                    message=f"the training process (pid {state.pid}) died"
                            + (f"; resume continues from step {min(have)}" if have else ""),
                    checkpoint=min(have) if have else None, resumable=bool(have))


def run_state(run_path: Path, job: str, job_st: RunState) -> RunState:
    """A run folder's state: its own `state.json` when this job wrote it, else the job's."""
    st = ckpt.read_state(run_path)
    if st is None or st.job != job:
        st = msgspec.structs.replace(job_st, step=None, checkpoint=None)
    elif st.state in ("starting", "running") and job_st.state in FINAL:
        st = msgspec.structs.replace(job_st)  # died under it
    step, point = ckpt.last_step(run_path), ckpt.checkpoint_step(run_path)
    resumable = st.state != "finished" and point is not None and not (run_path / "eval.json").exists()
    return msgspec.structs.replace(st, step=step, checkpoint=point, resumable=resumable)


def jobs() -> list[str]:
    """Every job id in the registry, oldest first."""
    root = registry()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "job.json").exists())


def info(job: str) -> TrainJobInfo:
    spec = load_spec(job)
    st = job_state(job)
    runs = []
    for r in spec.runs:
        try:
            settings = msgspec.convert(r.config, TrainSettings, strict=False)
        except msgspec.ValidationError:
            continue
        runs.append(RunSummary(r.out, r.path, settings, run_state(Path(r.path), job, st)))
    return TrainJobInfo(job, st, spec.created, spec.resume, runs, str(job_dir(job) / "worker.log"), spec.ranks)


def find_job(job: str | None, out: str | None, live_only: bool = False) -> str:
    """A job by id, or the newest one that trains the folder `out`."""
    if job:
        load_spec(job)
        return job
    if not out:
        raise UserError("name a training job (`job`) or one of its run folders (`out`)")
    want = str(Path(out).expanduser().resolve())
    for j in reversed(jobs()):
        try:
            spec = load_spec(j)
        except UserError:
            continue
        if any(r.path == want for r in spec.runs):
            if live_only and job_state(j).state in FINAL:
                continue
            return j
    raise UserError(f"no training job {'is training' if live_only else 'trained'} {out}")


def busy(path: Path) -> str | None:
    """The id of a live job training the folder `path`, if any."""
    st = ckpt.read_state(path)
    if st is not None and st.state in ("starting", "running") and pid_alive(st.pid):
        return st.job or f"pid {st.pid}"
    want = str(Path(path).resolve())
    for j in reversed(jobs()):
        try:
            spec = load_spec(j)
        except UserError:
            continue
        if any(r.path == want for r in spec.runs) and job_state(j).state not in FINAL:
            return j
    return None


def stop(job: str) -> RunState:
    """Ask the job's process to stop at its next step (checkpointed); returns its state when asked."""
    st = job_state(job)
    if st.state in FINAL:
        return st
    # The file is seen at its next step; the signal only once its handler is in place
    # (state "running"): before that it would end the process at once, uncheckpointed.
    (job_dir(job) / STOP_FILE).touch()
    if st.state == "running" and st.pid and _is_worker(st.pid):
        try:
            os.kill(st.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return st


# ---- following ----------------------------------------------------------------------
class _Tail:
    """New complete lines of one metrics file."""

    def __init__(self, path: Path, from_end: bool = False):
        self.path, self.offset, self.inode = path, 0, None
        if from_end:
            try:
                st = path.stat()
                self.inode, self.offset = st.st_ino, st.st_size
            except OSError:
                pass

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != self.inode or st.st_size < self.offset:
                    self.inode, self.offset = st.st_ino, 0  # replaced (resume) or new: from the start
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


def follow(job: str, emit: Callable[[int, dict, bool], None], check: Callable[[], None],
           replay: bool = True) -> tuple[RunState, list[dict]]:
    """Send every run's metric records (`emit(run index, record, replaying)`) until the
    job ends; returns its final state and, when finished, each run's `eval.json`.
    `check` raises to stop following (the job goes on)."""
    spec = load_spec(job)
    tails = [_Tail(Path(r.path) / ckpt.METRICS, from_end=not replay) for r in spec.runs]
    first = True
    while True:
        check()
        st = job_state(job)
        for i, t in enumerate(tails):
            for rec in t.read():
                emit(i, rec, first and replay)
        first = False
        if st.state in FINAL:
            for i, t in enumerate(tails):  # what was written before the end
                for rec in t.read():
                    emit(i, rec, False)
            evals = []
            if st.state == "finished":
                for r in spec.runs:
                    try:
                        evals.append(json.loads((Path(r.path) / "eval.json").read_text()))
                    except (OSError, json.JSONDecodeError) as e:
                        raise UserError(f"{r.path}: finished without a readable eval.json ({e})") from None
            return st, evals
        time.sleep(POLL_S)
