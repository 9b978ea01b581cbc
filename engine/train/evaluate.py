"""Evaluation with the SAE spliced into the model: CE and KL scores, reconstruction.

`evaluate` takes a `reconstruct(x) -> (x_hat, feature_acts)` callable, so the same
code scores a finished sae_lens SAE and a training SAE mid-run (whose inputs are
still scaled).
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.train.metrics import StreamingReconstruction, ce_scores, token_ce_and_kl


def sae_reconstructor(sae, scale: float = 1.0) -> Callable:
    """`reconstruct` for an SAE whose inputs are multiplied by `scale` before encoding;
    `x` is [N, ...] (hook_z: [N, heads, d_head]) and `x_hat` comes back in its shape."""
    from engine.saes import encoder_input

    def reconstruct(x: torch.Tensor):
        acts = sae.encode(encoder_input(sae, x) * scale)
        return sae.decode(acts).reshape(x.shape) / scale, acts

    return reconstruct


LOGIT_BUDGET = 1 << 24  # logits (batch x window x vocabulary) held at once; three passes' worth


@torch.no_grad()
def evaluate(lm, hook: str, reconstruct: Callable, windows: torch.Tensor, d_sae: int,
             batch: int | None = None, check: Callable[[], None] = lambda: None) -> dict:
    """`batch` windows at a time (default: as many as keep the logits within
    `LOGIT_BUDGET` values, at most 32): a large vocabulary must not cost gigabytes."""
    model = lm.model
    batch = batch or max(1, min(32, LOGIT_BUDGET // (windows.shape[1] * model.cfg.d_vocab)))
    recon = StreamingReconstruction()
    device = next(model.parameters()).device
    fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
    totals = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0, "n": 0}

    def splice(act, hook):
        x = act[:, 1:].reshape(-1, *act.shape[2:])
        x_hat, acts = reconstruct(x)
        recon.update(x.reshape(len(x), -1), x_hat.reshape(len(x), -1), acts)
        fired.logical_or_(acts.reshape(-1, acts.shape[-1]).ne(0).any(0))
        out = act.clone()
        out[:, 1:] = x_hat.reshape(act[:, 1:].shape).to(act.dtype)
        return out

    def zero(act, hook):
        out = act.clone()
        out[:, 1:] = 0
        return out

    for i in range(0, len(windows), batch):
        check()
        tokens = windows[i:i + batch].to(device)
        clean = lm(tokens)
        with_sae = lm.run_with_hooks(tokens, fwd_hooks=[(hook, splice)])
        zeroed = lm.run_with_hooks(tokens, fwd_hooks=[(hook, zero)])
        ce_clean, _, n = token_ce_and_kl(clean, clean, tokens)
        ce_sae, kl_sae, _ = token_ce_and_kl(clean, with_sae, tokens)
        ce_zero, kl_zero, _ = token_ce_and_kl(clean, zeroed, tokens)
        for k, v in (("ce_clean", ce_clean), ("ce_sae", ce_sae), ("ce_zero", ce_zero),
                     ("kl_sae", kl_sae), ("kl_zero", kl_zero), ("n", n)):
            totals[k] += v
    n = totals["n"]
    scores = ce_scores(totals["ce_clean"] / n, totals["ce_sae"] / n, totals["ce_zero"] / n,
                       totals["kl_sae"] / n, totals["kl_zero"] / n)
    return {**scores, **recon.result(), "dead_fraction": 1.0 - fired.double().mean().item(),
            "tokens": int(windows.numel())}
