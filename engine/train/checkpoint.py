"""Checkpoints of a training run, written atomically, and the metrics file.

A run folder holds:
- `saescope.json`: the run's `TrainConfig`;
- `metrics.jsonl`: one JSON object per step (and `"kind": "eval"` records);
- `checkpoint/`: the latest checkpoint, replaced as a whole (see `engine.atomic`):
  the training SAE's raw state dict, sae_lens's trainer state (optimiser, LR
  scheduler, coefficient schedulers, counters) and activation scaler, our firing
  tracker, the step, and torch's random state;
- when finished: `cfg.json` and `sae_weights.safetensors` (sae_lens's inference
  format, loadable by `sae_lens.SAE.load_from_disk`), `sparsity.safetensors` and
  `eval.json`.

Notes
- `kill -9` at any moment leaves either the previous checkpoint or the new one:
  the swap is two renames (`checkpoint` -> `.checkpoint.old`, the new one ->
  `checkpoint`), and a kill between them leaves no `checkpoint`; `recover` (run
  before every look at a checkpoint) puts the newest complete one back. A
  checkpoint is complete when its `position.json` (written last) exists.
- `state.json`: what the run is doing (`engine.protocol.RunState`: running with
  the training process's pid, finished, stopped, failed with its message),
  written atomically by the process that trains it.
- `SAESCOPE_TEST_KILL_AT=<point>:<n>` (tests only) makes the process SIGKILL
  itself the n-th time (from 1) it reaches `<point>` (`kill_point`).
- On resume, metric lines past the checkpoint's step are dropped (they will be
  recomputed, identically), so the file never holds a step twice.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_write_text
from engine.errors import UserError

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"
STATE = "state.json"
KILL_ENV = "SAESCOPE_TEST_KILL_AT"
_reached: collections.Counter = collections.Counter()
on_kill_point = None  # tests: called with each point's name


def kill_point(name: str) -> None:
    """A place where tests may SIGKILL this process (see `KILL_ENV`), or, in-process,
    look at the files as a kill would leave them (`on_kill_point`)."""
    if on_kill_point is not None:
        on_kill_point(name)
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, n = spec.rpartition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)


def _position(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "position.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover(run_dir: Path) -> None:
    """After a kill in the middle of a checkpoint swap: put the newest complete
    checkpoint back in place, and drop the leftovers."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    current = run_dir / CHECKPOINT
    leftovers = [p for p in run_dir.iterdir() if p.name.startswith(f".{CHECKPOINT}.") and p.is_dir()]
    if not leftovers:
        return
    if _position(current) is None:
        complete = [(step, p) for p in leftovers if (step := _position(p)) is not None]
        if complete:
            best = max(complete, key=lambda sp: sp[0])[1]
            if current.exists():
                shutil.rmtree(current)
            os.replace(best, current)
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(run_dir: Path, step: int, sae, trainer, tracker) -> None:
    """Write the checkpoint of `step` beside the old one, then swap it in (see Notes)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}, str(tmp / "sae.safetensors"))
        kill_point("save-writing")
        trainer.save_trainer_state(tmp)
        save_file(tracker.state_dict(), str(tmp / "tracker.safetensors"))
        torch.save({"torch_rng": torch.get_rng_state()}, tmp / "rng.pt")
        (tmp / "position.json").write_text(json.dumps({"step": step}))  # last: marks it complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kill_point("save-written")
    old = path.with_name(f".{CHECKPOINT}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    kill_point("save-swapping")
    os.replace(tmp, path)
    kill_point("save-swapped")
    shutil.rmtree(old, ignore_errors=True)


def remove_checkpoint(run_dir: Path) -> None:
    """Drop the checkpoint of a finished run: renamed away first, so a kill leaves all or nothing."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if path.exists():
        gone = Path(tempfile.mkdtemp(dir=run_dir, prefix=".removed.", suffix=".tmp"))
        os.replace(path, gone / CHECKPOINT)
        kill_point("checkpoint-removing")
        shutil.rmtree(gone, ignore_errors=True)
    for p in run_dir.iterdir():
        if p.name.startswith((f".{CHECKPOINT}.", ".removed.")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step the run's checkpoint resumes from (None: no checkpoint); looks, never
    changes anything (the run may be training)."""
    run_dir = Path(run_dir)
    step = _position(run_dir / CHECKPOINT)
    if step is not None or not run_dir.is_dir():
        return step
    steps = [s for p in run_dir.iterdir() if p.name.startswith(f".{CHECKPOINT}.")
             and (s := _position(p)) is not None]
    return max(steps) if steps else None


def load_checkpoint(run_dir: Path, sae, trainer, tracker) -> int:
    """Restore everything from `run_dir/checkpoint`; returns the step to continue from."""
    recover(run_dir)
    ckpt = run_dir / CHECKPOINT
    try:
        step = json.loads((ckpt / "position.json").read_text())["step"]
        sae.load_state_dict(load_file(str(ckpt / "sae.safetensors")))
        trainer.load_trainer_state(ckpt)
        tracker.load_state_dict(load_file(str(ckpt / "tracker.safetensors")))
        torch.set_rng_state(torch.load(ckpt / "rng.pt")["torch_rng"])
    except Exception as e:  # any damage means the same thing to the user
        raise UserError(f"the checkpoint in {ckpt} is corrupt or incomplete ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start over") from None
    return int(step)


def has_checkpoint(run_dir: Path) -> bool:
    recover(run_dir)
    return (Path(run_dir) / CHECKPOINT / "position.json").exists()


def write_state(run_dir: Path, state) -> None:
    """`state`: an `engine.protocol.RunState`."""
    import msgspec

    atomic_write_text(Path(run_dir) / STATE, msgspec.json.encode(state).decode() + "\n")


def read_state(run_dir: Path):
    """The folder's `engine.protocol.RunState`, or None when it has none (or a broken one)."""
    import msgspec

    from engine.protocol import RunState

    try:
        return msgspec.json.decode((Path(run_dir) / STATE).read_bytes(), type=RunState)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def last_step(run_dir: Path) -> int | None:
    """The last step recorded in the metrics file (read from its end)."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("kind") == "step":
            return int(rec.get("step", 0))
    return None


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only the metric records of steps before `step`."""
    path = run_dir / METRICS
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) < step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a kill
    atomic_write_text(path, "".join(l + "\n" for l in keep))


def read_metrics(run_dir: Path) -> list[dict]:
    """Every complete record of a run's metrics file (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise UserError(f"{run_dir} has no {METRICS}")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
