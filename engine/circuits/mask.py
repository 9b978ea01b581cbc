"""Circuits by a learned binary mask over SAE latents (seed 003), instead of thresholding
attribution scores: the circuit is chosen for the metric itself.

The mask: one logit `m` per (site, position, latent) over the task's fixed-length
prompts; position 0 (the BOS) always passes. The soft mask is `sigmoid(T * m)`. At
each site the features become `f' = mu + (f - mu) * sigmoid(T * m)`, with `mu` their
mean over the discovery examples' patch prompts per position (the very means the
evaluation ablates to); the error term is fixed at its mean, or with `clean_errors`
kept as it is (`SiteStack.masked`).

Training (all discovery rows in every step):
    loss = mean over rows of (m_masked - m_model)^2 / span^2  +  lambda * mean(sigmoid(T * m))
- `m_model`: the model's own metric per row (the SAEs with their error terms change
  nothing), the target a faithful circuit reproduces.
- `span`: m(M) - m(empty) on the discovery rows (everything mean-ablated), so that
  the first term is on the faithfulness scale and `lambda` means the same on any task.
- the sparsity term is the mean soft mask over every (site, position, latent).
- the temperature is annealed upward geometrically from `T_START` to `T_END`: soft
  early (every latent gets a gradient), nearly binary at the end (what is trained is
  what is kept).
- logits start at `INIT` (> 0: everything kept), so with lambda 0 nothing pushes a
  latent out and the circuit keeps (nearly) everything.
- Adam, learning rate `LR`, `steps` steps.
The circuit is the mask binarised at `m > 0`; its size is the number of (position,
latent) pairs kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from engine.circuits.stack import Keep, Metric, SiteStack, SiteState
from engine.protocol import MASK_STEPS as STEPS

T_START, T_END = 1.0, 50.0
INIT = 1.0
LR = 0.1
LAMBDAS = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]  # the sweep's grid: larger lambda, smaller circuit
PROGRESS_EVERY_S = 0.5
MASK_LAMBDA = 16.0  # the circuit shown without a sweep or a lambda


def temperature(step: int, steps: int) -> float:
    """The annealing schedule: geometric from `T_START` (step 0) to `T_END` (the last step)."""
    if steps <= 1:
        return T_END
    return T_START * (T_END / T_START) ** (step / (steps - 1))


@dataclass
class MaskResult:
    lam: float
    clean_errors: bool
    logits: list[torch.Tensor]  # per site [T, S]
    losses: list[float]  # the loss at every step
    sizes: list[int]  # latents with m > 0 at every step

    def keep(self) -> dict[int, Keep]:
        """The binarised circuit as what each site keeps (error terms: all, or none)."""
        out = {}
        for i, m in enumerate(self.logits):
            f = m > 0
            f[0] = False  # the BOS is never a node
            e = torch.full((m.shape[0],), self.clean_errors, dtype=torch.bool, device=m.device)
            out[i] = Keep(f, e)
        return out

    @property
    def size(self) -> int:
        return int(sum(int((m[1:] > 0).sum()) for m in self.logits))


def train_mask(stack: SiteStack, tokens: torch.Tensor, metric: Metric, means: list[SiteState], lam: float,
               clean_errors: bool = False, steps: int = STEPS, lr: float = LR, span: float | None = None,
               target: torch.Tensor | None = None, job=None) -> MaskResult:
    """Train one mask (see the module's notes). `span` and `target` (the model's metric per
    row) are computed when not given; pass them to share them across a sweep."""
    from engine.jobs import as_job

    job = as_job(job)
    if not (math.isfinite(lam) and lam >= 0):
        from engine.errors import UserError

        raise UserError(f"lambda is a number >= 0, got {lam}")
    T = tokens.shape[1]
    if target is None:
        target = stack.metric(tokens, metric, job)
    if span is None:
        span = empty_span(stack, tokens, metric, means, target, job)
    logits = [torch.full((T, m.f.shape[-1]), INIT, device=tokens.device, requires_grad=True) for m in means]
    opt = torch.optim.Adam(logits, lr=lr)
    bos = torch.zeros(T, 1, device=tokens.device)
    bos[0] = 1.0
    losses, sizes = [], []
    shown = -math.inf
    for step in range(steps):
        job.check()
        t = temperature(step, steps)
        soft = [torch.sigmoid(t * m) for m in logits]
        masks = {i: s * (1 - bos) + bos for i, s in enumerate(soft)}  # the BOS row passes whole
        value = stack.masked(tokens, metric, masks, means, clean_errors, job)
        fit = ((value - target) ** 2).mean() / span ** 2
        sparsity = torch.cat([s[1:].flatten() for s in soft]).mean()
        loss = fit + lam * sparsity
        opt.zero_grad()
        loss.backward()
        opt.step()
        size = sum(int((m.detach()[1:] > 0).sum()) for m in logits)
        losses.append(float(loss.detach()))
        sizes.append(size)
        if time.monotonic() - shown >= PROGRESS_EVERY_S or step == steps - 1:  # its message changes every step
            shown = time.monotonic()
            job.progress((step + 1) / steps, f"mask lambda {lam:g}: loss {losses[-1]:.4f}, {size} latents, "
                         f"T {t:.1f}", step=step + 1, total=steps, loss=losses[-1], size=size, temperature=t)
    return MaskResult(lam, clean_errors, [m.detach() for m in logits], losses, sizes)


def empty_span(stack: SiteStack, tokens: torch.Tensor, metric: Metric, means: list[SiteState],
               target: torch.Tensor, job=None) -> float:
    """m(M) - m(empty) on these rows (never below 1e-6 in size: a task the SAEs' means
    already solve has nothing to fit)."""
    T = tokens.shape[1]
    nothing = {i: Keep(torch.zeros(T, m.f.shape[-1], dtype=torch.bool, device=tokens.device),
                       torch.zeros(T, dtype=torch.bool, device=tokens.device)) for i, m in enumerate(means)}
    for k in nothing.values():
        k.e[0] = True
    empty = float(stack.ablated(tokens, metric, nothing, means, job=job).mean())
    span = float(target.mean()) - empty
    return span if abs(span) > 1e-6 else 1e-6
