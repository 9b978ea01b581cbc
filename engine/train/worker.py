"""The training process of one job: `python -m engine.train.worker <job folder>`.

Started by `engine.train.detached.launch`, in a session of its own, so it goes on
when the engine, the app or the SSH connection ends. It trains the job's runs side
by side with `engine.train.loop.train` (metrics to each run's `metrics.jsonl`,
checkpoints, each run's `state.json`) and records the job's own state.

Notes
- SIGTERM or SIGINT, or a `stop` file in the job's folder: stop at the next step,
  checkpointed (state `stopped`); SIGHUP is ignored.
- Any failure is the job's `failed` state with a one-line message (the traceback
  goes to `worker.log`).
- A data-parallel job (`ranks` > 1) runs this module on each rank under torchrun
  (`python -m torch.distributed.run ... -m engine.train.worker <folder>`): every
  rank trains, rank 0 alone writes the job's state and log lines, and a stop seen
  by rank 0 (its signal, the stop file) stops every rank at the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path


def main(folder: str) -> int:
    from engine.errors import UserError
    from engine.jobs import Cancelled
    from engine.protocol import RunState
    from engine.distributed import rank_device
    from engine.distributed import ranks as get_ranks
    from engine.train import detached

    job = Path(folder).name
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    stop_file = Path(folder) / detached.STOP_FILE

    def check() -> None:
        if stop.is_set() or stop_file.exists():
            raise Cancelled()

    try:
        spec = detached.load_spec(job)
    except UserError as e:
        detached.write_job_state(job, RunState("failed", job=job, message=str(e), updated=time.time()))
        return 2
    ranks = get_ranks(spec.device)  # under torchrun: this rank of a data-parallel job
    main = ranks.is_main

    def state(name: str, message: str = "") -> None:
        if not main:  # rank 0 speaks for the job
            return
        detached.write_job_state(job, RunState(name, job=job, pid=os.getpid() if name == "running" else None,
                                               message=message, updated=time.time()))

    def log(message: str) -> None:
        if main:
            print(f"[train {job}] {message}", file=sys.stderr, flush=True)

    state("running")
    try:
        from engine.cli import quiet_libraries

        quiet_libraries()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    try:
        from engine.models import load_model
        from engine.train.config import TrainConfig
        from engine.train.loop import train

        cfgs = [TrainConfig.from_dict(r.config) for r in spec.runs]
        dirs = [Path(r.path) for r in spec.runs]
        log(f"pid {os.getpid()}: loading {cfgs[0].model}" + (f" on {ranks.world} ranks" if ranks.distributed else ""))
        lm = load_model(cfgs[0].model, rank_device(spec.device, ranks))
        if not ranks.distributed:  # a rank alone must not leave: the others would wait for it
            check()
        train(cfgs, dirs, lm=lm, check=check, resume=spec.resume, log=log, job=job, ranks=ranks, spread=spec.spread)
    except Cancelled:
        from engine.train.loop import STOPPED_MESSAGE

        log(STOPPED_MESSAGE)
        state("stopped", STOPPED_MESSAGE)
        return 0
    except UserError as e:
        log(f"failed: {e}")
        state("failed", str(e))
        return 2
    except BaseException as e:  # noqa: BLE001 - reported, then the process ends
        traceback.print_exc()
        state("failed", f"{type(e).__name__}: {e}")
        return 1
    log("finished")
    state("finished")
    return 0


if __name__ == "__main__":
    from engine.runtime import keep_big_blocks

    keep_big_blocks()
    sys.exit(main(sys.argv[1]))
