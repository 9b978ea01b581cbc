"""SAE sites spliced into a model for circuit work: the forward passes every circuit method needs.

A `SiteStack` holds an ordered list of SAE sites (`engine.ablate.Site`, upstream
first) on one model. At a site the activation `x` [B, T, d] splits into features
`f = encode(x)` and the error term `e = x - decode(f)`; the nodes of a circuit are
(site, feature, position) and (site, error, position), and position 0 (the BOS) is
never a node: its activation always passes untouched.

The passes:
- `states`: the features and error terms at every site, no intervention.
- `gradients`: the metric's gradient w.r.t. every site's features (through
  `decode`) and error term, all sites at once, each site's upstream gradient
  flowing through the model as if the SAEs were not there (`x` passes through,
  `decode(f) - decode(f).detach()` and a zero error leaf only add gradient).
  With `direct`, each site's `x` is detached instead: the gradient a site gets is
  then only what reaches the metric without passing another site (direct edges).
- `interpolated_gradients`: one site set to a point between its clean and patch
  state (integrated gradients), the others untouched.
- `ablated`: the metric with given nodes kept and the rest mean-ablated
  (faithfulness and completeness).
- `masked`: the same with soft masks, differentiable (mask circuits).
- `patched`: the metric with a node set to its patch value and other sites held
  (exact node and edge effects).

Notes
- The metric (`Metric`) is computed at the last position from the logits there alone.
- Every pass checks `job` before every block (`LoadedModel.run_with_hooks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.ablate import Site, Splice


@dataclass
class Metric:
    """`logit(patch_answer) - logit(clean_answer)` per row, or the answer's logit alone
    when `patch_answers` is None."""

    clean_answers: torch.Tensor  # [B]
    patch_answers: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        value = logits[rows, self.clean_answers]
        return value if self.patch_answers is None else logits[rows, self.patch_answers] - value

    def repeat(self, n: int) -> "Metric":
        return Metric(self.clean_answers.repeat(n), None if self.patch_answers is None else self.patch_answers.repeat(n))


@dataclass
class SiteState:
    """Features [B, T, S] and error terms [B, T, d] of one site."""

    f: torch.Tensor
    e: torch.Tensor

    def mean(self) -> "SiteState":
        return SiteState(self.f.mean(0, keepdim=True), self.e.mean(0, keepdim=True))

    def zeros(self) -> "SiteState":
        return SiteState(torch.zeros_like(self.f[:1]), torch.zeros_like(self.e[:1]))

    def expand(self, rows: int) -> "SiteState":
        """A one-row state (a mean) broadcast to `rows` rows; a full state as it is."""
        if self.f.shape[0] == rows:
            return self
        return SiteState(self.f.expand(rows, *self.f.shape[1:]), self.e.expand(rows, *self.e.shape[1:]))


@dataclass
class Keep:
    """What a site keeps in an ablated pass: features [T, S] (or [S], every position)
    and error terms [T] (or a bool for every position); None keeps all of it.
    What is not kept takes its `replace` value (the mean)."""

    f: torch.Tensor | None = None
    e: torch.Tensor | bool | None = None


class SiteStack:
    def __init__(self, lm, sites: list[Site]):
        Splice(lm, sites)  # checks: hooks exist, sites distinct and in model order
        self.lm, self.sites = lm, sites

    @property
    def hooks(self) -> list[str]:
        return [s.hook for s in self.sites]

    def _split(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sae = self.sites[i].sae
        f = sae.encode(x)
        return f, x - sae.decode(f)

    def _run(self, tokens: torch.Tensor, hooks: list, job=None, last_site: int | None = None) -> torch.Tensor | None:
        """The logits at the last position [B, V], or, with `last_site`, only the blocks
        up to that site (no logits)."""
        kwargs = {}
        if last_site is not None:
            from engine.ablate import hook_order

            block = hook_order(self.sites[last_site].hook)[0]
            if 0 <= block < self.lm.model.cfg.n_layers:
                kwargs["stop_at_layer"] = block + 1
            else:
                kwargs["return_type"] = None
        model = self.lm.model
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        if last_site is None and last in model.hook_dict and model.cfg.output_logits_soft_cap <= 0:
            # only the last position's logits are read: the final norm and unembedding of
            # that row alone (both act per position), not [B, T, d_vocab]
            final: dict = {}

            def grab(act, hook):
                final["x"] = act[:, -1:]

            self.lm.run_with_hooks(tokens, fwd_hooks=[*hooks, (last, grab)], job=job, stop_at_layer=model.cfg.n_layers)
            x = final["x"] if model.cfg.normalization_type is None else model.ln_final(final["x"])
            return model.unembed(x)[:, 0]
        out = self.lm.run_with_hooks(tokens, fwd_hooks=hooks, job=job, **kwargs)
        return None if last_site is not None else out[:, -1]

    # ---- plain passes -----------------------------------------------------------
    def states(self, tokens: torch.Tensor, job=None) -> tuple[list[SiteState], torch.Tensor]:
        """Every site's features and error terms on `tokens`, and the last logits."""
        seen: list[SiteState | None] = [None] * len(self.sites)

        def grab(i):
            def hook(act, hook):
                seen[i] = SiteState(*self._split(i, act))
            return hook

        with torch.no_grad():
            logits = self._run(tokens, [(s.hook, grab(i)) for i, s in enumerate(self.sites)], job)
        return seen, logits

    def metric(self, tokens: torch.Tensor, metric: Metric, job=None) -> torch.Tensor:
        """The model's own metric per row (no SAE touches the pass)."""
        with torch.no_grad():
            return metric(self._run(tokens, [], job))

    # ---- gradients ----------------------------------------------------------------
    def gradients(self, tokens: torch.Tensor, metric: Metric, direct: bool = False, job=None
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[SiteState]]:
        """Gradients of the metric (summed over rows) w.r.t. each site's features
        [B, T, S] and error term [B, T, d], and the sites' clean states; see the
        module's notes for `direct`."""
        leaves: list[tuple] = []
        states: list[SiteState] = []

        def splice(i):
            sae = self.sites[i].sae

            def hook(act, hook):
                with torch.no_grad():
                    f, e = self._split(i, act)
                states.append(SiteState(f, e))
                lf = f.clone().requires_grad_(True)
                le = torch.zeros_like(act, requires_grad=True)
                leaves.append((lf, le))
                rec = sae.decode(lf)
                return (act.detach() if direct else act) + (rec - rec.detach()) + le
            return hook

        with torch.enable_grad():
            value = metric(self._run(tokens, [(s.hook, splice(i)) for i, s in enumerate(self.sites)], job)).sum()
            flat = [t for pair in leaves for t in pair]
            grads = torch.autograd.grad(value, flat, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, flat)]
        return grads[0::2], grads[1::2], states

    def edge_graph(self, tokens: torch.Tensor, downstream: int, job=None):
        """A forward pass kept for many backward passes: the leaves of the sites before
        `downstream` (each site's `x` detached, so only direct paths count) and
        `downstream`'s features with their graph. Returns `(leaves, f_down)`;
        `leaves[i] = (features, error)` leaf tensors of site i. Call it under
        `torch.enable_grad()`."""
        leaves: list[tuple] = []
        target: dict = {}

        def splice(i):
            sae = self.sites[i].sae

            def hook(act, hook):
                if i == downstream:
                    target["f"] = sae.encode(act)
                    return act
                with torch.no_grad():
                    f, _ = self._split(i, act)
                lf = f.clone().requires_grad_(True)
                le = torch.zeros_like(act, requires_grad=True)
                leaves.append((lf, le))
                rec = sae.decode(lf)
                return act.detach() + (rec - rec.detach()) + le
            return hook

        hooks = [(s.hook, splice(i)) for i, s in enumerate(self.sites[:downstream + 1])]
        self._run(tokens, hooks, job, last_site=downstream)
        return leaves, target["f"]

    def interpolated_gradients(self, tokens: torch.Tensor, metric: Metric, site: int, clean: SiteState,
                               patch: SiteState, alphas: list[float], job=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrated gradients at one site: the metric's gradient w.r.t. the site's
        features and error term with the site set to `clean + alpha * (patch - clean)`,
        averaged over `alphas`; the other sites pass untouched. All points run in one
        batch (rows: alpha-major). Returns ([B, T, S], [B, T, d])."""
        B, k = tokens.shape[0], len(alphas)
        a = torch.tensor(alphas, dtype=clean.f.dtype, device=clean.f.device).repeat_interleave(B)
        lf = (clean.f.repeat(k, 1, 1) + a[:, None, None] * (patch.f - clean.f).repeat(k, 1, 1)).requires_grad_(True)
        le = (clean.e.repeat(k, 1, 1) + a[:, None, None] * (patch.e - clean.e).repeat(k, 1, 1)).requires_grad_(True)
        sae = self.sites[site].sae

        def hook(act, hook):
            out = sae.decode(lf) + le
            return torch.cat([act[:, :1], out[:, 1:]], 1)  # the BOS passes untouched

        with torch.enable_grad():
            value = metric.repeat(k)(self._run(tokens.repeat(k, 1), [(self.sites[site].hook, hook)], job)).sum()
            gf, ge = torch.autograd.grad(value, [lf, le])
        return gf.reshape(k, B, *gf.shape[1:]).mean(0), ge.reshape(k, B, *ge.shape[1:]).mean(0)

    # ---- ablated passes -------------------------------------------------------------
    def ablated(self, tokens: torch.Tensor, metric: Metric, keep: dict[int, Keep], replace: list[SiteState],
                job=None) -> torch.Tensor:
        """The metric per row with, at each site `i` in `keep`, the features and error
        terms `keep[i]` does not keep replaced by `replace[i]` (broadcast over rows).
        Sites not in `keep` pass untouched."""

        def splice(i):
            sae, k = self.sites[i].sae, keep[i]

            def hook(act, hook):
                f, e = self._split(i, act)
                if k.f is not None:
                    mask = k.f if k.f.dim() == 2 else k.f.expand(f.shape[1], -1)
                    f = torch.where(mask, f, replace[i].f.expand_as(f))
                if k.e is not None:
                    mask = torch.as_tensor(k.e, device=e.device)
                    mask = mask.expand(e.shape[1]) if mask.dim() == 0 else mask
                    e = torch.where(mask[:, None], e, replace[i].e.expand_as(e))
                out = sae.decode(f) + e
                return torch.cat([act[:, :1], out[:, 1:]], 1)
            return hook

        hooks = [(s.hook, splice(i)) for i, s in enumerate(self.sites) if i in keep]
        with torch.no_grad():
            return metric(self._run(tokens, hooks, job))

    def masked(self, tokens: torch.Tensor, metric: Metric, masks: dict[int, torch.Tensor], means: list[SiteState],
               clean_errors: bool = False, job=None) -> torch.Tensor:
        """The metric per row, differentiable in `masks`: at each site `i` in `masks` the
        features become `mu + (f - mu) * masks[i]` (soft masks [T, S], means `means[i]`)
        and the error term its mean, or, with `clean_errors`, stays as it is. Gradients
        flow through every site (an upstream mask reaches a downstream site's features)."""

        def splice(i):
            sae, mask, mu = self.sites[i].sae, masks[i], means[i]

            def hook(act, hook):
                f, e = self._split(i, act)
                f = mu.f + (f - mu.f) * mask
                out = sae.decode(f) + (e if clean_errors else mu.e.expand_as(e))
                return torch.cat([act[:, :1], out[:, 1:]], 1)  # the BOS passes untouched
            return hook

        hooks = [(s.hook, splice(i)) for i, s in enumerate(self.sites) if i in masks]
        with torch.enable_grad():
            return metric(self._run(tokens, hooks, job))

    def patched(self, tokens: torch.Tensor, metric: Metric, site: int, delta, freeze: dict[int, object] | None = None,
                job=None) -> torch.Tensor:
        """The metric per row with `delta(x, f) -> change of x` added at `site` (a node set
        to its patch value) and the sites in `freeze` replaced by `freeze[i](x)`."""
        freeze = freeze or {}

        def at_site(act, hook):
            f, _ = self._split(site, act)
            return act + delta(act, f)

        def frozen(i):
            return lambda act, hook: freeze[i](act)

        hooks = [(self.sites[site].hook, at_site)] + [(self.sites[i].hook, frozen(i)) for i in freeze]
        hooks.sort(key=lambda h: self.hooks.index(h[0]))
        with torch.no_grad():
            return metric(self._run(tokens, hooks, job))
