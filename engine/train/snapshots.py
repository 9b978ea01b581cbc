"""Decoder snapshots taken during training: the raw material of feature emergence.

A run folder's `snapshots/` holds one small file per snapshot, `step-<done>.safetensors`,
where `done` is the number of training steps behind it (0: the initial decoder). Each
holds the decoder's unit-norm rows in float16 (`W_dec`, [d_sae, d_in]: cosines need
directions only, and half precision keeps them to about 1e-3) and the step each feature
first fired at (`first_fired`, -1: not yet).

Notes
- Snapshots are taken after `done` steps for `done` in `snapshot_steps(cfg)`: every
  `snapshot_every` steps (0: about `SNAPSHOTS_PER_RUN` per run, -1: none), plus
  the first and the last. A resumed run writes the same files again, byte for byte.
- Files are written atomically (a temporary file renamed into place), so a kill
  leaves whole snapshots only, and perhaps a temporary file, which a resume removes
  (`remove_leftovers`).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.protocol import SNAPSHOTS_PER_RUN

SNAPSHOTS = "snapshots"
_NAME = re.compile(r"step-(\d+)\.safetensors$")


def snapshot_every(cfg) -> int:
    """Steps between snapshots of this run (0: none)."""
    if cfg.snapshot_every < 0:
        return 0
    return cfg.snapshot_every or max(1, cfg.steps // SNAPSHOTS_PER_RUN)


def is_snapshot_step(cfg, done: int) -> bool:
    """Whether a snapshot is due after `done` steps."""
    every = snapshot_every(cfg)
    return bool(every) and (done % every == 0 or done == cfg.steps)


def save_snapshot(run_dir: Path, done: int, W_dec: torch.Tensor, first_fired: torch.Tensor) -> Path:
    folder = Path(run_dir) / SNAPSHOTS
    folder.mkdir(exist_ok=True)
    unit = W_dec.detach().float()
    unit = (unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)).half().cpu().contiguous()
    path = folder / f"step-{done:08d}.safetensors"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".snapshot.")
    os.close(fd)
    try:
        save_file({"W_dec": unit, "first_fired": first_fired.cpu().contiguous()}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_leftovers(run_dir: Path) -> None:
    """Temporary files a kill left in the middle of a snapshot's write."""
    folder = Path(run_dir) / SNAPSHOTS
    if folder.is_dir():
        for p in folder.glob(".snapshot.*"):
            p.unlink(missing_ok=True)


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(steps done, file) of every snapshot of a run, in order."""
    folder = Path(run_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def load_snapshot(path: Path) -> dict[str, torch.Tensor]:
    """`W_dec` (float32, unit rows) and `first_fired` of one snapshot."""
    data = load_file(str(path))
    return {"W_dec": data["W_dec"].float(), "first_fired": data["first_fired"]}
