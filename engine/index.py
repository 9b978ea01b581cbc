"""The feature index: one streaming pass of model + SAE over a corpus, all features at once.

For every feature it keeps: the top-k windows by the feature's maximum activation
in the window (with the position of that maximum), a uniform random sample of
the other windows where it fires (so the user sees typical activations, not just
the extremes), the feature's activations on the tokens around each of those
maxima (the context a feature page shows), a histogram of its non-zero
activations, its firing density, mean and max. Memory is O(d_sae * k), whatever
the corpus size.

Notes
- Top examples are per window: a window enters a feature's list once, at its
  maximum, so one long repetitive context cannot fill the whole list.
- The random sample is a bottom-k sketch: every (window, feature) pair where the
  feature fires gets a random key, and the k smallest keys are kept. That is a
  uniform sample without replacement over the firing windows, merged batch by
  batch with the same tensor ops as the top-k.
- Both lists select by int64 keys that no two windows share: the top list's is the
  window maximum's float32 bits (monotonic for positive floats) then the window id
  (the earlier window first on equal maxima: duplicated text ties exactly); the
  sample's is a hash of (seed, window, feature), then the window id. So a list's
  content and order are one function of the windows, whatever the batches or the
  order they are merged in: ranks that index shares of the corpus and merge their
  lists (engine/index_distributed.py) get exactly a single pass's lists.
- Histograms use fixed log10 bins from 1e-3 to 1e3, so batches merge by addition.
- The context of an example (`CONTEXT_BEFORE` tokens before its maximum, `CONTEXT_AFTER`
  after) is cut from the batch's activations when the example enters a list, so a
  page needs no model pass. Most of a context is zeros (about 3 of its 27 values
  fire on the shipped SAEs): it is stored sparse, CSR with one row per feature and
  list slot, about 0.8 MB for 1024 features where dense float32 would take 4.4 MB.
- So that a page computes nothing, the index also keeps each feature's strongest
  direct-path logit effects and its nearest features by decoder cosine (small
  tables, computed once from the weights after the pass: per page, those products
  cost more than the rest of the page, and much more while other work shares the CPU).
- It also counts which features fire together on a token (engine/cooccur.py), for
  the co-activation graph: same pass, no second model run. An index saved before
  that existed still serves pages; a graph rebuilds it.
- The index is saved beside the SAE under `index/`, named by the corpus and keyed
  by a hash of the SAE's files and the corpus's identity; a stale index is rebuilt,
  never shown.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from engine.atomic import atomic_write_text
from engine.cooccur import (COOCCURRENCE_DEFINITION, COOCCURRENCE_VERSION, CooccurrenceCounter,
                            merge_cooccurrence)
from engine.errors import UserError
from engine.jobs import Job, as_job

HIST_LOG10_MIN, HIST_LOG10_MAX, HIST_BINS = -3.0, 3.0, 48
CONTEXT_BEFORE, CONTEXT_AFTER = 20, 6  # tokens shown around an example's maximum
CONTEXT = CONTEXT_BEFORE + 1 + CONTEXT_AFTER
LOGITS_KEPT, NEIGHBOURS_KEPT = 10, 8  # logit effects (each way) and neighbours a page shows
INDEX_VERSION = 2  # 2: example contexts, logit effects and neighbours stored (version 1 is rebuilt)
TABLE_ROWS = 256  # features per product when the logit and neighbour tables are made


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
    # activations around each example's maximum, CSR over rows (feature, slot): slots
    # 0..k-1 are the top list's, k..k+q-1 the sample's; column j is position max-CONTEXT_BEFORE+j
    context_offsets: torch.Tensor  # [S * (k + q) + 1] int32
    context_columns: torch.Tensor  # [nnz] uint8
    context_values: torch.Tensor  # [nnz] float32
    # direct-path logit effects, strongest first ([S, 0] where the hook has no direct path)
    logit_top_ids: torch.Tensor  # [S, LOGITS_KEPT] int32, by effect, descending
    logit_top_values: torch.Tensor
    logit_bottom_ids: torch.Tensor  # [S, LOGITS_KEPT] int32, by effect, ascending
    logit_bottom_values: torch.Tensor
    neighbour_ids: torch.Tensor  # [S, NEIGHBOURS_KEPT] int32: other features by decoder cosine, descending
    neighbour_cosines: torch.Tensor
    # co-occurrence (engine/cooccur.py): pairs i < j that co-fired, CSR by row; None in an
    # index built before it was counted (a graph then rebuilds the index)
    cooc_offsets: torch.Tensor | None = None  # [S + 1]
    cooc_columns: torch.Tensor | None = None  # [pairs] int32, j > i
    cooc_counts: torch.Tensor | None = None  # [pairs] int32: tokens where both fire
    cooc_products: torch.Tensor | None = None  # [pairs] float32: sum of a_i * a_j
    act_sq_sum: torch.Tensor | None = None  # [S] float64: sum of a_i^2 (for the activation cosine)

    @property
    def has_cooccurrence(self) -> bool:
        return self.cooc_offsets is not None and "cooccurrence" in self.meta

    @property
    def density(self) -> torch.Tensor:
        return self.fire_count.double() / self.meta["tokens"]

    @property
    def mean_act(self) -> torch.Tensor:
        return self.act_sum.double() / self.fire_count.clamp_min(1).double()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def contexts(self, feature: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature's example contexts as dense rows: ([k, CONTEXT] for the top list,
        [q, CONTEXT] for the sample), aligned with `top_windows`/`sample_windows`."""
        k, q = self.top_windows.shape[1], self.sample_windows.shape[1]
        offsets = self.context_offsets[feature * (k + q):(feature + 1) * (k + q) + 1].long()
        lo, hi = int(offsets[0]), int(offsets[-1])
        rows = torch.repeat_interleave(torch.arange(k + q), offsets.diff())
        dense = torch.zeros(k + q, CONTEXT)
        dense[rows, self.context_columns[lo:hi].long()] = self.context_values[lo:hi]
        return dense[:k], dense[k:]


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
MAX_WINDOWS = (1 << 31) - 1  # window ids fill the low 31 bits of a list's keys
NO_TOP, NO_SAMPLE = -1, torch.iinfo(torch.int64).max  # keys of "not fired" (every real key lies between)


def default_batch(n_ctx: int) -> int:
    """Windows per model pass: about `BATCH_TOKENS` tokens."""
    return max(1, BATCH_TOKENS // n_ctx)


def top_keys(win_max: torch.Tensor, win_ids: torch.Tensor) -> torch.Tensor:
    """[b, S] int64 keys of the top list, largest first: the float32 bits of the window
    maximum (positive floats order as their bits), then the earlier window;
    `NO_TOP` where the feature did not fire."""
    bits = win_max.float().contiguous().view(torch.int32).long()
    keys = (bits << 31) | (MAX_WINDOWS - win_ids)
    return torch.where(win_max > 0, keys, NO_TOP)


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32), in halves so no product overflows int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit moves every output bit."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def sample_keys(win_max: torch.Tensor, win_ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[b, S] int64 keys of the random sample, smallest kept: a 32-bit hash of (seed,
    window, feature), then the window; `NO_SAMPLE` where the feature did not fire.
    A pure function of the window and feature (not of a generator's position), so
    any split of the windows gives every pair the same key."""
    feats = torch.arange(win_max.shape[1], device=win_max.device)
    h = _fmix32((win_ids + ((seed & _M32) * 0x9E3779B9 & _M32)) & _M32)
    h = _fmix32((h + _mul32(feats, 0x7FEB352D)) & _M32)
    return torch.where(win_max > 0, (h << 31) | win_ids, NO_SAMPLE)


class _Merger:
    """Keeps the k largest (or smallest) `key` per feature with its `(value, window,
    position)`, merging batches, with the feature's activations around that position
    (its context). Keys are unique per (window, feature) (`top_keys`, `sample_keys`),
    so the kept set and its order depend on nothing but the candidates."""

    def __init__(self, d_sae: int, k: int, largest: bool, device):
        self.largest, self.empty = largest, NO_TOP if largest else NO_SAMPLE
        self.keys = torch.full((d_sae, k), self.empty, dtype=torch.long, device=device)
        self.values = torch.zeros(d_sae, k, device=device)
        self.windows = torch.full((d_sae, k), -1, dtype=torch.long, device=device)
        self.positions = torch.zeros(d_sae, k, dtype=torch.long, device=device)
        self.contexts = torch.zeros(d_sae, k, CONTEXT, device=device)

    def _select(self, keys, values, windows, positions) -> torch.Tensor:
        """Keep the best k of the list and the candidates; the selection [S, k] over the
        concatenation (`>= k`: a candidate)."""
        k = self.keys.shape[1]
        all_keys = torch.cat([self.keys, keys], 1)
        sel = all_keys.topk(k, dim=1, largest=self.largest).indices
        self.keys = all_keys.gather(1, sel)
        self.values = torch.cat([self.values, values], 1).gather(1, sel)
        self.windows = torch.cat([self.windows, windows], 1).gather(1, sel)
        self.positions = torch.cat([self.positions, positions], 1).gather(1, sel)
        return sel

    def merge(self, keys, values, windows, positions, acts) -> None:
        """`keys`..`positions`: [S, b], column i for the batch's window i; `acts`: the
        batch's activations [b, t, S] (BOS left out), to cut the context of each
        candidate that enters the list (only those: most never do)."""
        k = self.keys.shape[1]
        sel = self._select(keys, values, windows, positions)
        contexts = self.contexts.gather(1, sel.clamp_max(k - 1).unsqueeze(-1).expand(-1, -1, CONTEXT))
        feats, slots = (sel >= k).nonzero(as_tuple=True)
        contexts[feats, slots] = _cut(acts, sel[feats, slots] - k, self.positions[feats, slots], feats)
        self.contexts = contexts

    def state(self) -> dict[str, torch.Tensor]:
        """The list as plain CPU tensors (what a rank sends to be merged)."""
        return {name: getattr(self, name).cpu() for name in ("keys", "values", "windows", "positions", "contexts")}

    def absorb(self, state: dict[str, torch.Tensor]) -> None:
        """Merge another list (`state()` of a merger over other windows), contexts and all."""
        state = {name: t.to(self.keys.device) for name, t in state.items()}
        sel = self._select(state["keys"], state["values"], state["windows"], state["positions"])
        contexts = torch.cat([self.contexts, state["contexts"]], 1)
        self.contexts = contexts.gather(1, sel.unsqueeze(-1).expand(-1, -1, CONTEXT))

    def finish(self):
        # empty slots hold whichever "not fired" candidates the selection picked: all
        # cleared, positions too, so they do not depend on which those were
        empty = self.keys == self.empty
        self.windows[empty], self.values[empty], self.contexts[empty], self.positions[empty] = -1, 0.0, 0.0, 0
        return self.values.cpu(), self.windows.cpu(), self.positions.cpu(), self.contexts.cpu()


def _cut(acts: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """[n, CONTEXT]: feature `feats[i]`'s activations in batch window `rows[i]` around
    window position `positions[i]` (BOS is position 0, which `acts` leaves out);
    zeros beyond the window's ends and at BOS."""
    t = acts.shape[1]
    cols = positions.unsqueeze(1) - 1 - CONTEXT_BEFORE + torch.arange(CONTEXT, device=acts.device)
    inside = (cols >= 0) & (cols < t)
    cut = acts[rows.unsqueeze(1), cols.clamp(0, t - 1), feats.unsqueeze(1)]
    return torch.where(inside, cut, 0.0)


def _sparse(contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense contexts [S, slots, CONTEXT] as CSR (offsets, columns, values), one row per
    (feature, slot): most activations around an example are zero."""
    flat = contexts.reshape(-1, CONTEXT)
    nonzero = flat != 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), nonzero.sum(1).cumsum(0)]).int()  # half the bytes
    return offsets, nonzero.nonzero()[:, 1].to(torch.uint8), flat[nonzero]


def logit_path(model, sae, hook: str) -> list[torch.Tensor] | None:
    """The matrices from the SAE's output space to the logits along the direct path
    (W_U; the MLP's W_out first for `mlp.hook_post`), None where there is none."""
    if sae.W_dec.shape[1] == model.cfg.d_model and re.search(r"hook_(resid_\w+|mlp_out|attn_out)$", hook):
        return [model.W_U]
    if (m := re.match(r"blocks\.(\d+)\.mlp\.hook_post$", hook)):
        return [model.blocks[int(m.group(1))].mlp.W_out, model.W_U]
    return None


@torch.no_grad()
def _weight_tables(model, sae, hook: str, job: Job) -> dict[str, torch.Tensor]:
    """Each feature's `LOGITS_KEPT` strongest direct-path logit effects each way and its
    `NEIGHBOURS_KEPT` nearest other features by decoder cosine (the `FeatureIndex`
    fields from `logit_top_ids` on), `TABLE_ROWS` features at a time, so a large
    vocabulary or SAE never needs a [d_sae, d_vocab] or [d_sae, d_sae] matrix."""
    W = sae.W_dec.detach().float()
    unit = torch.nn.functional.normalize(W, dim=-1)
    d_sae, path = W.shape[0], logit_path(model, sae, hook)
    n_logits = min(LOGITS_KEPT, model.cfg.d_vocab) if path else 0
    parts: dict[str, list[torch.Tensor]] = {}

    def keep(name: str, t: torch.Tensor) -> None:
        parts.setdefault(name, []).append(t.cpu().int() if name.endswith("_ids") else t.cpu().float())

    for lo in range(0, d_sae, TABLE_ROWS):
        job.check()
        hi = min(d_sae, lo + TABLE_ROWS)
        cos = unit[lo:hi] @ unit.T
        diagonal = torch.arange(hi - lo, device=cos.device)
        cos[diagonal, diagonal + lo] = -2  # not its own neighbour
        near = cos.topk(min(NEIGHBOURS_KEPT, d_sae - 1))
        keep("neighbour_ids", near.indices)
        keep("neighbour_cosines", near.values)
        logits = W[lo:hi]
        for matrix in path or []:
            logits = logits @ matrix.float()
        top = logits.topk(n_logits) if path else (torch.zeros(hi - lo, 0),) * 2
        bottom = logits.topk(n_logits, largest=False) if path else top
        keep("logit_top_values", top[0])
        keep("logit_top_ids", top[1])
        keep("logit_bottom_values", bottom[0])
        keep("logit_bottom_ids", bottom[1])
    return {name: torch.cat(ts) for name, ts in parts.items()}


@dataclass
class IndexPartial:
    """The pass's state over some of the windows, before the weight tables: what a
    rank sends to rank 0, and what `merge_partials` combines."""
    windows: int  # windows indexed
    top: dict  # `_Merger.state()` of the top list
    sample: dict  # and of the random sample
    hist: torch.Tensor  # [S * HIST_BINS] int64
    fire_count: torch.Tensor  # [S] int64
    act_sum: torch.Tensor  # [S] float64
    max_act: torch.Tensor  # [S] float32
    cooccurrence: dict  # `CooccurrenceCounter.finish()`


@torch.no_grad()
def index_pass(lm, sae, hook: str, windows: torch.Tensor, k: int = 20, samples: int = 20,
               batch: int | None = None, seed: int = 0, job: Job | None = None,
               share: tuple[int, int] | None = None, message: str | None = None) -> IndexPartial:
    """The model + SAE pass over `windows[lo:hi]` (`share`, default all of them), whose
    ids stay the global ones: `batch` windows at a time from `lo`, progress over the share."""
    from engine.saes import encoder_input

    job = as_job(job)
    batch = batch or default_batch(windows.shape[1])
    lo, hi = share or (0, len(windows))
    if len(windows) > MAX_WINDOWS:
        raise UserError(f"{len(windows):,} windows: at most {MAX_WINDOWS:,} can be indexed at once")
    d_sae, dev = sae.cfg.d_sae, lm.device
    top, sample = _Merger(d_sae, k, largest=True, device=dev), _Merger(d_sae, samples, largest=False, device=dev)
    cooccurrence = CooccurrenceCounter(d_sae, dev)
    hist = torch.zeros(d_sae * HIST_BINS, dtype=torch.long, device=dev)
    fire_count = torch.zeros(d_sae, dtype=torch.long, device=dev)
    act_sum = torch.zeros(d_sae, dtype=torch.float64, device=dev)
    max_act = torch.zeros(d_sae, device=dev)
    stop = _stop_layer(hook)
    message = message or f"indexing {(hi - lo) * (windows.shape[1] - 1):,} tokens"
    job.progress(0.0, message, step=0, total=hi - lo)
    for start in range(lo, hi, batch):
        job.check()
        tokens = windows[start:min(start + batch, hi)].to(dev)
        _, cache = lm.run_with_cache(tokens, names_filter=[hook], stop_at_layer=stop, job=job)
        x = cache[hook][:, 1:].float()
        b, t = x.shape[:2]
        acts = sae.encode(encoder_input(sae, x.reshape(b * t, *x.shape[2:]))).reshape(b, t, d_sae)  # [b, t, S]
        job.check()  # the merges below take as long as the pass itself
        win_max, win_pos = acts.max(1)  # [b, S]
        win_ids = torch.arange(start, start + b, device=dev).unsqueeze(1).expand(b, d_sae)
        top.merge(top_keys(win_max, win_ids).T, win_max.T, win_ids.T, (win_pos + 1).T, acts)
        sample.merge(sample_keys(win_max, win_ids, seed).T, win_max.T, win_ids.T, (win_pos + 1).T, acts)
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
        cooccurrence.add(rows, feats, vals, b * t)
        job.progress(min(1.0, (start + b - lo) / max(1, hi - lo)), message, step=start + b - lo, total=hi - lo)
    return IndexPartial(hi - lo, top.state(), sample.state(), hist.cpu(), fire_count.cpu(), act_sum.cpu(),
                        max_act.cpu(), cooccurrence.finish())


def merge_partials(parts: list[IndexPartial]) -> IndexPartial:
    """The state of one pass over all the parts' windows (disjoint shares): the lists by
    the selection the pass itself makes (exact: keys are unique), counts and
    histograms added (exact), maxima by max (exact), float sums added (the pass's own
    sums, in another order: equal to float rounding)."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    d_sae, k, q = first.top["keys"].shape[0], first.top["keys"].shape[1], first.sample["keys"].shape[1]
    top, sample = _Merger(d_sae, k, largest=True, device="cpu"), _Merger(d_sae, q, largest=False, device="cpu")
    for part in parts:
        top.absorb(part.top)
        sample.absorb(part.sample)
    return IndexPartial(
        sum(p.windows for p in parts), top.state(), sample.state(),
        sum(p.hist for p in parts), sum(p.fire_count for p in parts), sum(p.act_sum for p in parts),
        torch.stack([p.max_act for p in parts]).max(0).values,
        merge_cooccurrence([p.cooccurrence for p in parts], d_sae))


def finish_index(part: IndexPartial, lm, sae, hook: str, windows: torch.Tensor, identity: dict,
                 job: Job | None = None) -> FeatureIndex:
    """The `FeatureIndex` of a pass over all of `windows` (`part`), with the weight tables."""
    job = as_job(job)
    if part.windows != len(windows):
        raise ValueError(f"the pass covered {part.windows} of {len(windows)} windows")
    d_sae, k, samples = part.top["keys"].shape[0], part.top["keys"].shape[1], part.sample["keys"].shape[1]
    lists = []
    for state, largest in ((part.top, True), (part.sample, False)):
        merger = _Merger(d_sae, state["keys"].shape[1], largest, device="cpu")
        merger.absorb(state)  # into an empty list: the same list, in order
        lists.append(merger.finish())
    (top_v, top_w, top_p, top_c), (s_v, s_w, s_p, s_c) = lists
    meta = {"version": INDEX_VERSION, "k": k, "samples": samples, "windows": len(windows),
            "n_ctx": int(windows.shape[1]), "tokens": int(len(windows) * (windows.shape[1] - 1)),
            "d_sae": d_sae, "hook": hook, "hist_edges": hist_edges(), "context": [CONTEXT_BEFORE, CONTEXT_AFTER],
            "cooccurrence": {"version": COOCCURRENCE_VERSION, "definition": COOCCURRENCE_DEFINITION},
            **identity}
    return FeatureIndex(meta, top_v, top_w, top_p, s_v, s_w, s_p, part.hist.view(d_sae, HIST_BINS),
                        part.fire_count, part.act_sum, part.max_act, *_sparse(torch.cat([top_c, s_c], 1)),
                        **_weight_tables(lm.model, sae, hook, job), **part.cooccurrence)


@torch.no_grad()
def build_index(lm, sae, hook: str, windows: torch.Tensor, identity: dict, k: int = 20, samples: int = 20,
                batch: int | None = None, seed: int = 0, job: Job | None = None,
                progress: Callable[[float], None] | None = None,
                check: Callable[[], None] | None = None) -> FeatureIndex:
    """One pass over `windows` ([N, n_ctx], BOS first; the BOS position is skipped).

    Accumulators live on the model's device; `batch` windows (default: about
    `BATCH_TOKENS` tokens, so memory does not grow with the window) go through the
    model at a time. `job` is checked before every block of every batch and gets
    progress after every batch (`progress`/`check`: the older callables, folded in).
    Several ranks, each over a share: engine/index_distributed.py."""
    job = as_job(job, check=check, progress=progress)
    if len(windows) == 0:
        raise UserError("the corpus is empty: nothing to index")
    part = index_pass(lm, sae, hook, windows, k=k, samples=samples, batch=batch, seed=seed, job=job)
    return finish_index(part, lm, sae, hook, windows, identity, job)


def _stop_layer(hook: str) -> int | None:
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
        if meta.get("context") != [CONTEXT_BEFORE, CONTEXT_AFTER]:
            return None  # contexts cut to another width than pages show
        t = load_file(str(data_path))
        if meta.get("cooccurrence", {}).get("version", COOCCURRENCE_VERSION) != COOCCURRENCE_VERSION:
            meta.pop("cooccurrence")  # counted another way: rebuilt when a graph needs it
        return FeatureIndex(meta, **{f.name: t.get(f.name) for f in fields(FeatureIndex) if f.name != "meta"})
    except Exception:  # a damaged index is rebuilt, not shown
        return None
