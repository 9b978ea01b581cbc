"""Ranks of a `torch.distributed` run: who this process is, and how a run is launched.

saescope scales out on PyTorch's own distributed engine, not on anything home-made:
a distributed command is the same `python -m engine ...` command run under
`torchrun` (`torch.distributed.run`), one process per rank, which reads the
rendezvous from the environment torchrun sets (`RANK`, `WORLD_SIZE`,
`MASTER_ADDR`, ...). `--distributed N` on the CLI is a convenience that starts
exactly that (`torchrun_command`) on this machine.

Notes
- The backend is NCCL on CUDA with a GPU per rank, else gloo (every machine has
  it; it also reduces CUDA tensors, so two ranks may share one GPU). Collectives on
  CPU tensors (stop flags, activation rows) go through a gloo group in any case.
- `ranks()` is the process's `Ranks`: `world == 1` and no process group when not
  under torchrun, so single-process code paths need no special case.
- Only rank 0 writes files and prints; every rank computes.
- Collectives from two threads on one process group may interleave differently on
  each rank and deadlock; a thread of its own (the activation prefetch) uses its
  own group (`Ranks.new_group`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from engine.errors import UserError
from engine.protocol import TRAIN_MAX_RANKS as MAX_RANKS  # defined once, for the app too


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: object = None  # the default process group (None: not distributed)
    cpu_group: object = None  # a gloo group over every rank, for CPU tensors

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def new_group(self):
        """Another gloo group over every rank (CPU tensors), for collectives issued from
        another thread."""
        import torch.distributed as dist

        return dist.new_group(backend="gloo")

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer): how one
        rank's stop request becomes every rank's, at the same step."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return bool(t.item())


_RANKS: Ranks | None = None


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def ranks(device: str | None = None) -> Ranks:
    """This process's ranks, the process group set up at the first call under torchrun."""
    global _RANKS
    if _RANKS is not None:
        return _RANKS
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        _RANKS = Ranks()
        return _RANKS
    import torch
    import torch.distributed as dist

    on_gpus = resolve_device(device).startswith("cuda") and \
        torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    backend = "nccl" if on_gpus else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    _RANKS = Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.group.WORLD,
                   cpu_group)
    return _RANKS


def resolve_device(device: str | None) -> str:
    """`auto` (or nothing) as the device it means here: CUDA when present."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def rank_device(device: str | None, r: Ranks) -> str | None:
    """Each rank on its own GPU (`cuda:<local rank>`, wrapping around when there are
    more ranks than GPUs) when the device is CUDA (`auto` resolved first)."""
    device = resolve_device(device)
    if r.distributed and device.startswith("cuda") and ":" not in device:
        import torch

        return f"cuda:{r.local_rank % max(1, torch.cuda.device_count())}"
    return device


def shutdown() -> None:
    global _RANKS
    if _RANKS is not None and _RANKS.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _RANKS = None


def check_world(n: int) -> None:
    if not 1 <= n <= MAX_RANKS:
        raise UserError(f"--distributed must be between 1 and {MAX_RANKS} ranks, got {n}")


def torchrun_command(n: int, module_args: list[str]) -> list[str]:
    """The command that runs `python -m <module_args...>` on `n` ranks on this machine
    (torchrun's standalone rendezvous: a free port, no other host)."""
    check_world(n)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
            "-m", *module_args]


def strip_option(argv: list[str], name: str) -> list[str]:
    """`argv` without `name VALUE` / `name=VALUE` (how `--distributed N` re-runs the
    same command under torchrun without it)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == name:
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return out
