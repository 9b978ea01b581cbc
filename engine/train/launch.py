"""`saescope train --distributed N`: the same command, run on N ranks under torchrun.

The launcher checks what it can before any rank starts (settings, folders, that the
global batch divides over the ranks), so a mistake is one clear message, not N
tracebacks; then it runs `python -m torch.distributed.run --standalone
--nproc-per-node N -m engine train ...` (the command line without `--distributed`)
and waits for it.

Notes
- ctrl+c (or SIGTERM) asks the ranks to stop through a stop file (`STOP_FILE_ENV`):
  rank 0 sees it, the ranks agree to stop at the same step, checkpoint and end
  cleanly. torchrun runs in a session of its own so the terminal's ctrl+c reaches
  only the launcher (torchrun would otherwise tear the ranks down mid-step).
- Exit status: torchrun's, except that a stopped run exits 130, as a stopped
  one-process `saescope train` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from engine import distributed
from engine.errors import UserError
from engine.paths import REPO_ROOT

STOP_FILE_ENV = "SAESCOPE_STOP_FILE"  # a file whose existence asks a training command to stop


def check_plan(n: int, cfgs, dirs, resume: bool, spread: bool = False) -> None:
    """Everything about the runs that can be wrong before a rank starts."""
    from engine.train.loop import check_new, check_resumable, check_side_by_side

    distributed.check_world(n)
    for c in cfgs:
        c.validate()
    check_side_by_side(cfgs)
    if spread and len(cfgs) < n:
        raise UserError(f"spreading the runs over {n} ranks needs at least {n} runs (got {len(cfgs)})")
    if cfgs[0].batch_size % n and not spread:
        raise UserError(f"the batch size ({cfgs[0].batch_size}) must divide evenly over {n} ranks")
    for d in dirs:
        check_resumable(d) if resume else check_new(d)


def rank_env(n: int) -> dict:
    """The environment of `n` ranks started from here: this checkout importable, and
    each rank an equal part of the CPU threads unless OMP_NUM_THREADS is set (torchrun
    would set 1, with a warning on stderr that would break `--json`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if n > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    return env


def run_distributed_cli(n: int, cfgs, dirs, resume: bool, spread: bool = False, argv: list[str] | None = None) -> int:
    """Run this `saescope train` command line on `n` ranks; returns the exit status."""
    from engine.train.runs import stopped_line

    if distributed.under_torchrun():
        raise UserError("--distributed starts torchrun itself: under torchrun, leave it out")
    check_plan(n, cfgs, dirs, resume, spread)
    argv = sys.argv[1:] if argv is None else argv
    cmd = distributed.torchrun_command(n, ["engine", *distributed.strip_option(argv, "--distributed")])
    with tempfile.TemporaryDirectory(prefix="saescope-stop-") as tmp:
        stop_file = Path(tmp) / "stop"
        env = rank_env(n)
        env[STOP_FILE_ENV] = str(stop_file)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)

        def ask_to_stop(signum, frame) -> None:
            stop_file.touch()

        old = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                try:
                    rc = proc.wait()
                    break
                except KeyboardInterrupt:  # a second ctrl+c before the handler was in place
                    stop_file.touch()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if rc == 0 and stop_file.exists():
            print(f"saescope: {stopped_line(dirs)}", file=sys.stderr)
            return 130
        return rc
