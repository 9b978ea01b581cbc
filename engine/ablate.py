"""Feature ablation with SAEs spliced in, exact and by attribution patching.

SAEs sit at `sites` (hooks in model order). At each site the activation `x` is
encoded to features `f = sae.encode(x)`; an intervention replaces `f` by `f'` and
the model continues from `x + sae.decode(f') - sae.decode(f)`, so the SAE's error
term `x - decode(f)` is kept. Going through the SAE's own `encode`/`decode` honours
every sae_lens architecture and option (TopK's `rescale_acts_by_decoder_norm`,
decoder rows of any norm, JumpReLU, `normalize_activations`, `hook_z` reshaping).
A site with no intervention returns its activation untouched, so with none at all
the model's output is bit-for-bit the clean output.

The error term (feature `ERROR`) is ablated like a feature, at the given positions
(default 1..target): `zero` removes it (the model continues from the
reconstruction), `scale` multiplies it, `mean` replaces it by the site's
`mean_error`; `value` is not defined for a vector. Position 0 (BOS) keeps its error.

Effects are measured on a *target*: a metric of the logits at one position
(`logit` of a token, `logit_diff` of two, or `loss` of a token), or one feature's
activation at a later site and position.

- `exact_effects`: one forward pass per candidate (the naive loop).
- `attribution_effects`: attribution patching, `(f' - f) . d target / d f` with the
  gradient taken through `sae.decode`, for every feature of a site from one forward
  and one backward pass; integrated gradients (`steps > 1`) averages the gradient
  along the straight path from `f` to `f'` for all features at once (Marks et al. 2024).

Notes
- An ablated feature is changed at every position of the prompt up to the target
  position unless positions are given; its effect is the total over positions.
- `mean` ablation uses the feature's mean activation over the index corpus (all
  tokens, zeros included); `value` clamps to a given number; `scale` multiplies.
- In `exact_effects`/`attribution_effects` the error term follows `mode` where it is
  defined for it (`zero`, `scale`, `mean` with a `mean_error`), else it is zeroed.
- Tensors follow the activation's device and dtype; the SAE computes in its own dtype.
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
    mean_error: torch.Tensor | None = None  # [d_in] or the hook's per-position shape, for the error term


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

    def _check(self, ivs) -> None:
        for iv in ivs:
            if iv.feature != ERROR:
                continue
            if iv.mode == "value":
                raise UserError("`value` ablation is not defined for the error term (a vector): "
                                "use zero, scale or mean")
            if iv.mode == "mean" and self.sites[iv.site].mean_error is None:
                raise UserError(f"mean ablation of the error term needs the site's mean error "
                                f"(Site.mean_error) for {self.sites[iv.site].name}")

    def _error_mode(self, site: int, mode: str) -> str:
        """The mode the error term is ablated with in the effect scans (see Notes)."""
        ok = mode == "scale" or (mode == "mean" and self.sites[site].mean_error is not None)
        return mode if ok else "zero"

    def _replace(self, site: int, iv: Intervention, col: torch.Tensor) -> torch.Tensor:
        if iv.mode == "zero":
            return torch.zeros_like(col)
        if iv.mode == "scale":
            return col * iv.value
        if iv.feature == ERROR:  # mean (checked): one vector for every position
            return self.sites[site].mean_error.to(col).reshape(col.shape[1:]).expand_as(col)
        if iv.mode == "mean":
            mean = self.sites[site].mean_acts
            if mean is None:
                raise UserError("mean ablation needs the SAE's feature index (run `saescope index`)")
            return torch.full_like(col, float(mean[iv.feature]))
        return torch.full_like(col, iv.value)

    def _new_f(self, site: int, f: torch.Tensor, ivs: list[Intervention], upto: int,
               error: bool = False) -> torch.Tensor:
        """The features after the feature interventions at `site`; with `error`, the
        error term (`f` is then the error, [T, ...]) after the error interventions."""
        f2 = f.clone()
        for iv in ivs:
            if iv.site != site or (iv.feature == ERROR) != error:
                continue
            pos = iv.positions if iv.positions is not None else list(range(1, upto + 1))
            if error:
                pos = [p for p in pos if p != 0]  # BOS keeps its error
                f2[pos] = self._replace(site, iv, f2[pos])
            else:
                f2[pos, iv.feature] = self._replace(site, iv, f2[pos, iv.feature])
        return f2

    def _splice(self, site: int, x: torch.Tensor, f: torch.Tensor, f2: torch.Tensor,
                ivs=(), upto: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`x + decode(f2) - decode(f)`, with the error interventions of `ivs` applied;
        and the error term `x - decode(f)`. One `decode` call for both (it may use
        state its `encode` left, e.g. a run-time norm)."""
        sae = self.sites[site].sae
        rec = sae.decode(torch.stack([f2, f]))
        err = x.to(rec.dtype) - rec[1].detach()
        delta = rec[0] - rec[1]
        if any(iv.site == site and iv.feature == ERROR for iv in ivs):
            delta = delta + self._new_f(site, err, ivs, upto, error=True) - err
        return x + delta.to(x.dtype), err

    def run(self, tokens: torch.Tensor, ivs: list[Intervention] = (), upto: int | None = None,
            job=None) -> Pass:
        """A forward pass with every intervention applied (no gradients); `job` (an
        `engine.jobs.Job`) is checked before every block."""
        upto = tokens.shape[1] - 1 if upto is None else upto
        self._check(ivs)
        seen: list[torch.Tensor | None] = [None] * len(self.sites)

        def make_hook(i: int):
            site = self.sites[i]
            mine = [iv for iv in ivs if iv.site == i]

            def hook(act, hook):
                x = act[0]
                f = site.sae.encode(x)
                f[0] = 0  # BOS: not what the SAEs were trained on
                seen[i] = f
                if not mine:
                    return act  # untouched: exact
                out, _ = self._splice(i, x, f, self._new_f(i, f, mine, upto), mine, upto)
                return out.unsqueeze(0)
            return hook

        with torch.no_grad():
            logits = self.lm.run_with_hooks(
                tokens, fwd_hooks=[(s.hook, make_hook(i)) for i, s in enumerate(self.sites)], job=job)
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
                      value: float = 0.0, job=None) -> dict[int, float]:
        """Change of the target when each feature (or ERROR) of `site` is ablated alone.
        `job` (an `engine.jobs.Job`) is checked between (and inside) the passes and
        gets progress as they go."""
        from engine.jobs import as_job

        job = as_job(job)
        self.check_target(tokens, target)
        message = f"ablating {len(features)} candidates at {self.sites[site].name}"
        job.progress(0.0, message, step=0, total=len(features))
        base = float(self.value(target, self.run(tokens, upto=target.position, job=job)))
        out = {}
        for n, f in enumerate(features, 1):
            job.check()
            m = self._error_mode(site, mode) if f == ERROR else mode
            p = self.run(tokens, [Intervention(site, f, m, value)], upto=target.position, job=job)
            out[f] = float(self.value(target, p)) - base
            job.progress(n / len(features), message, step=n, total=len(features))
        return out

    def attribution_effects(self, tokens, target: Target, site: int, mode: str = "zero", value: float = 0.0,
                            steps: int = 1, job=None) -> tuple[torch.Tensor, float]:
        """Estimated change of the target for every feature of `site` (and the error term).

        Returns `(effects [S], error_effect)`. `steps == 1` is attribution patching;
        `steps > 1` is integrated gradients with that many points on the path.
        `job` (an `engine.jobs.Job`) is checked between and inside the passes.
        """
        from engine.jobs import as_job

        job = as_job(job)
        self.check_target(tokens, target)
        if target.kind == "feature" and target.site <= site:
            raise UserError("a feature target must be at a later site than the features it is explained by")
        upto = target.position
        message = f"attribution at {self.sites[site].name}"
        job.progress(0.0, message, step=0, total=steps)
        clean = self.run(tokens, upto=upto, job=job)
        f = clean.acts[site]
        all_features = [Intervention(site, j, mode, value) for j in range(f.shape[1])]
        f_new = self._new_f(site, f, all_features, upto)
        grads = torch.zeros_like(f)
        err_grad, err = 0, None
        for k in range(steps):
            job.check()
            alpha = (k + 0.5) / steps if steps > 1 else 0.0
            g, eg, err = self._grad_at(tokens, target, site, f + alpha * (f_new - f), upto, job)
            grads += g / steps
            err_grad = err_grad + eg.to(err.dtype) / steps
            job.progress((k + 1) / steps, message, step=k + 1, total=steps)
        effects = ((f_new - f) * grads).sum(0)
        err_iv = Intervention(site, ERROR, self._error_mode(site, mode), value)
        err_effect = float(((self._new_f(site, err, [err_iv], upto, error=True) - err) * err_grad).sum())
        return effects, err_effect

    def _grad_at(self, tokens, target: Target, site: int, f_point: torch.Tensor, upto: int, job=None):
        """Gradient of the target w.r.t. the features of `site` (evaluated at `f_point`,
        through `sae.decode`) and w.r.t. an additive perturbation of the site's
        activation (for the error term); and the site's error term `x - decode(f)`."""
        leaf = f_point.detach().clone().requires_grad_(True)
        store = {}
        seen: list = [None] * len(self.sites)

        def make_hook(i: int):
            s = self.sites[i]

            def hook(act, hook):
                x = act[0]
                if i == site:
                    f = s.sae.encode(x).detach()
                    f[0] = 0
                    out, store["err"] = self._splice(i, x, f, leaf)
                    store["e"] = torch.zeros_like(x, requires_grad=True)
                    return (out + store["e"]).unsqueeze(0)
                if i > site:
                    seen[i] = s.sae.encode(x)
                return act
            return hook

        with torch.enable_grad():
            logits = self.lm.run_with_hooks(
                tokens, fwd_hooks=[(s.hook, make_hook(i)) for i, s in enumerate(self.sites)], job=job)
            value = self.value(target, Pass(logits[0], seen))
            g_f, g_e = torch.autograd.grad(value, [leaf, store["e"]], allow_unused=True)
        g_f = torch.zeros_like(leaf) if g_f is None else g_f
        g_e = torch.zeros_like(store["e"]) if g_e is None else g_e
        return g_f.detach(), g_e.detach(), store["err"].detach()
