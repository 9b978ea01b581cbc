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
- `kill -9` at any moment leaves either the previous checkpoint or the new one.
- On resume, metric lines past the checkpoint's step are dropped (they will be
  recomputed, identically), so the file never holds a step twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.atomic import atomic_dir, atomic_write_text
from engine.errors import UserError

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"


def save_checkpoint(run_dir: Path, step: int, sae, trainer, tracker) -> None:
    with atomic_dir(run_dir / CHECKPOINT) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}, str(tmp / "sae.safetensors"))
        trainer.save_trainer_state(tmp)
        save_file(tracker.state_dict(), str(tmp / "tracker.safetensors"))
        torch.save({"torch_rng": torch.get_rng_state()}, tmp / "rng.pt")
        (tmp / "position.json").write_text(json.dumps({"step": step}))


def load_checkpoint(run_dir: Path, sae, trainer, tracker) -> int:
    """Restore everything from `run_dir/checkpoint`; returns the step to continue from."""
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
    return (run_dir / CHECKPOINT / "position.json").exists()


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
