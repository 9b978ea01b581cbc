"""The feature index: one streaming pass of model + SAE over a corpus, all features at once.

For every feature it keeps: the top-k windows by the feature's maximum activation
in the window (with the position of that maximum), a uniform random sample of
the other windows where it fires (so the user sees typical activations, not just
the extremes), a histogram of its non-zero activations, its firing density, mean
and max. Memory is O(d_sae * k), whatever the corpus size.

Notes
- Top examples are per window: a window enters a feature's list once, at its
  maximum, so one long repetitive context cannot fill the whole list.
- The random sample is a bottom-k sketch: every (window, feature) pair where the
  feature fires gets a random key, and the k smallest keys are kept. That is a
  uniform sample without replacement over the firing windows, merged batch by
  batch with the same tensor ops as the top-k.
- Histograms use fixed log10 bins from 1e-3 to 1e3, so batches merge by addition.
- The index is saved beside the SAE under `index/`, named by the corpus and keyed
  by a hash of the SAE's files and the corpus's identity; a stale index is rebuilt,
  never shown.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.atomic import atomic_write_text
from engine.errors import UserError
from engine.jobs import Job, as_job

HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_BINS = -3.0, 3.0, 48
INDEX_VERSION = 1


@dataclass
class FeatureIndex:
    meta: dict
    top_values: torch.Tensor  # [S, k] max activation in the window, descending
    top_windows: torch.Tensor  # [S, k] window index, -1 where fewer than k windows fired
    top_positions: torch.Tensor  # [S, k] position of that maximum in the window
    sample_values: torch.Tensor  # [S, q] a uniform sample of other firing windows
    sample_windows: torch.Tensor
    sample_positions: torch.Tensor
    hist: torch.Tensor  # [S, HIST_BINS] counts of non-zero activations per log10 bin
    fire_count: torch.Tensor  # [S] tokens where the feature fired
    act_sum: torch.Tensor  # [S] sum of activations (for the mean over firing tokens)
    max_act: torch.Tensor  # [S]

    @property
    def density(self) -> torch.Tensor:
        return self.fire_count.double() / self.meta["tokens"]

    @property
    def mean_act(self) -> torch.Tensor:
        return self.act_sum.double() / self.fire_count.clamp_min(1).double()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}


def hist_edges() -> list[float]:
    return torch.logspace(HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_BINS + 1).tolist()


def sae_identity(sae_dir: Path) -> str:
    h = hashlib.sha1()
    for name in ("cfg.json", "sae_weights.safetensors"):
        h.update((Path(sae_dir) / name).read_bytes())
    return h.hexdigest()


def index_paths(sae_dir: Path, corpus_name: str) -> tuple[Path, Path]:
    folder = Path(sae_dir) / "index"
    return folder / f"{corpus_name}.safetensors", folder / f"{corpus_name}.json"


BATCH_TOKENS = 4096  # [BATCH_TOKENS, d_sae] activations at a time


class _Merger:
    """Keeps the k largest `(key, value, window, position)` per feature, merging batches."""

    def __init__(self, d_sae: int, k: int, largest: bool, device):
        fill = -torch.inf if largest else torch.inf
        self.largest = largest
        self.keys = torch.full((d_sae, k), fill, device=device)
        self.values = torch.zeros(d_sae, k, device=device)
        self.windows = torch.full((d_sae, k), -1, dtype=torch.long, device=device)
        self.positions = torch.zeros(d_sae, k, dtype=torch.long, device=device)

    def merge(self, keys, values, windows, positions) -> None:
        """All arguments [S, n] for the new candidates."""
        k = self.keys.shape[1]
        all_keys = torch.cat([self.keys, keys], 1)
        sel = all_keys.topk(k, dim=1, largest=self.largest).indices
        self.keys = all_keys.gather(1, sel)
        self.values = torch.cat([self.values, values], 1).gather(1, sel)
        self.windows = torch.cat([self.windows, windows], 1).gather(1, sel)
        self.positions = torch.cat([self.positions, positions], 1).gather(1, sel)

    def finish(self):
        empty = ~torch.isfinite(self.keys)
        self.windows[empty], self.values[empty] = -1, 0.0
        return self.values.cpu(), self.windows.cpu(), self.positions.cpu()


@torch.no_grad()
def build_index(lm, sae, hook: str, windows: torch.Tensor, identity: dict, k: int = 20, samples: int = 20,
                batch: int | None = None, seed: int = 0, job: Job | None = None,
                progress: Callable[[float], None] | None = None,
                check: Callable[[], None] | None = None) -> FeatureIndex:
    """One pass over `windows` ([N, n_ctx], BOS first; the BOS position is skipped).

    Accumulators live on the model's device; `batch` windows (default: about
    `BATCH_TOKENS` tokens, so memory does not grow with the window) go through the
    model at a time. `job` is checked before every block of every batch and gets
    progress after every batch (`progress`/`check`: the older callables, folded in)."""
    from engine.saes import encoder_input

    job = as_job(job, check=check, progress=progress)

    if len(windows) == 0:
        raise UserError("the corpus is empty: nothing to index")
    batch = batch or max(1, BATCH_TOKENS // windows.shape[1])
    d_sae, dev = sae.cfg.d_sae, lm.device
    top, sample = _Merger(d_sae, k, largest=True, device=dev), _Merger(d_sae, samples, largest=False, device=dev)
    hist = torch.zeros(d_sae * HIST_BINS, dtype=torch.long, device=dev)
    fire_count = torch.zeros(d_sae, dtype=torch.long, device=dev)
    act_sum = torch.zeros(d_sae, dtype=torch.float64, device=dev)
    max_act = torch.zeros(d_sae, device=dev)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same sample on every device
    stop = _stop_layer(hook)
    n_tokens = int(len(windows) * (windows.shape[1] - 1))
    message = f"indexing {n_tokens:,} tokens"
    job.progress(0.0, message, step=0, total=len(windows))
    for start in range(0, len(windows), batch):
        job.check()
        tokens = windows[start:start + batch].to(dev)
        _, cache = lm.run_with_cache(tokens, names_filter=[hook], stop_at_layer=stop, job=job)
        x = cache[hook][:, 1:].float()
        b, t = x.shape[:2]
        acts = sae.encode(encoder_input(sae, x.reshape(b * t, *x.shape[2:]))).reshape(b, t, d_sae)  # [b, t, S]
        job.check()  # the merges below take as long as the pass itself
        win_max, win_pos = acts.max(1)  # [b, S]
        win_ids = torch.arange(start, start + b, device=dev).unsqueeze(1).expand(b, d_sae)
        fired = win_max > 0
        top.merge(torch.where(fired, win_max, -torch.inf).T, win_max.T, win_ids.T, (win_pos + 1).T)
        keys = torch.where(fired, torch.rand(b, d_sae, generator=gen).to(dev), torch.inf)
        sample.merge(keys.T, win_max.T, win_ids.T, (win_pos + 1).T)
        flat = acts.reshape(b * t, d_sae)
        nz = flat > 0
        fire_count += nz.sum(0)
        act_sum += flat.double().sum(0)
        max_act = torch.maximum(max_act, flat.max(0).values)
        rows, feats = nz.nonzero(as_tuple=True)
        vals = flat[rows, feats]
        bins = ((vals.log10() - HIST_LOG10_MIN) / (HIST_LOG10_MAX - HIST_LOG10_MIN) * HIST_BINS)
        bins = bins.floor().long().clamp(0, HIST_BINS - 1)
        hist.index_add_(0, feats * HIST_BINS + bins, torch.ones_like(bins))
        job.progress(min(1.0, (start + b) / len(windows)), message, step=start + b, total=len(windows))
    top_v, top_w, top_p = top.finish()
    # the sample shows windows beyond the top list
    s_v, s_w, s_p = sample.finish()
    meta = {"version": INDEX_VERSION, "k": k, "samples": samples, "windows": len(windows),
            "n_ctx": int(windows.shape[1]), "tokens": int(len(windows) * (windows.shape[1] - 1)),
            "d_sae": d_sae, "hook": hook, "hist_edges": hist_edges(), **identity}
    return FeatureIndex(meta, top_v, top_w, top_p, s_v, s_w, s_p, hist.view(d_sae, HIST_BINS).cpu(),
                        fire_count.cpu(), act_sum.cpu(), max_act.cpu())


def _stop_layer(hook: str) -> int | None:
    import re

    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) + 1 if m else None


def save_index(index: FeatureIndex, sae_dir: Path, corpus_name: str) -> None:
    from safetensors.torch import save

    from engine.atomic import atomic_write_bytes

    data_path, meta_path = index_paths(sae_dir, corpus_name)
    atomic_write_bytes(data_path, save(index.tensors()))  # no fixed-name temporary file left by a kill
    atomic_write_text(meta_path, json.dumps(index.meta) + "\n")  # written last: marks it complete


def load_index(sae_dir: Path, corpus_name: str, identity: dict) -> FeatureIndex | None:
    """The saved index if it was built for exactly this SAE and corpus, else None."""
    from safetensors.torch import load_file

    data_path, meta_path = index_paths(sae_dir, corpus_name)
    if not meta_path.exists() or not data_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != INDEX_VERSION or any(meta.get(k) != v for k, v in identity.items()):
            return None
        t = load_file(str(data_path))
        return FeatureIndex(meta, t["top_values"], t["top_windows"], t["top_positions"], t["sample_values"],
                            t["sample_windows"], t["sample_positions"], t["hist"], t["fire_count"],
                            t["act_sum"], t["max_act"])
    except Exception:  # a damaged index is rebuilt, not shown
        return None
