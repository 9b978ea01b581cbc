"""A TopK / BatchTopK training step whose decoder and gradient cost scale with k.

`SparseStep(trainer)(batch)` does what sae_lens's `SAETrainer.step(batch)` does for a
`TopKTrainingSAE` or `BatchTopKTrainingSAE` (same loss, same gradients to float
tolerance, same optimiser, clipping, schedulers and firing statistics), but only the
encoder's forward matmul and the top-k selection touch all `d_sae` latents. Only the
active latents are decoded, and only they receive gradients, so everything after the
selection costs O(batch * k * d_in) instead of O(batch * d_sae * d_in).

Notes
- The active latents are a CSR matrix [batch, d_sae] (`Codes`): the decoder is a
  sparse-dense product, the coefficients' gradient a sampled dense-dense product
  (`torch.sparse.sampled_addmm`), and the weight gradients of both W_enc and W_dec
  one latent-major sparse product each (as EleutherAI's sparsify does with its
  gather/scatter kernels; here with torch's own sparse kernels, on any device).
- The gradients are written out by hand. With `rescale_acts_by_decoder_norm` the
  decoder reads `relu(pre * |W_dec_j|) / |W_dec_j|`, whose derivative in the norm
  is exactly zero (the two paths autograd takes cancel), so no gradient flows into
  the norms; the gradient of `b_dec` through the encoder's input is
  `-W_enc @ grad(b_enc)`.
- The auxiliary (dead-latent) loss is sae_lens's: the top `d_in // 2` dead latents
  by pre-activation reconstruct the detached residual, scaled down when fewer are
  dead; it is sparse too.
- Configurations this step does not cover (no decoder-norm rescaling, no `b_dec`
  on the input, run-time normalisation inside the SAE, autocast) use sae_lens's
  own step: `SparseStep.supports(sae, trainer)` says which.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from engine.train.metrics import Codes

# torch warns once per process that CSR support is "beta"; the kernels used here are stable
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")



@dataclass
class StepOutput:
    """What a training step gives the loop: sae_lens's `TrainStepOutput` fields it
    reads, with the activations as `Codes` instead of a dense [batch, d_sae] tensor."""

    sae_in: torch.Tensor  # the scaled input
    sae_out: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    codes: Codes
    # a data-parallel step: per latent, (last row fired in the global batch, firing
    # count over it) and the global batch's size; None: `codes` is the whole batch
    firing: tuple[torch.Tensor, torch.Tensor, int] | None = None

    @classmethod
    def of(cls, out) -> "StepOutput":
        """From sae_lens's own step's output."""
        return cls(out.sae_in, out.sae_out, out.loss, out.losses, Codes.from_dense(out.feature_acts.detach()))


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """A CSR matrix from entries sorted by row."""
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return torch.sparse_csr_tensor(crow, cols, vals, (n_rows, n_cols), check_invariants=False)


class LatentMajor:
    """Entries (sorted by row) regrouped by latent, for products `S.T @ dense` where S
    [n_rows, d_sae] has these entries: for each latent, the sum of its rows of `dense`
    weighted by its entries' values ([d_sae, d])."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, d_sae: int, n_rows: int) -> None:
        self.order = torch.argsort(cols, stable=True)  # rows stay ascending within each latent
        self.crow = torch.zeros(d_sae + 1, dtype=torch.long, device=rows.device)
        self.crow[1:] = torch.bincount(cols, minlength=d_sae).cumsum(0)
        self.rows, self.shape = rows[self.order], (d_sae, n_rows)

    def product(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.rows, values[self.order], self.shape,
                                       check_invariants=False) @ dense


def _sampled_dot(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, left: torch.Tensor,
                 right: torch.Tensor) -> torch.Tensor:
    """For each entry e (sorted by row): `left[rows[e]] . right[cols[e]]`."""
    pattern = _csr(rows, cols, left.new_ones(len(rows)), n_rows, right.shape[0])
    return torch.sparse.sampled_addmm(pattern, left, right.T, beta=0.0).values()


class SparseStep:
    """One training step of a TopK or BatchTopK training SAE (see the module notes)."""

    def __init__(self, trainer, ranks=None) -> None:
        """`ranks` (`engine.distributed.Ranks`): a data-parallel run, whose gradients and
        firing counts are averaged / summed over the ranks (`engine.train.data_parallel`)."""
        if not self.supports(trainer.sae, trainer):
            raise ValueError("this SAE or trainer configuration needs sae_lens's own step")
        self.trainer, self.sae = trainer, trainer.sae
        self.ranks = ranks if ranks is not None and ranks.distributed else None
        self.batch_topk = type(self.sae).__name__ == "BatchTopKTrainingSAE"
        self._hidden: torch.Tensor | None = None  # the pre-activations' buffer, reused (see `_pre_activations`)

    @staticmethod
    def supports(sae, trainer) -> bool:
        from sae_lens import BatchTopKTrainingSAE, TopKTrainingSAE

        cfg = sae.cfg
        return (isinstance(sae, (TopKTrainingSAE, BatchTopKTrainingSAE))
                and cfg.rescale_acts_by_decoder_norm and cfg.apply_b_dec_to_input
                and not cfg.use_sparse_activations
                and cfg.normalize_activations in ("none", "expected_average_only_in")
                and cfg.reshape_activations == "none" and not trainer.cfg.autocast)

    def __call__(self, batch: torch.Tensor) -> StepOutput:
        trainer, sae = self.trainer, self.sae
        batch = batch.to(sae.device)
        world = self.ranks.world if self.ranks else 1
        trainer.n_training_samples += batch.shape[0] * world
        x = trainer.activation_scaler(batch).to(sae.dtype)
        sae.train()
        dead = trainer.dead_neurons
        global_firing = None
        with torch.no_grad():
            out, codes, loss, losses = self._forward_backward(x, dead)
            counts = codes.counts()
            if self.ranks:
                from engine.train import data_parallel as dp

                params = [p for p in sae.parameters() if p.grad is not None]
                counts = dp.average_gradients(params, self.ranks, extra=counts.double()).round().long()
                global_firing = (dp.global_last_row(codes, self.ranks), counts, codes.n_rows * world)
            trainer.n_forward_passes_since_fired += 1
            trainer.n_forward_passes_since_fired[counts > 0] = 0
            trainer.act_freq_scores += counts.to(trainer.act_freq_scores.dtype)
            trainer.n_frac_active_samples += trainer.cfg.train_batch_size_samples
            if self.batch_topk:
                positive = codes.vals[codes.vals > 0]
                least = positive.min().item() if len(positive) else None
                if self.ranks:
                    least = dp.global_min(least, self.ranks)
                if least is not None:
                    lr = sae.cfg.topk_threshold_lr
                    least = torch.tensor(least, dtype=sae.topk_threshold.dtype, device=x.device)
                    sae.topk_threshold = (1 - lr) * sae.topk_threshold + lr * least
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        trainer.lr_scheduler.step()
        for scheduler in trainer.coefficient_schedulers.values():
            scheduler.step()
        return StepOutput(x, out, loss, losses, codes, global_firing)

    def _select(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The active entries (rows, cols sorted by row, values before the ReLU)."""
        n, d_sae = hidden.shape
        if self.batch_topk:  # sae_lens: ReLU, then the top k * n of the whole batch
            k = int(self.sae.cfg.k * n)
            values, flat = hidden.relu().flatten().topk(k, sorted=False)
            flat, order = flat.sort()
            return flat // d_sae, flat % d_sae, values[order]
        values, cols = hidden.topk(self.sae.cfg.k, dim=-1, sorted=False)
        cols, order = cols.sort(dim=-1)  # CSR rows hold their columns in order
        values = values.gather(1, order)
        rows = torch.arange(n, device=hidden.device).repeat_interleave(self.sae.cfg.k)
        return rows, cols.flatten(), values.flatten()

    def _pre_activations(self, sae_in: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """The encoder's pre-activations [batch, d_sae], written into one buffer kept from
        step to step: on the CPU a fresh tensor this size (32 MiB at batch 4096, d_sae 2048)
        is mapped from the system at every allocation and its pages faulted in, which
        costs about a third of the matmul itself. The buffer is only read within a step."""
        sae = self.sae
        shape = (sae_in.shape[0], sae.W_enc.shape[1])
        if self._hidden is None or self._hidden.shape != shape:
            self._hidden = sae_in.new_empty(shape)
        # sae_lens computes (sae_in @ W_enc + b_enc) * norms: the same, scaling the [d_in, d_sae]
        # weights instead of the [batch, d_sae] result (float rounding apart)
        return torch.addmm(sae.b_enc * norms, sae_in, sae.W_enc * norms, out=self._hidden)

    def _forward_backward(self, x: torch.Tensor, dead: torch.Tensor):
        sae = self.sae
        W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
        n, d_in = x.shape
        d_sae = W_dec.shape[0]
        norms = W_dec.norm(dim=-1)
        sae_in = x - b_dec
        hidden = self._pre_activations(sae_in, norms)
        rows, cols, values = self._select(hidden)
        acts = values.relu()
        coef = acts / norms[cols]
        out = _csr(rows, cols, coef, n, d_sae) @ W_dec + b_dec
        diff = out - x
        mse = diff.pow(2).sum(-1).mean()
        grad_out = diff * (2.0 / n)
        grad_coef = _sampled_dot(rows, cols, n, grad_out, W_dec)
        grad_pre = torch.where(values > 0, grad_coef, 0.0)
        # the entries the weight gradients sum over: main ones, then the auxiliary ones
        all_rows, all_cols, all_grad_pre, all_coef, dec_dense = [rows], [cols], [grad_pre], [coef], [grad_out]
        aux = out.new_zeros(())
        num_dead = int(dead.sum())
        if num_dead:
            k_aux = d_in // 2
            scale = min(num_dead / k_aux, 1.0)
            k_aux = min(k_aux, num_dead)
            dead_ids = dead.nonzero().squeeze(1)
            aux_values, picked = hidden[:, dead_ids].topk(k_aux, dim=-1, sorted=False)
            picked, order = picked.sort(dim=-1)
            aux_values = aux_values.gather(1, order)
            a_rows = torch.arange(n, device=x.device).repeat_interleave(k_aux)
            a_cols = dead_ids[picked.flatten()]
            a_coef = aux_values.flatten() / norms[a_cols]
            recons = _csr(a_rows, a_cols, a_coef, n, d_sae) @ W_dec
            a_diff = recons - (x - out)
            factor = sae.cfg.aux_loss_coefficient * scale
            aux = factor * a_diff.pow(2).sum(-1).mean()
            grad_recons = a_diff * (2.0 * factor / n)
            a_grad_pre = _sampled_dot(a_rows, a_cols, n, grad_recons, W_dec)
            # auxiliary entries count as rows n..2n-1, so no (latent, row) pair repeats
            all_rows.append(a_rows + n), all_cols.append(a_cols), all_grad_pre.append(a_grad_pre)
            all_coef.append(a_coef), dec_dense.append(grad_recons)
        e_rows, e_cols, e_grad = torch.cat(all_rows), torch.cat(all_cols), torch.cat(all_grad_pre)
        grad_b_enc = torch.zeros(d_sae, dtype=x.dtype, device=x.device).index_add_(0, e_cols, e_grad)
        # both weight gradients sum over the same entries: one latent-major ordering for the two
        by_latent = LatentMajor(e_rows, e_cols, d_sae, len(all_rows) * n)
        W_enc.grad = by_latent.product(e_grad, torch.cat([sae_in] * len(all_rows))).T.contiguous()
        b_enc.grad = grad_b_enc
        W_dec.grad = by_latent.product(torch.cat(all_coef), torch.cat(dec_dense))
        b_dec.grad = grad_out.sum(0) - W_enc @ grad_b_enc
        losses = {"mse_loss": mse, "auxiliary_reconstruction_loss": aux}
        codes = Codes(rows, cols, acts, n, d_sae)
        return out, codes, mse + aux, losses
