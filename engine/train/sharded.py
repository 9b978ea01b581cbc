"""Activation batches for a data-parallel run: each rank runs the model on its own
share of every chunk, and the ranks trade rows so each trains on its slice.

The data stream is the single-process one (`ActivationSource`) with the global
batch `G`: step `s` trains on the same `G` rows. Rank `r` of `N` takes rows
`[r * G/N, (r+1) * G/N)` of it, so an N-rank run sees exactly the batches of a
one-process run with batch `G`, and resume stays a pure function of
`(data_seed, step)` whatever the number of ranks.

Notes
- A chunk's windows are cut into N contiguous blocks; rank r runs the model on
  block r only (the model pass, the costly part, is split N ways). Which rank
  needs each row is known on every rank (the chunk's permutation is seeded), so one
  `all_to_all_single` (torch.distributed) per chunk sends every row straight to the
  rank that trains on it: each rank receives `(N-1)/N` of its own rows, never the
  whole chunk.
- All hooks travel in one exchange (their activations side by side).
- The exchange runs on the prefetch thread with a process group of its own, so it
  never meets the gradient all-reduce of the main thread.
- Stopping must be agreed: before each model pass the ranks agree (a MAX
  all-reduce) on whether any of them was closed or asked to stop, so every rank
  leaves its chunk at the same place and none waits on an exchange forever.
- The input-scale sample is the global one (the first `NORM_TOKENS` rows of the
  global stream, gathered), so the scale equals the one-process run's.
- Spread runs (`hooks_of`: each rank trains its own SAEs, like sparsify's
  `distribute_modules`): the model pass is split the same way, but each rank
  receives every row of the global batch for the hooks its SAEs read, and nothing
  of the others'.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.distributed as dist

from engine.distributed import Ranks
from engine.errors import UserError
from engine.train.activations import NORM_TOKENS, ActivationSource, _Closed


class ShardedActivationSource(ActivationSource):
    """This rank's batches of a run on several ranks (see the module notes)."""

    def __init__(self, lm, windows: torch.Tensor, widths: dict[str, int], batch_size: int, data_seed: int,
                 ranks: Ranks, check: Callable[[], None] = lambda: None, prefetch: bool = True,
                 hooks_of: dict[int, list[str]] | None = None):
        """`batch_size`: the global batch (every rank's rows together); `check` raises
        `Cancelled` on a stop request of this rank (the ranks agree on it, see Notes);
        `hooks_of`: spread runs, the hooks each rank trains on (whole batches of them)."""
        if batch_size % ranks.world and hooks_of is None:
            raise UserError(f"--batch-size ({batch_size}) must divide evenly over {ranks.world} ranks")
        self.ranks, self.hooks_of = ranks, hooks_of
        self.group = ranks.new_group()  # the exchange's own group (see Notes)
        self._stop_check = check
        super().__init__(lm, windows, widths, batch_size, data_seed, check=check, prefetch=prefetch)
        self.local_batch = batch_size if hooks_of else batch_size // ranks.world
        self.widths = [widths[h] for h in self.hooks]
        all_hooks = {q: self.hooks for q in range(ranks.world)}
        # per rank: the hooks it receives, and where their columns sit among all hooks'
        self.received = {q: sorted(h) for q, h in (hooks_of or all_hooks).items()}
        starts = dict(zip(self.hooks, torch.tensor([0] + self.widths).cumsum(0).tolist()))
        self.columns = {q: torch.cat([torch.arange(starts[h], starts[h] + widths[h]) for h in hooks])
                        for q, hooks in self.received.items()}

    # ---- agreeing to stop ------------------------------------------------------------
    def _agreed_check(self) -> None:
        """Raise on every rank at once when any rank was closed or asked to stop."""
        from engine.jobs import Cancelled

        closed = 1 if self._closed else 0
        try:
            self._stop_check()
            stop = 0
        except Cancelled:
            stop = 1
        flags = torch.tensor([closed, stop], dtype=torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        if flags[0]:
            raise _Closed()
        if flags[1]:
            raise Cancelled()

    # ---- one chunk: my block of windows, then the exchange ---------------------------
    @torch.no_grad()
    def _compute(self, index: int, check: Callable[[], None]) -> dict[str, torch.Tensor]:
        r, n = self.ranks.rank, self.ranks.world
        start, count = self.first_window(index), self._windows_for(self.batches_in(index))
        bounds = [count * q // n for q in range(n + 1)]  # block q: windows [bounds[q], bounds[q+1])
        ids = self.order[torch.arange(start + bounds[r], start + bounds[r + 1]) % len(self.order)]
        # every rank makes the same number of model passes (the agreed checks are collectives)
        passes = math.ceil(max(b - a for a, b in zip(bounds, bounds[1:])) / self.forward_batch)
        local = self._run_model(self.windows[ids], passes)  # [my windows * per_window, sum(widths)]

        # every rank computes the same permutation, and from it who needs which row
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        perm = torch.randperm(count * self.per_window, generator=gen)
        G, B, batches = self.batch_size, self.local_batch, self.batches_in(index)
        starts = (torch.arange(batches) * G).unsqueeze(1)
        row_bounds = torch.tensor(bounds) * self.per_window
        send, send_sizes, mine = [], [], None
        for q in range(n):
            # rank q's rows, in its order: its slice of each batch, or (spread) whole batches
            rows = starts + (torch.arange(G) if self.hooks_of else q * B + torch.arange(B))
            need = perm[rows.flatten()]
            owner = torch.bucketize(need, row_bounds[1:], right=True)
            if q == r:
                mine = (need, owner)
            picked = need[owner == r] - row_bounds[r]
            send.append(local[picked][:, self.columns[q]].reshape(-1))
            send_sizes.append(send[-1].numel())
        need, owner = mine
        width = len(self.columns[r])
        recv_sizes = [int((owner == q).sum()) * width for q in range(n)]
        received = local.new_empty(sum(recv_sizes))
        self._agreed_check()
        dist.all_to_all_single(received, torch.cat(send), recv_sizes, send_sizes, group=self.group)
        received = received.view(-1, width)
        out = local.new_empty(len(need), width)
        offset = 0
        for q in range(n):  # rows from rank q come in the order rank q found them in `need`
            where = (owner == q).nonzero().squeeze(1)
            out[where] = received[offset:offset + len(where)]
            offset += len(where)
        return self._by_hook(out, r)

    def _by_hook(self, rows: torch.Tensor, q: int) -> dict[str, torch.Tensor]:
        """Rows of rank `q`'s received columns, split into its hooks."""
        hooks = self.received[q]
        return dict(zip(hooks, rows.split([self.widths[self.hooks.index(h)] for h in hooks], dim=1)))

    def _run_model(self, tokens: torch.Tensor, passes: int) -> torch.Tensor:
        """The hooks' activations of these windows (BOS left out), side by side, in
        `passes` model passes (some of them empty on a rank with fewer windows)."""
        device = next(self.lm.model.parameters()).device
        parts = [torch.empty(0, sum(self.widths))]
        for p in range(passes):
            self._agreed_check()
            part = tokens[p * self.forward_batch:(p + 1) * self.forward_batch]
            if not len(part):
                continue
            _, cache = self.lm.run_with_cache(part.to(device), names_filter=self.hooks,
                                              stop_at_layer=self.stop_at_layer)
            cols = []
            for h in self.hooks:
                a = cache[h][:, 1:]  # hook_z [b, t, heads, d_head]: heads flattened, as sae_lens does
                cols.append(a.reshape(a.shape[0] * a.shape[1], -1).float().cpu())
            parts.append(torch.cat(cols, dim=1))
        return torch.cat(parts)

    # ---- batches and the scale sample --------------------------------------------------
    def chunk(self, index: int) -> dict[str, torch.Tensor]:
        # the wait for a prefetched chunk checks nothing locally: the thread's agreed checks do
        check, self.check = self.check, lambda: None
        try:
            return super().chunk(index)
        finally:
            self.check = check

    def norm_sample(self) -> dict[str, torch.Tensor]:
        """The one-process run's sample: the first global batches, every rank's slice gathered."""
        parts = []
        mine = self.received[self.ranks.rank]
        for step in range(max(1, math.ceil(NORM_TOKENS / self.batch_size))):
            index, offset = self.locate(step)
            if index not in self._cache:
                self._cache[index] = self._compute(index, self.check)
            i = offset * self.local_batch
            rows = torch.cat([self._cache[index][h][i:i + self.local_batch] for h in mine], dim=1)
            if self.hooks_of:  # whole batches here already
                parts.append(rows)
                continue
            everyone = [torch.empty_like(rows) for _ in range(self.ranks.world)]
            dist.all_gather(everyone, rows.contiguous(), group=self.group)
            parts.append(torch.cat(everyone))
        return self._by_hook(torch.cat(parts), self.ranks.rank)

    def close(self) -> None:
        """As `ActivationSource.close`, but waits for the prefetch thread: it leaves at
        the ranks' next agreed check, and the process group must outlive it."""
        super().close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
