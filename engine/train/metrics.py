"""Every SAE figure saescope shows, computed here and nowhere else.

The names, rules and token windows are in `engine.figures` (torch-free, so the TUI can
label its columns with them); this module is the torch code that follows them, and
`engine.train.evaluate` the part that needs the model (CE and KL scores, the dead
fraction on held-out tokens). Callers pass activations with the BOS position already
left out.

Notes
- Explained variance is `1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2`, the
  mean taken per dimension over the same tokens. Streaming versions accumulate in
  float64 so that millions of tokens do not lose precision.
- "Dead" is one figure: never fired on the first `DEAD_TOKENS` held-out tokens
  (`HeldOutFiring`, fed by the evaluation). The training-time figures are named
  apart: the quiet fraction (not fired in the last `window` training tokens) and the
  rare fraction (density below `DENSITY_THRESHOLD` over the last full window); their
  record keys (`dead_fraction_window`, `dead_fraction_density`) stay as they were
  for the files already written.
- CE scores: `ce_loss_score = (ce_zero - ce_sae) / (ce_zero - ce_clean)` and
  `kl_div_score = (kl_zero - kl_sae) / kl_zero`, with KL(clean || patched) per
  token. The SAE (or zero) replaces the hook's activation at every position
  except the BOS position, which the SAEs are not trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.figures import DEAD_TOKENS, DENSITY_THRESHOLD  # noqa: F401  (re-exported)

HIST_BINS = torch.linspace(-8, 0, 33)  # log10 density bin edges; dead features go in the first


@dataclass
class Codes:
    """The nonzero-pattern of a batch's feature activations: entry e is latent
    `cols[e]` of row `rows[e]` with activation `vals[e]` (entries with value 0 may be
    present: a top-k latent whose pre-activation was negative)."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    n_rows: int
    d_sae: int
    _firing: torch.Tensor | None = None  # computed once, asked for by the trainer and the tracker
    _counts: torch.Tensor | None = None

    @classmethod
    def from_dense(cls, acts: torch.Tensor) -> "Codes":
        rows, cols = acts.nonzero(as_tuple=True)
        return cls(rows, cols, acts[rows, cols], acts.shape[0], acts.shape[1])

    def dense(self) -> torch.Tensor:
        out = self.vals.new_zeros(self.n_rows, self.d_sae)
        out[self.rows, self.cols] = self.vals
        return out

    def firing(self) -> torch.Tensor:
        """A bool mask over the entries: those that fire (activation nonzero)."""
        if self._firing is None:
            self._firing = self.vals != 0
        return self._firing

    def counts(self) -> torch.Tensor:
        """Per latent, the rows it fires on: [d_sae]."""
        if self._counts is None:
            self._counts = torch.bincount(self.cols[self.firing()], minlength=self.d_sae)
        return self._counts

    def last_row(self) -> torch.Tensor:
        """Per latent, the last row it fires on (-1: none): [d_sae]."""
        fired = self.firing()
        out = torch.full((self.d_sae,), -1, dtype=torch.long, device=self.cols.device)
        return out.scatter_reduce(0, self.cols[fired], self.rows[fired], reduce="amax")

    def l0(self) -> float:
        return self.firing().sum().item() / self.n_rows

    def l1(self) -> float:
        return self.vals.abs().sum().item() / self.n_rows


def as_codes(acts) -> "Codes":
    """`acts` as `Codes`: already so, or a dense [n, d_sae] tensor."""
    return acts if isinstance(acts, Codes) else Codes.from_dense(acts)


def firing_density(acts: torch.Tensor) -> torch.Tensor:
    """Per feature, the fraction of tokens (rows of `acts` [n, d_sae]) it fires on."""
    return (acts != 0).double().mean(0)


def dead_fraction(fired: torch.Tensor) -> float:
    """Share of features that never fired, from a [d_sae] bool 'fired at least once'."""
    return 1.0 - fired.double().mean().item()


def batch_metrics(x: torch.Tensor, x_hat: torch.Tensor, acts) -> dict:
    """Reconstruction and sparsity of one batch (`x`, `x_hat`: [n, d]; `acts`: [n, d_sae]
    or its `Codes`)."""
    x, x_hat = x.double(), x_hat.double()
    return step_metrics(x, (x - x_hat).pow(2).sum().item(), as_codes(acts))


def step_metrics(x: torch.Tensor, squared_error: float, codes: "Codes") -> dict:
    """A batch's figures from its inputs `x` [n, d], the summed squared error of their
    reconstruction (the training loss already has it) and the activations' `Codes`."""
    n, d = x.shape
    total = (x - x.mean(0)).pow(2).sum().item()
    return {
        "mse": squared_error / (n * d),
        "explained_variance": 1.0 - squared_error / total,
        "l0": codes.l0(),
        "l1": codes.l1(),
    }


class HeldOutFiring:
    """Which features fired on the held-out windows of the dead-fraction rule: the
    first `dead_windows(n_ctx)` windows (`DEAD_TOKENS` tokens); later windows are
    ignored. Feed it windows in order, activations [windows, positions, d_sae] with
    the BOS position left out."""

    def __init__(self, d_sae: int, n_ctx: int, device=None) -> None:
        self.n_ctx, self.limit = n_ctx, dead_windows(n_ctx)
        self.windows = 0
        self.fired = torch.zeros(d_sae, dtype=torch.bool, device=device)

    @property
    def complete(self) -> bool:
        return self.windows >= self.limit

    def update(self, acts: torch.Tensor) -> None:
        take = min(len(acts), self.limit - self.windows)
        if take > 0:
            self.fired.logical_or_(acts[:take].reshape(-1, acts.shape[-1]).ne(0).any(0).to(self.fired.device))
        self.windows += len(acts)

    def result(self) -> dict:
        """`dead_fraction`, its window `dead_tokens` (BOS positions counted, as `tokens`
        counts them; fewer than `DEAD_TOKENS` when fewer windows were seen) and the
        window length `dead_context`."""
        seen = min(self.windows, self.limit)
        return {"dead_fraction": dead_fraction(self.fired), "dead_tokens": seen * self.n_ctx,
                "dead_context": self.n_ctx}


def dead_windows(n_ctx: int) -> int:
    """Windows of `n_ctx` tokens in the dead-fraction window (as `TokenCorpus.windows`
    counts `max_tokens=DEAD_TOKENS`)."""
    return max(1, DEAD_TOKENS // n_ctx)


class StreamingReconstruction:
    """Explained variance and MSE over many batches, accumulated in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_x: torch.Tensor | None = None
        self.sum_sq = 0.0
        self.sum_err = 0.0
        self.sum_l0 = 0.0

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, acts: torch.Tensor | None = None) -> None:
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        s = x.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq += x.pow(2).sum().item()
        self.sum_err += (x - x_hat).pow(2).sum().item()
        if acts is not None:
            self.sum_l0 += (acts != 0).sum().item()

    def result(self) -> dict:
        d = self.sum_x.shape[0]
        total = self.sum_sq - self.sum_x.pow(2).sum().item() / self.n
        return {"mse": self.sum_err / (self.n * d), "explained_variance": 1.0 - self.sum_err / total,
                "l0": self.sum_l0 / self.n}


class FiringTracker:
    """Per-feature firing: tokens since last fired, density over a sampling window, and
    the first training step each feature fired at (-1: not yet)."""

    def __init__(self, d_sae: int, window: int) -> None:
        self.window = window
        self.since_fired = torch.zeros(d_sae, dtype=torch.long)
        self.counts = torch.zeros(d_sae, dtype=torch.long)
        self.first_fired = torch.full((d_sae,), -1, dtype=torch.long)
        self.tokens = 0
        self.last_density: torch.Tensor | None = None  # density over the last full window

    def update(self, acts, step: int = 0) -> None:
        """`acts`: a batch's activations [n, d_sae] or their `Codes`, of training `step`."""
        codes = as_codes(acts)
        self.update_counts(codes.last_row(), codes.counts(), codes.n_rows, step)

    def update_counts(self, last_row: torch.Tensor, counts: torch.Tensor, n: int, step: int = 0) -> None:
        """The same from a batch's summaries: per latent, the last row it fired on (-1:
        none) and its firing count, over `n` rows (a data-parallel run's whole batch)."""
        # the [d_sae] summaries come back to the CPU, where the tracker lives (on any device)
        last_row = last_row.cpu()
        any_fired = last_row >= 0
        # tokens since the last firing: the last firing row within this batch, if any
        self.since_fired = torch.where(any_fired, n - 1 - last_row, self.since_fired + n)
        self.first_fired = torch.where(any_fired & (self.first_fired < 0), step, self.first_fired)
        self.counts += counts.cpu()
        self.tokens += n
        if self.tokens >= self.window:
            self.last_density = self.counts.double() / self.tokens
            self.counts.zero_()
            self.tokens = 0

    def density(self) -> torch.Tensor:
        """Density over the last full window (or what there is so far)."""
        if self.last_density is not None:
            return self.last_density
        return self.counts.double() / max(1, self.tokens)

    def dead_fraction_window(self) -> float:
        """The quiet fraction: not fired in the last `window` training tokens (not "dead")."""
        return (self.since_fired >= self.window).double().mean().item()

    quiet_fraction = dead_fraction_window

    def dead_fraction_density(self) -> float:
        return (self.density() < DENSITY_THRESHOLD).double().mean().item()

    def state_dict(self) -> dict:
        return {"since_fired": self.since_fired, "counts": self.counts, "first_fired": self.first_fired,
                "tokens": torch.tensor(self.tokens),
                "last_density": self.last_density if self.last_density is not None else torch.empty(0)}

    def load_state_dict(self, sd: dict) -> None:
        self.since_fired, self.counts = sd["since_fired"].clone(), sd["counts"].clone()
        if "first_fired" in sd:  # checkpoints written before it was tracked lack it
            self.first_fired = sd["first_fired"].clone()
        self.tokens = int(sd["tokens"])
        self.last_density = sd["last_density"].clone() if sd["last_density"].numel() else None


def density_histogram(density: torch.Tensor) -> dict:
    """Histogram of log10 feature density; features that never fired are counted apart."""
    dead = int((density == 0).sum())
    logd = density[density > 0].double().log10().clamp(HIST_BINS[0].item(), HIST_BINS[-1].item())
    counts = torch.histc(logd.float(), bins=len(HIST_BINS) - 1, min=HIST_BINS[0].item(),
                         max=HIST_BINS[-1].item()) if logd.numel() else torch.zeros(len(HIST_BINS) - 1)
    return {"edges": HIST_BINS.tolist(), "counts": [int(c) for c in counts.tolist()], "never_fired": dead}


def ce_scores(ce_clean: float, ce_sae: float, ce_zero: float, kl_sae: float, kl_zero: float) -> dict:
    denom = ce_zero - ce_clean
    return {
        "ce_loss_clean": ce_clean, "ce_loss_with_sae": ce_sae, "ce_loss_zero_ablation": ce_zero,
        "ce_loss_score": (ce_zero - ce_sae) / denom if denom != 0 else math.nan,
        "kl_div_with_sae": kl_sae, "kl_div_zero_ablation": kl_zero,
        "kl_div_score": (kl_zero - kl_sae) / kl_zero if kl_zero != 0 else math.nan,
    }


def token_ce_and_kl(clean_logits: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor):
    """Summed next-token CE of `logits`, summed KL(clean || logits), and the token count."""
    lp = logits[:, :-1].double().log_softmax(-1)
    lp_clean = clean_logits[:, :-1].double().log_softmax(-1)
    target = tokens[:, 1:]
    ce = -lp.gather(-1, target.unsqueeze(-1)).sum().item()
    kl = (lp_clean.exp() * (lp_clean - lp)).sum().item()
    return ce, kl, target.numel()
