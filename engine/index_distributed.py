"""The feature index built by several ranks of a `torch.distributed` run (torchrun):
each rank indexes a share of the windows, rank 0 merges the shares into the index a
single process would have built over the same tokens.

`saescope index SAE --distributed N` starts this on N ranks of this machine
(`relaunch`); `torchrun --nproc-per-node N -m engine index SAE ...` does the same on
any launcher's hosts.

Notes
- Shares are contiguous runs of whole batches (`rank_share`): a rank's windows go
  through the model in exactly the batches a single pass would use, and keep their
  global ids, which the lists store.
- The merge is exact: the top and sample lists select by keys unique per (window,
  feature) that do not depend on the batch or the rank (engine/index.py's
  `top_keys`, `sample_keys`), so the best k of the ranks' best k are the single
  pass's best k, in the same order; counts, histograms and co-occurrence counts add
  as integers, maxima by max. Only float sums (`act_sum`, `act_sq_sum`, products)
  differ, by rounding: they are added in another order.
- The partial states (a rank's lists with their contexts, its sums, its finished
  co-occurrence table) go to rank 0 with one `gather_object`, on the CPU: so the
  collective is gloo's whatever device the ranks compute on. Rank 0 holds every
  rank's state at once (for 1024 features and k = 20: about 5 MB a rank, plus the
  co-occurring pairs).
- The weight tables (logit effects, neighbours) come from the weights alone: rank 0
  computes them once, after the merge. Only rank 0 saves the index.
- On CUDA each rank runs on its local rank's GPU, several to a GPU when there are
  more ranks than GPUs (`engine.distributed.rank_device`).
"""

from __future__ import annotations

import subprocess

import torch

from engine.index import FeatureIndex, default_batch, finish_index, index_pass, merge_partials
from engine.jobs import Job, as_job


def rank_share(n_windows: int, batch: int, rank: int, world: int) -> tuple[int, int]:
    """Rank `rank`'s windows `[lo, hi)` of `n_windows`: a contiguous run of whole
    batches, the batches shared as evenly as they go (a rank may get none)."""
    n_batches = -(-n_windows // batch)
    lo, hi = n_batches * rank // world, n_batches * (rank + 1) // world
    return min(lo * batch, n_windows), min(hi * batch, n_windows)


@torch.no_grad()
def build_index_distributed(lm, sae, hook: str, windows: torch.Tensor, identity: dict, ranks,
                            k: int = 20, samples: int = 20, batch: int | None = None, seed: int = 0,
                            job: Job | None = None) -> FeatureIndex | None:
    """This rank's share of the pass, merged on rank 0: the `FeatureIndex` of all of
    `windows` on rank 0, None on the others. Every rank must call it with the same
    windows and options (`ranks`: engine.distributed's `Ranks`)."""
    import torch.distributed as dist

    from engine.errors import UserError

    job = as_job(job)
    if len(windows) == 0:
        raise UserError("the corpus is empty: nothing to index")
    batch = batch or default_batch(windows.shape[1])
    share = rank_share(len(windows), batch, ranks.rank, ranks.world)
    tokens = windows.shape[1] - 1
    message = (f"indexing {len(windows) * tokens:,} tokens on {ranks.world} ranks "
               f"(rank {ranks.rank}: {(share[1] - share[0]) * tokens:,})")
    part = index_pass(lm, sae, hook, windows, k=k, samples=samples, batch=batch, seed=seed, job=job,
                      share=share, message=message)
    parts = [None] * ranks.world if ranks.is_main else None
    job.progress(1.0, "merging the ranks' shares")
    dist.gather_object(part, parts, dst=0, group=ranks.cpu_group)  # gloo: CPU objects, whatever the backend
    if not ranks.is_main:
        return None
    return finish_index(merge_partials(parts), lm, sae, hook, windows, identity, job)


def relaunch(n: int, argv: list[str]) -> int:
    """Run `python -m engine <argv>` on `n` ranks of this machine under torchrun and
    return its exit code (`argv` without `--distributed`), in the ranks' environment
    (`engine.train.launch.rank_env`)."""
    from engine.distributed import torchrun_command
    from engine.train.launch import rank_env

    return subprocess.run(torchrun_command(n, ["engine", *argv]), env=rank_env(n)).returncode
