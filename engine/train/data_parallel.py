"""What makes one training step data-parallel: averaged gradients and agreed statistics.

Every rank holds the same SAE and trains on its own slice of the global batch
(`engine.train.sharded`). The gradients are all-reduced (summed over ranks, divided
by their number) before clipping and the optimiser step, as DDP's reducer does, so
the step equals a one-process step on the whole batch: the losses are means over
rows, and the mean of the ranks' means is the mean over the global batch.

Notes
- Not `DistributedDataParallel` itself: DDP needs the loss computed by the wrapped
  module's `forward`, while sae_lens's `SAETrainer.step` calls the SAE's
  `training_forward_pass`, and the sparse step writes its gradients by hand. So
  sae_lens's step gets DDP's mechanism (a hook on each parameter that all-reduces
  its gradient when backward has accumulated it), and the sparse step one flat
  all-reduce of its hand-written gradients (DDP's bucket, in one piece).
- What decides which latents are dead (and so the TopK auxiliary loss) is per
  latent firing over the whole batch: the counts ride in the gradient all-reduce,
  and the last row each latent fired on (for the tracker's "tokens since fired") is
  one MAX all-reduce.
- Batch-level terms are per rank: BatchTopK's top `k * batch` is taken within each
  rank's slice, and JumpReLU's L0 target penalty is on each slice's mean L0, so
  those two equal the one-process run in distribution, not to float tolerance
  (as in sparsify, whose batch-level choices are per rank too).
- Parameters start equal on every rank (seeded), and are broadcast from rank 0
  anyway (`broadcast_parameters`), as DDP does at construction.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from engine.distributed import Ranks


def broadcast_parameters(module: torch.nn.Module, ranks: Ranks) -> None:
    if ranks.distributed:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.Tensor], ranks: Ranks, extra: torch.Tensor | None = None):
    """Replace each gradient by its mean over the ranks, in one all-reduce; `extra`
    (float, any shape) rides along and comes back summed over the ranks."""
    grads = [p.grad for p in params]
    pieces = [g.reshape(-1) for g in grads] + ([extra.reshape(-1).to(grads[0].dtype)] if extra is not None else [])
    flat = torch.cat(pieces)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g)).div_(ranks.world)
        offset += n
    return flat[offset:].view_as(extra) if extra is not None else None


def average_on_backward(module: torch.nn.Module, ranks: Ranks) -> list:
    """DDP's hook: each parameter's gradient is averaged over the ranks as soon as
    backward has accumulated it (before sae_lens clips it). Returns the handles."""
    def hook(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(ranks.world)

    return [p.register_post_accumulate_grad_hook(hook) for p in module.parameters() if p.requires_grad]


def global_last_row(codes, ranks: Ranks) -> torch.Tensor:
    """Per latent, the last row of the global batch it fired on (-1: none); rank r's
    rows are rows `r * n ... (r+1) * n - 1` of the global batch."""
    last = codes.last_row()
    last = torch.where(last >= 0, last + ranks.rank * codes.n_rows, last)
    dist.all_reduce(last, op=dist.ReduceOp.MAX)
    return last


def global_counts(codes, ranks: Ranks) -> torch.Tensor:
    counts = codes.counts().clone()
    dist.all_reduce(counts)
    return counts


def global_min(value: float | None, ranks: Ranks) -> float | None:
    """The smallest of the ranks' values (None where a rank has none)."""
    t = torch.tensor([float("inf") if value is None else value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=ranks.cpu_group)
    v = t.item()
    return None if v == float("inf") else v
