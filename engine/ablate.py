"""Feature ablation with SAEs spliced in, exact and by attribution patching.

SAEs sit at `sites` (hooks in model order). At each site the activation `x` is
encoded to features `f`; an intervention replaces `f` by `f'` and the model
continues from `x + (f' - f) @ W_dec`, so the SAE's error term is kept and, with
no intervention, the model's output is bit-for-bit the clean output. Ablating
the error term itself continues from the reconstruction `x_hat + (f' - f) @ W_dec`.

Effects are measured on a *target*: a metric of the logits at one position
(`logit` of a token, `logit_diff` of two, or `loss` of a token), or one feature's
activation at a later site and position.

- `exact_effects`: one forward pass per candidate (the naive loop).
- `attribution_effects`: attribution patching, `(f' - f) . d target / d f`, for
  every feature of a site from one forward and one backward pass; integrated
  gradients (`steps > 1`) averages the gradient along the straight path from `f`
  to `f'` for all features at once (Marks et al. 2024).

Notes
- An ablated feature is changed at every position of the prompt up to the target
  position unless positions are given; its effect is the total over positions.
- `mean` ablation uses the feature's mean activation over the index corpus (all
  tokens, zeros included); `value` clamps to a given number; `scale` multiplies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from engine.errors import UserError

ERROR = -1  # the feature id of a site's error term

# Where each hook of a block runs, in order (TransformerLens's hook_dict is not in run order).
_BLOCK_ORDER = ["hook_resid_pre", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input",
                "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores", "attn.hook_pattern",
                "attn.hook_z", "attn.hook_result", "hook_attn_out", "hook_resid_mid", "hook_mlp_in",
                "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear",
                "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]


def hook_order(hook: str) -> tuple:
    """A sort key that puts hooks in the order the forward pass reaches them."""
    import re

    m = re.match(r"blocks\.(\d+)\.(.+)$", hook)
    if m:
        rest = m.group(2)
        return (int(m.group(1)), _BLOCK_ORDER.index(rest) if rest in _BLOCK_ORDER else len(_BLOCK_ORDER))
    return (-1, 0) if hook.startswith(("hook_embed", "hook_pos_embed", "hook_tokens")) else (1 << 30, 0)


@dataclass
class Site:
    name: str  # a short label, e.g. "resid_mid"
    hook: str
    sae: object
    mean_acts: torch.Tensor | None = None  # [S] mean over corpus tokens, for `mean` ablation


@dataclass(frozen=True)
class Target:
    kind: Literal["logit", "logit_diff", "loss", "feature"]
    position: int  # index into the prompt's tokens, BOS included
    token: int | None = None
    other: int | None = None  # logit_diff: token - other
    site: int | None = None  # feature targets
    feature: int | None = None


@dataclass
class Intervention:
    site: int
    feature: int  # or ERROR
    mode: Literal["zero", "mean", "value", "scale"] = "zero"
    value: float = 0.0
    positions: list[int] | None = None  # None: every position up to the target


@dataclass
class Pass:
    """What one forward pass with SAEs spliced in saw."""

    logits: torch.Tensor  # [T, V]
    acts: list[torch.Tensor] = field(default_factory=list)  # per site, [T, S] after upstream changes


class Splice:
    def __init__(self, lm, sites: list[Site]):
        if not sites:
            raise UserError("ablation needs at least one SAE site")
        for s in sites:
            if s.hook not in lm.model.hook_dict:
                raise UserError(f"hook {s.hook!r} does not exist in {lm.name}")
        idx = [hook_order(s.hook) for s in sites]
        if idx != sorted(idx) or len(set(idx)) != len(idx):
            raise UserError("SAE sites must be distinct and in model order (upstream first): "
                            + ", ".join(s.hook for s in sites))
        self.lm, self.sites = lm, sites

    def _new_f(self, site: int, f: torch.Tensor, ivs: list[Intervention], upto: int) -> torch.Tensor:
        f2 = f.clone()
        for iv in ivs:
            if iv.site != site or iv.feature == ERROR:
                continue
            pos = iv.positions if iv.positions is not None else list(range(1, upto + 1))
            col = f2[pos, iv.feature]
            if iv.mode == "zero":
                new = torch.zeros_like(col)
            elif iv.mode == "mean":
                mean = self.sites[site].mean_acts
                if mean is None:
                    raise UserError("mean ablation needs the SAE's feature index (run `saescope index`)")
                new = torch.full_like(col, float(mean[iv.feature]))
            elif iv.mode == "value":
                new = torch.full_like(col, iv.value)
            else:
                new = col * iv.value
            f2[pos, iv.feature] = new
        return f2

    def run(self, tokens: torch.Tensor, ivs: list[Intervention] = (), upto: int | None = None) -> Pass:
        """A forward pass with every intervention applied (no gradients)."""
        upto = tokens.shape[1] - 1 if upto is None else upto
        seen: list[torch.Tensor | None] = [None] * len(self.sites)

        def make_hook(i: int):
            site = self.sites[i]

            def hook(act, hook):
                x = act[0]
                f = site.sae.encode(x)
                f[0] = 0  # BOS: not what the SAEs were trained on
                seen[i] = f
                f2 = self._new_f(i, f, ivs, upto)
                out = x + (f2 - f) @ site.sae.W_dec
                if any(iv.site == i and iv.feature == ERROR for iv in ivs):
                    err = x - site.sae.decode(f)
                    err[0] = 0
                    out = out - err
                return out.unsqueeze(0)
            return hook

        with torch.no_grad():
            logits = self.lm.run_with_hooks(
                tokens, fwd_hooks=[(s.hook, make_hook(i)) for i, s in enumerate(self.sites)])
        return Pass(logits[0], seen)

    # ---- targets ---------------------------------------------------------------
    @staticmethod
    def value(target: Target, p: Pass) -> torch.Tensor:
        if target.kind == "feature":
            return p.acts[target.site][target.position, target.feature]
        logits = p.logits[target.position]
        if target.kind == "logit":
            return logits[target.token]
        if target.kind == "logit_diff":
            return logits[target.token] - logits[target.other]
        return -logits.double().log_softmax(-1)[target.token]  # loss

    def check_target(self, tokens: torch.Tensor, target: Target) -> None:
        T = tokens.shape[1]
        if not 1 <= target.position < T:
            raise UserError(f"position {target.position} is beyond the prompt (positions 1..{T - 1})")
        if target.kind == "feature":
            if target.site is None or not 0 <= target.site < len(self.sites):
                raise UserError("a feature target needs a valid site")
            if not 0 <= target.feature < self.sites[target.site].sae.cfg.d_sae:
                raise UserError(f"feature {target.feature} is out of range for site {self.sites[target.site].name}")
        else:
            V = self.lm.model.cfg.d_vocab
            for t in (target.token, target.other if target.kind == "logit_diff" else 0):
                if t is None or not 0 <= t < V:
                    raise UserError(f"token id {t} is out of range")

    # ---- effects ------------------------------------------------------------
    def exact_effects(self, tokens, target: Target, site: int, features: list[int], mode: str = "zero",
                      value: float = 0.0) -> dict[int, float]:
        """Change of the target when each feature (or ERROR) of `site` is ablated alone."""
        self.check_target(tokens, target)
        base = float(self.value(target, self.run(tokens, upto=target.position)))
        out = {}
        for f in features:
            p = self.run(tokens, [Intervention(site, f, mode, value)], upto=target.position)
            out[f] = float(self.value(target, p)) - base
        return out

    def attribution_effects(self, tokens, target: Target, site: int, mode: str = "zero", value: float = 0.0,
                            steps: int = 1) -> tuple[torch.Tensor, float]:
        """Estimated change of the target for every feature of `site` (and the error term).

        Returns `(effects [S], error_effect)`. `steps == 1` is attribution patching;
        `steps > 1` is integrated gradients with that many points on the path.
        """
        self.check_target(tokens, target)
        if target.kind == "feature" and target.site <= site:
            raise UserError("a feature target must be at a later site than the features it is explained by")
        upto = target.position
        clean = self.run(tokens, upto=upto)
        f = clean.acts[site]
        all_features = [Intervention(site, j, mode, value) for j in range(f.shape[1])]
        f_new = self._new_f(site, f, all_features, upto)
        grads = torch.zeros_like(f)
        err_grad = None
        for k in range(steps):
            alpha = (k + 0.5) / steps if steps > 1 else 0.0
            g, eg = self._grad_at(tokens, target, site, f + alpha * (f_new - f), upto)
            grads += g / steps
            err_grad = eg if err_grad is None else err_grad + eg
        effects = ((f_new - f) * grads).sum(0)
        x_err = self._error(tokens, site)
        err_effect = float(-(x_err * err_grad / steps)[1:upto + 1].sum())
        return effects, err_effect

    def _error(self, tokens, site: int) -> torch.Tensor:
        store = {}

        def hook(act, hook):
            x = act[0]
            store["err"] = x - self.sites[site].sae.decode(self.sites[site].sae.encode(x))
            return act
        with torch.no_grad():
            self.lm.run_with_hooks(tokens, fwd_hooks=[(self.sites[site].hook, hook)],
                                         stop_at_layer=None)
        return store["err"]

    def _grad_at(self, tokens, target: Target, site: int, f_point: torch.Tensor, upto: int):
        """Gradient of the target w.r.t. the features of `site` (evaluated at `f_point`)
        and w.r.t. an additive perturbation of the site's activation (for the error term)."""
        leaf = f_point.detach().clone().requires_grad_(True)
        err_leaf = {}
        seen: list = [None] * len(self.sites)

        def make_hook(i: int):
            s = self.sites[i]

            def hook(act, hook):
                x = act[0]
                if i == site:
                    f = s.sae.encode(x).detach()
                    f[0] = 0
                    e = torch.zeros_like(x, requires_grad=True)
                    err_leaf["e"] = e
                    return (x + (leaf - f) @ s.sae.W_dec + e).unsqueeze(0)
                if i > site:
                    f = s.sae.encode(x)
                    seen[i] = f
                return act
            return hook

        with torch.enable_grad():
            logits = self.lm.run_with_hooks(
                tokens, fwd_hooks=[(s.hook, make_hook(i)) for i, s in enumerate(self.sites)])
            value = self.value(target, Pass(logits[0], seen))
            g_f, g_e = torch.autograd.grad(value, [leaf, err_leaf["e"]], allow_unused=True)
        return g_f.detach(), g_e.detach()
