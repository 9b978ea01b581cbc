"""Shuffled activation batches from a model's hooks, as a pure function of the step.

Notes
- Data is cut into chunks: chunk `c` is a fixed set of corpus windows (from a
  seeded permutation), run through the model once for all requested hooks, with
  the activations shuffled by a generator seeded from `(data_seed, c)`. Batch
  `s` is slice `s % per_chunk` of chunk `s // per_chunk`. So a resumed run
  recomputes exactly the batches an uninterrupted one would have seen, with no
  buffer to save in checkpoints.
- A chunk holds `SHUFFLE_BATCHES` batches from about a thousand random windows,
  so consecutive batches are well mixed across documents.
- The BOS position is left out: its activation is an outlier SAEs should not fit.
- The forward pass stops after the last block needed (`stop_at_layer`).
"""

from __future__ import annotations

import math
import re

import torch

SHUFFLE_BATCHES = 32


class ActivationSource:
    def __init__(self, lm, windows: torch.Tensor, hooks: list[str], batch_size: int, data_seed: int,
                 forward_batch: int = 64):
        self.lm, self.hooks, self.batch_size, self.seed = lm, list(hooks), batch_size, data_seed
        self.windows = windows
        self.per_window = windows.shape[1] - 1
        self.windows_per_chunk = math.ceil(batch_size * SHUFFLE_BATCHES / self.per_window)
        self.per_chunk = self.windows_per_chunk * self.per_window // batch_size
        self.order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(data_seed))
        self.forward_batch = forward_batch
        layers = [re.match(r"blocks\.(\d+)\.", h) for h in hooks]
        self.stop_at_layer = max(int(m.group(1)) for m in layers) + 1 if all(layers) else None
        self._cache: tuple[int, dict] | None = None

    @torch.no_grad()
    def chunk(self, index: int) -> dict[str, torch.Tensor]:
        """All activations of chunk `index`, shuffled, keyed by hook."""
        if self._cache and self._cache[0] == index:
            return self._cache[1]
        start = index * self.windows_per_chunk
        ids = self.order[torch.arange(start, start + self.windows_per_chunk) % len(self.order)]
        tokens = self.windows[ids]
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        device = next(self.lm.model.parameters()).device
        for i in range(0, len(tokens), self.forward_batch):
            _, cache = self.lm.run_with_cache(tokens[i:i + self.forward_batch].to(device),
                                                    names_filter=self.hooks,
                                                    stop_at_layer=self.stop_at_layer)
            for h in self.hooks:
                a = cache[h][:, 1:]
                parts[h].append(a.reshape(-1, a.shape[-1]).float().cpu())
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        perm = None
        out = {}
        for h in self.hooks:
            acts = torch.cat(parts[h])
            perm = torch.randperm(len(acts), generator=gen) if perm is None else perm
            out[h] = acts[perm]
        self._cache = (index, out)
        return out

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        chunk = self.chunk(step // self.per_chunk)
        i = (step % self.per_chunk) * self.batch_size
        return {h: a[i:i + self.batch_size] for h, a in chunk.items()}

    def norm_sample(self, n_batches: int = 8) -> dict[str, torch.Tensor]:
        """Activations for estimating the input scale (the first batches of chunk 0)."""
        chunk = self.chunk(0)
        return {h: a[: n_batches * self.batch_size] for h, a in chunk.items()}
