"""Feature co-occurrence, counted during the index pass (engine/index.py), for the
co-activation graph (engine/graph.py).

Definition (recorded in the index's meta as `COOCCURRENCE_DEFINITION`): on every
indexed token (BOS excluded), features i and j co-fire when both activations are
above zero. For each pair i < j that ever co-fires the index keeps

- `count` C_ij: tokens where both fire (C_ii is the feature's `fire_count`),
- `product` P_ij: the sum over tokens of a_i * a_j (with the per-feature sum of
  squares `act_sq_sum`, the activation cosine P_ij / sqrt(Q_i Q_j)),

stored as CSR over the upper triangle (row i, columns j > i). Weights such as the
Jaccard index C_ij / (C_ii + C_jj - C_ij) are computed from these when a graph is
made, so one index serves every weighting.

How: each batch's firing codes are a matrix A [tokens, d_sae]; A^T A gives the
batch's pairs. Up to `DENSE_MAX` features, A^T (sparse) times A (dense) is summed
into a dense [d_sae, d_sae] table (2 x 4 bytes per entry: 8 MB at 1024, 128 MB at
4096). Above it, scipy's sparse product (cost O(sum over tokens of L0^2), whatever
d_sae) feeds a sparse table merged every `MERGE_EVERY` batches, whose memory is 16
bytes per distinct co-firing pair: it never holds a dense d_sae x d_sae matrix (at
16k features that would take 2 GiB).

Ranks that index shares of a corpus (engine/index_distributed.py) each count their
own tokens; `merge_cooccurrence` adds the finished tables: the counts are exactly a
single pass's, the products equal to float rounding.
"""

from __future__ import annotations

import torch

COOCCURRENCE_VERSION = 1
COOCCURRENCE_DEFINITION = ("per indexed token (BOS excluded): features i < j co-fire when both activations are > 0; "
                           "count = tokens where both fire, product = sum of a_i * a_j over tokens")
DENSE_MAX = 4096  # up to this many features the table is dense
MERGE_EVERY = 8  # batches of sparse pairs held before they are merged (sparse table only)


class CooccurrenceCounter:
    """Accumulates C_ij and P_ij over batches; `finish()` gives the upper-triangle CSR."""

    def __init__(self, d_sae: int, device):
        self.d_sae, self.device = d_sae, device
        self.dense = d_sae <= DENSE_MAX
        self.act_sq_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
        if self.dense:
            self.counts = torch.zeros(d_sae, d_sae, dtype=torch.int32, device=device)
            self.products = torch.zeros(d_sae, d_sae, dtype=torch.float32, device=device)
        else:
            self.keys = torch.zeros(0, dtype=torch.long, device=device)
            self.sums = torch.zeros(0, 2, dtype=torch.float64, device=device)
            self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor, n_tokens: int) -> None:
        """One batch's firing entries: token `rows`, feature `feats`, activation `vals` (> 0)."""
        self.act_sq_sum.index_add_(0, feats, vals.double() ** 2)
        if len(vals) == 0:
            return
        if self.dense:
            self._add_dense(rows, feats, vals.float(), n_tokens)
        else:
            self._add_sparse(rows, feats, vals, n_tokens)

    def _add_dense(self, rows, feats, vals, n_tokens: int) -> None:
        """A^T (sparse, CSR) times A (dense): the whole symmetric [S, S] table of the batch.
        Not sparse times sparse: torch's CSR @ CSR leaks about 2 MB a call on the CPU
        (torch 2.13), which over a long index pass is gigabytes."""
        by_feature = torch.argsort(feats, stable=True)
        crow_t = torch.zeros(self.d_sae + 1, dtype=torch.long, device=vals.device)
        crow_t[1:] = torch.bincount(feats, minlength=self.d_sae).cumsum(0)
        rows_t = rows[by_feature]
        for table, values in ((self.counts, torch.ones_like(vals)), (self.products, vals)):
            dense = torch.zeros(n_tokens, self.d_sae, device=vals.device)
            dense[rows, feats] = values
            # built from sorted, in-range indices: the invariant checks would only cost time
            a_t = torch.sparse_csr_tensor(crow_t, rows_t, values[by_feature], (self.d_sae, n_tokens),
                                          check_invariants=False)
            gram = a_t @ dense
            table += gram.round().int() if table.dtype == torch.int32 else gram

    def _add_sparse(self, rows, feats, vals, n_tokens: int) -> None:
        """scipy's sparse product (on the CPU): memory grows with the pairs, never [S, S]."""
        import numpy as np
        import scipy.sparse

        r, f, v = rows.cpu().numpy(), feats.cpu().numpy(), vals.double().cpu().numpy()
        shape = (n_tokens, self.d_sae)
        fired = scipy.sparse.csr_array((np.ones_like(v), (r, f)), shape=shape)
        acts = scipy.sparse.csr_array((v, (r, f)), shape=shape)
        counts = scipy.sparse.triu(fired.T @ fired, 1).tocoo()
        products = scipy.sparse.triu(acts.T @ acts, 1).tocoo()
        # same pattern (all values > 0), but keyed separately so no order is assumed
        keys = torch.from_numpy(np.concatenate([counts.row * self.d_sae + counts.col,
                                                products.row * self.d_sae + products.col]).astype(np.int64))
        sums = torch.zeros(len(keys), 2, dtype=torch.float64)
        sums[:counts.nnz, 0] = torch.from_numpy(counts.data.astype(np.float64))
        sums[counts.nnz:, 1] = torch.from_numpy(products.data.astype(np.float64))
        self.pending.append((keys.to(self.device), sums.to(self.device)))
        if len(self.pending) >= MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        keys = torch.cat([self.keys, *(k for k, _ in self.pending)])
        sums = torch.cat([self.sums, *(s for _, s in self.pending)])
        self.pending = []
        self.keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        self.sums = torch.zeros(len(self.keys), 2, dtype=torch.float64, device=self.device).index_add_(0, inverse, sums)

    def nbytes(self) -> int:
        """The memory the table holds now (for the benchmark's report)."""
        if self.dense:
            return self.counts.nbytes + self.products.nbytes
        return self.keys.nbytes + self.sums.nbytes + sum(k.nbytes + s.nbytes for k, s in self.pending)

    def finish(self) -> dict[str, torch.Tensor]:
        """The `FeatureIndex` co-occurrence fields: `cooc_offsets` [S+1], `cooc_columns`,
        `cooc_counts`, `cooc_products` (pairs i < j, by row then column) and `act_sq_sum`."""
        if self.dense:  # the table is symmetric: its upper half
            i, j = self.counts.triu(1).nonzero(as_tuple=True)
            counts, products = self.counts[i, j], self.products[i, j]
        else:
            self._merge()
            i, j = self.keys // self.d_sae, self.keys % self.d_sae
            counts, products = self.sums[:, 0].round().int(), self.sums[:, 1].float()
        offsets = torch.zeros(self.d_sae + 1, dtype=torch.long)
        offsets[1:] = torch.bincount(i.cpu(), minlength=self.d_sae).cumsum(0)
        return {"cooc_offsets": offsets, "cooc_columns": j.cpu().int(), "cooc_counts": counts.cpu().int(),
                "cooc_products": products.cpu().float(), "act_sq_sum": self.act_sq_sum.cpu()}


def merge_cooccurrence(parts: list[dict[str, torch.Tensor]], d_sae: int) -> dict[str, torch.Tensor]:
    """The `finish()` fields of one count over disjoint token sets (ranks' shares of an
    index pass), from each set's own: pairs united, counts added exactly (int64),
    products and `act_sq_sum` added in float64 (the sums of a single count, in another
    order: equal to float rounding). Same layout: by row, then column."""
    if len(parts) == 1:
        return dict(parts[0])
    keys, counts, products = [], [], []
    for part in parts:
        rows = torch.repeat_interleave(torch.arange(d_sae), part["cooc_offsets"].diff())
        keys.append(rows * d_sae + part["cooc_columns"].long())
        counts.append(part["cooc_counts"].long())
        products.append(part["cooc_products"].double())
    pairs, inverse = torch.unique(torch.cat(keys), sorted=True, return_inverse=True)
    count = torch.zeros(len(pairs), dtype=torch.long).index_add_(0, inverse, torch.cat(counts))
    product = torch.zeros(len(pairs), dtype=torch.float64).index_add_(0, inverse, torch.cat(products))
    i = pairs // d_sae
    offsets = torch.zeros(d_sae + 1, dtype=torch.long)
    offsets[1:] = torch.bincount(i, minlength=d_sae).cumsum(0)
    return {"cooc_offsets": offsets, "cooc_columns": (pairs % d_sae).int(), "cooc_counts": count.int(),
            "cooc_products": product.float(), "act_sq_sum": sum(p["act_sq_sum"] for p in parts)}
