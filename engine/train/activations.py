"""Shuffled activation batches from a model's hooks, as a pure function of the step.

Notes
- Data is cut into chunks: chunk `c` is a fixed set of corpus windows (from a
  seeded permutation), run through the model once for all requested hooks, with
  the activations shuffled by a generator seeded from `(data_seed, c)`. Batch `s`
  is a fixed slice of a fixed chunk (`locate`). So a resumed run recomputes exactly
  the batches an uninterrupted one would have seen, with no buffer to save in
  checkpoints.
- A full chunk holds up to `SHUFFLE_BATCHES` batches from many random windows, so
  consecutive batches are well mixed across documents; fewer when the chunk's
  activations (all hooks) would pass `CHUNK_BYTES`, so memory does not grow with
  the model's width or the number of hooks. The first chunks are small (1, 2, 4 ...
  batches, doubling up to a full chunk), so training starts after one batch's
  model pass, and a short run never computes activations it does not use.
- While a chunk trains, the next one is computed on a thread (`prefetch`), so the
  model pass and the SAE steps overlap; waiting for it checks for cancellation.
- The model runs on `forward_tokens(device)` tokens at a time, however long the
  windows: fewer on the CPU, where passes whose intermediates stay small (in cache,
  and under glibc's 32 MiB threshold above which every allocation is a fresh mapping
  whose pages fault in) ran about 20% faster here at 2,048 tokens than at 8,192.
- The BOS position is left out: its activation is an outlier SAEs should not fit.
- The forward pass stops after the last block needed (`stop_at_layer`).
- Chunks stay on the CPU (they can be large); each batch moves to the SAE's device.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch

SHUFFLE_BATCHES = 32
NORM_TOKENS = 16384  # activations the input scale is estimated from (the first batches)
CHUNK_BYTES = 1 << 30
FORWARD_TOKENS = 8192
FORWARD_TOKENS_CPU = 2048  # see the notes


def forward_tokens(device: str | torch.device) -> int:
    """Tokens per model pass on `device`."""
    return FORWARD_TOKENS_CPU if torch.device(device).type == "cpu" else FORWARD_TOKENS


class ActivationSource:
    def __init__(self, lm, windows: torch.Tensor, widths: dict[str, int], batch_size: int, data_seed: int,
                 check: Callable[[], None] = lambda: None, prefetch: bool = True):
        """`widths`: the activation width of each hook to read. `check` raises to cancel
        (it is called between model passes and while waiting for a prefetched chunk)."""
        self.lm, self.hooks, self.batch_size, self.seed = lm, sorted(widths), batch_size, data_seed
        self.local_batch = batch_size  # the rows of a batch this process trains on (a rank: its slice)
        self.windows, self.check = windows, check
        self.per_window = windows.shape[1] - 1
        bytes_per_batch = batch_size * sum(widths.values()) * 4
        self.full = max(1, min(SHUFFLE_BATCHES, CHUNK_BYTES // bytes_per_batch))  # batches in a full chunk
        # chunk sizes in batches, while they grow: 1, 2, 4 ... (then `full` each)
        self.growing = [min(1 << i, self.full) for i in range(self.full.bit_length()) if (1 << i) < self.full]
        self.order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(data_seed))
        self.forward_batch = max(1, forward_tokens(lm.device) // windows.shape[1])
        layers = [re.match(r"blocks\.(\d+)\.", h) for h in self.hooks]
        self.stop_at_layer = max(int(m.group(1)) for m in layers) + 1 if all(layers) else None
        self._cache: dict[int, dict] = {}  # the current chunk, and any computed ahead of it
        self._next: tuple[int, Future] | None = None
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="activations") if prefetch else None

    # ---- which windows and batches each chunk holds ----------------------------------
    def batches_in(self, index: int) -> int:
        return self.growing[index] if index < len(self.growing) else self.full

    def _windows_for(self, batches: int) -> int:
        return math.ceil(batches * self.batch_size / self.per_window)

    def first_window(self, index: int) -> int:
        """Where chunk `index` starts in the shuffled window order."""
        grown = min(index, len(self.growing))
        start = sum(self._windows_for(b) for b in self.growing[:grown])
        return start + (index - grown) * self._windows_for(self.full)

    def locate(self, step: int) -> tuple[int, int]:
        """(chunk, batch within it) of batch `step`."""
        for index, size in enumerate(self.growing):
            if step < size:
                return index, step
            step -= size
        return len(self.growing) + step // self.full, step % self.full

    # ---- computing chunks ------------------------------------------------------------
    @torch.no_grad()
    def _compute(self, index: int, check: Callable[[], None]) -> dict[str, torch.Tensor]:
        start, count = self.first_window(index), self._windows_for(self.batches_in(index))
        ids = self.order[torch.arange(start, start + count) % len(self.order)]
        tokens = self.windows[ids]
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        device = next(self.lm.model.parameters()).device
        for i in range(0, len(tokens), self.forward_batch):
            check()
            _, cache = self.lm.run_with_cache(tokens[i:i + self.forward_batch].to(device),
                                              names_filter=self.hooks, stop_at_layer=self.stop_at_layer)
            for h in self.hooks:
                a = cache[h][:, 1:]  # hook_z [b, t, heads, d_head]: heads flattened, as sae_lens does
                parts[h].append(a.reshape(a.shape[0] * a.shape[1], -1).float().cpu())
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        perm = None
        out = {}
        for h in self.hooks:
            acts = torch.cat(parts[h])
            perm = torch.randperm(len(acts), generator=gen) if perm is None else perm
            out[h] = acts[perm]
        return out

    def chunk(self, index: int) -> dict[str, torch.Tensor]:
        """All activations of chunk `index`, shuffled, keyed by hook."""
        if index in self._cache:
            return self._cache[index]
        if self._next is not None and self._next[0] == index:
            future = self._next[1]
            self._next = None
            while True:
                try:
                    out = future.result(timeout=0.2)
                    break
                except TimeoutError:
                    self.check()
        else:
            out = self._compute(index, self.check)
        self._cache = {i: c for i, c in self._cache.items() if i > index}
        self._cache[index] = out
        return out

    def prefetch(self, index: int) -> None:
        """Start computing chunk `index` on the thread, if it is not there already."""
        if self._pool is None or index in self._cache or (self._next and self._next[0] == index):
            return
        self._next = (index, self._pool.submit(self._compute, index, self._stop_if_closed))

    def settle(self) -> None:
        """Wait for the chunk being prefetched and keep it: the model is then free for
        other passes (an evaluation's hooks must not meet the prefetch's)."""
        if self._next is not None:
            index, future = self._next
            self._next = None
            self._cache[index] = future.result()

    def _stop_if_closed(self) -> None:
        if self._closed:
            raise _Closed()

    def batch(self, step: int, device: str | torch.device = "cpu", last: int | None = None) -> dict[str, torch.Tensor]:
        """Batch `step`; the next chunk is prefetched when a step up to `last` needs it."""
        index, offset = self.locate(step)
        chunk = self.chunk(index)
        if last is None or self.locate(last)[0] > index:
            self.prefetch(index + 1)
        i = offset * self.local_batch
        return {h: a[i:i + self.local_batch].to(device, non_blocking=True) for h, a in chunk.items()}

    def norm_sample(self) -> dict[str, torch.Tensor]:
        """Activations for estimating the input scale: the first batches (`NORM_TOKENS`).
        Their chunks stay cached for the first steps."""
        parts = []
        for step in range(max(1, math.ceil(NORM_TOKENS / self.batch_size))):
            index, offset = self.locate(step)
            if index not in self._cache:
                self._cache[index] = self._compute(index, self.check)
            i = offset * self.batch_size
            parts.append({h: a[i:i + self.batch_size] for h, a in self._cache[index].items()})
        return {h: torch.cat([p[h] for p in parts]) for h in self.hooks}

    def close(self) -> None:
        """Stop the prefetch thread (at its next model pass) and drop the chunks."""
        self._closed = True
        self._cache = {}
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _Closed(Exception):
    """The source was closed while a chunk was being prefetched."""
