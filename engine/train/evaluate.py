"""Evaluation with the SAE spliced into the model: CE and KL scores, reconstruction.

`evaluate` takes a `reconstruct(x) -> (x_hat, feature_acts)` callable, so the same
code scores a finished sae_lens SAE and a training SAE mid-run (whose inputs are
still scaled).
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.train.metrics import HeldOutFiring, StreamingReconstruction, ce_scores, token_ce_and_kl


def sae_reconstructor(sae, scale: float = 1.0) -> Callable:
    """`reconstruct` for an SAE whose inputs are multiplied by `scale` before encoding;
    `x` is [N, ...] (hook_z: [N, heads, d_head]) and `x_hat` comes back in its shape."""
    from engine.saes import encoder_input

    def reconstruct(x: torch.Tensor):
        acts = sae.encode(encoder_input(sae, x) * scale)
        return sae.decode(acts).reshape(x.shape) / scale, acts

    reconstruct.encode = lambda x: sae.encode(encoder_input(sae, x) * scale)  # the dead-fraction pass
    return reconstruct


LOGIT_BUDGET = 1 << 24  # logits (batch x window x vocabulary) held at once; three passes' worth


@torch.no_grad()
def evaluate(lm, hook: str, reconstruct: Callable, windows: torch.Tensor, d_sae: int,
             batch: int | None = None, check: Callable[[], None] | None = None, job=None,
             dead_windows: torch.Tensor | None = None) -> dict:
    """`batch` windows at a time (default: as many as keep the logits within
    `LOGIT_BUDGET` values, at most 32): a large vocabulary must not cost gigabytes.
    `job` (an `engine.jobs.Job`; `check`: the older callable, folded in) is checked
    before every block of every pass and gets progress after every batch.

    The dead fraction follows its one rule (`engine.figures`): never fired on the
    first `DEAD_TOKENS` held-out tokens. `dead_windows` are those windows
    (`corpus.windows(n_ctx, split="held_out", max_tokens=DEAD_TOKENS)`); the ones beyond `windows` get an
    encode-only pass. Without them the dead fraction is measured on `windows` alone
    and `dead_tokens` in the result says on how many tokens."""
    from engine.jobs import as_job

    job = as_job(job, check=check)
    model = lm.model
    batch = batch or max(1, min(32, LOGIT_BUDGET // (windows.shape[1] * model.cfg.d_vocab)))
    recon = StreamingReconstruction()
    device = next(model.parameters()).device
    firing = HeldOutFiring(d_sae, windows.shape[1], device)
    totals = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0, "n": 0}

    def splice(act, hook):
        x = act[:, 1:].reshape(-1, *act.shape[2:])
        x_hat, acts = reconstruct(x)
        recon.update(x.reshape(len(x), -1), x_hat.reshape(len(x), -1), acts)
        firing.update(acts.reshape(act.shape[0], act.shape[1] - 1, acts.shape[-1]))
        out = act.clone()
        out[:, 1:] = x_hat.reshape(act[:, 1:].shape).to(act.dtype)
        return out

    def zero(act, hook):
        out = act.clone()
        out[:, 1:] = 0
        return out

    message = f"evaluating on {windows.numel():,} tokens"
    job.progress(0.0, message, step=0, total=len(windows))
    for i in range(0, len(windows), batch):
        job.check()
        tokens = windows[i:i + batch].to(device)
        clean = lm(tokens, job=job)
        with_sae = lm.run_with_hooks(tokens, fwd_hooks=[(hook, splice)], job=job)
        zeroed = lm.run_with_hooks(tokens, fwd_hooks=[(hook, zero)], job=job)
        ce_clean, _, n = token_ce_and_kl(clean, clean, tokens)
        ce_sae, kl_sae, _ = token_ce_and_kl(clean, with_sae, tokens)
        ce_zero, kl_zero, _ = token_ce_and_kl(clean, zeroed, tokens)
        for k, v in (("ce_clean", ce_clean), ("ce_sae", ce_sae), ("ce_zero", ce_zero),
                     ("kl_sae", kl_sae), ("kl_zero", kl_zero), ("n", n)):
            totals[k] += v
        done = min(len(windows), i + batch)
        job.progress(done / len(windows), message, step=done, total=len(windows))
    n = totals["n"]
    scores = ce_scores(totals["ce_clean"] / n, totals["ce_sae"] / n, totals["ce_zero"] / n,
                       totals["kl_sae"] / n, totals["kl_zero"] / n)
    if dead_windows is not None and not firing.complete:
        if dead_windows.shape[1] == windows.shape[1] and torch.equal(dead_windows[:len(windows)], windows):
            held_out_firing(lm, hook, reconstruct, dead_windows[len(windows):], firing, job=job)
        else:  # other windows (another context): the whole dead window on its own
            firing = held_out_firing(lm, hook, reconstruct, dead_windows,
                                     HeldOutFiring(d_sae, dead_windows.shape[1], device), job=job)
    return {**scores, **recon.result(), **firing.result(), "tokens": int(windows.numel())}


@torch.no_grad()
def held_out_firing(lm, hook: str, reconstruct: Callable, windows: torch.Tensor, firing: HeldOutFiring,
                    job=None, batch: int = 32) -> HeldOutFiring:
    """Feed `firing` the SAE's activations on `windows` (the model run only up to the
    hook's block; the SAE's encoder only, where `reconstruct` has one)."""
    from engine.index import _stop_layer
    from engine.jobs import as_job

    job = as_job(job)
    encode = getattr(reconstruct, "encode", None) or (lambda x: reconstruct(x)[1])
    device = next(lm.model.parameters()).device
    message = f"dead features on {min(len(windows), firing.limit) * windows.shape[1]:,} held-out tokens"
    n = min(len(windows), max(0, firing.limit - firing.windows))
    for i in range(0, n, batch):
        job.check()
        tokens = windows[i:min(n, i + batch)].to(device)
        _, cache = lm.run_with_cache(tokens, names_filter=[hook], stop_at_layer=_stop_layer(hook), job=job)
        x = cache[hook][:, 1:]
        acts = encode(x.reshape(-1, *x.shape[2:]))
        firing.update(acts.reshape(len(tokens), x.shape[1], -1))
        job.progress(min(n, i + batch) / n, message, step=min(n, i + batch), total=n)
    return firing


def measure_dead(lm, sae, hook: str, corpus, n_ctx: int, job=None) -> dict:
    """The dead fraction of a saved SAE by its rule, with `dead_tokens` and
    `dead_context` (what the Inspector shows when no saved evaluation holds it)."""
    from engine.figures import DEAD_TOKENS

    windows = corpus.windows(n_ctx, split="held_out", max_tokens=DEAD_TOKENS)
    device = next(lm.model.parameters()).device
    firing = held_out_firing(lm, hook, sae_reconstructor(sae), windows,
                             HeldOutFiring(sae.cfg.d_sae, n_ctx, device), job=job)
    return firing.result()
