"""Shuffled activation batches from a model's hooks, as a pure function of the step.

Notes
- Data is cut into chunks: chunk `c` is a fixed set of corpus windows (from a
  seeded permutation), run through the model once for all requested hooks, with
  the activations shuffled by a generator seeded from `(data_seed, c)`. Batch
  `s` is slice `s % per_chunk` of chunk `s // per_chunk`. So a resumed run
  recomputes exactly the batches an uninterrupted one would have seen, with no
  buffer to save in checkpoints.
- A chunk holds up to `SHUFFLE_BATCHES` batches from many random windows, so
  consecutive batches are well mixed across documents; fewer when the chunk's
  activations (all hooks) would pass `CHUNK_BYTES`, so memory does not grow with
  the model's width or the number of hooks.
- The model runs on `FORWARD_TOKENS` tokens at a time, however long the windows.
- The BOS position is left out: its activation is an outlier SAEs should not fit.
- The forward pass stops after the last block needed (`stop_at_layer`).
- Chunks stay on the CPU (they can be large); each batch moves to the SAE's device.
"""

from __future__ import annotations

import math
import re

import torch

SHUFFLE_BATCHES = 32
CHUNK_BYTES = 1 << 30
FORWARD_TOKENS = 8192


class ActivationSource:
    def __init__(self, lm, windows: torch.Tensor, widths: dict[str, int], batch_size: int, data_seed: int):
        """`widths`: the activation width of each hook to read."""
        self.lm, self.hooks, self.batch_size, self.seed = lm, sorted(widths), batch_size, data_seed
        self.windows = windows
        self.per_window = windows.shape[1] - 1
        bytes_per_batch = batch_size * sum(widths.values()) * 4
        shuffle_batches = max(1, min(SHUFFLE_BATCHES, CHUNK_BYTES // bytes_per_batch))
        self.windows_per_chunk = math.ceil(batch_size * shuffle_batches / self.per_window)
        self.per_chunk = self.windows_per_chunk * self.per_window // batch_size
        self.order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(data_seed))
        self.forward_batch = max(1, FORWARD_TOKENS // windows.shape[1])
        layers = [re.match(r"blocks\.(\d+)\.", h) for h in self.hooks]
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
                a = cache[h][:, 1:]  # hook_z [b, t, heads, d_head]: heads flattened, as sae_lens does
                parts[h].append(a.reshape(a.shape[0] * a.shape[1], -1).float().cpu())
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        perm = None
        out = {}
        for h in self.hooks:
            acts = torch.cat(parts[h])
            perm = torch.randperm(len(acts), generator=gen) if perm is None else perm
            out[h] = acts[perm]
        self._cache = (index, out)
        return out

    def batch(self, step: int, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        chunk = self.chunk(step // self.per_chunk)
        i = (step % self.per_chunk) * self.batch_size
        return {h: a[i:i + self.batch_size].to(device, non_blocking=True) for h, a in chunk.items()}

    def norm_sample(self, n_batches: int = 8) -> dict[str, torch.Tensor]:
        """Activations for estimating the input scale (the first batches of chunk 0)."""
        chunk = self.chunk(0)
        return {h: a[: n_batches * self.batch_size] for h, a in chunk.items()}
