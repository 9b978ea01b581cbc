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

- `exact_effects`: each candidate ablated alone, many per forward pass: the batch
  dimension holds one ablation a row (`run_rows`), beside a clean row to measure against.
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
- Batched passes and attribution run the prompt only up to the target position (the
  model is causal) and read the logits there alone. The model before the ablated site
  runs once; the site's hook fans its activation out to the rows, only at the target
  position where no attention follows before what is measured (`_last_only`: on a
  1-layer model, every tree node). A pass holds as many rows as `Splice.batch_bytes`
  allows (`rows_per_pass`); more candidates take more passes.
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


# Hooks inside attention where queries, keys and values part ways: rows fanned out there
# would meet a single row of the others, so a batched pass starts with every row.
_HEAD_MIXING = ("hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_attn_scores", "attn.hook_pattern")

BATCH_BYTES = 256 << 20  # what a batched pass of ablations may hold at once (see `Splice.rows_per_pass`)


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


@dataclass
class Rows:
    """What one batched pass (`Splice.run_rows`) saw at the target position, a row per ablation."""

    logits: torch.Tensor | None  # [B, V]
    acts: dict[int, torch.Tensor]  # site index -> [B, S], for the sites measured


class Splice:
    batch_bytes = BATCH_BYTES

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
            if iv.site == site and (iv.feature == ERROR) == error:
                self._apply(site, f2, iv, upto)
        return f2

    def _apply(self, site: int, f: torch.Tensor, iv: Intervention, upto: int) -> None:
        """Apply one intervention to `f` in place: the features [T, S] of `site`, or for
        the error term its error [T, ...]."""
        pos = slice(1, upto + 1) if iv.positions is None else iv.positions  # a slice: cheap in the batch loop
        if iv.feature != ERROR:
            f[pos, iv.feature] = self._replace(site, iv, f[pos, iv.feature])
            return
        if iv.positions is not None:
            pos = [p for p in pos if p != 0]  # BOS keeps its error
        f[pos] = self._replace(site, iv, f[pos])

    def _ablate_all(self, site: int, f: torch.Tensor, mode: str, value: float, upto: int) -> torch.Tensor:
        """`f` with every feature of `site` ablated at positions 1..upto: what `_new_f`
        gives for one intervention per feature, in one tensor operation (attribution
        needs it for all d_sae features, where a loop over them costs more than the pass)."""
        f2 = f.clone()
        rows = f2[1:upto + 1]
        if mode == "zero":
            rows.zero_()
        elif mode == "scale":
            rows.mul_(value)
        elif mode == "mean":
            mean = self.sites[site].mean_acts
            if mean is None:
                raise UserError("mean ablation needs the SAE's feature index (run `saescope index`)")
            rows.copy_(mean.to(rows).expand_as(rows))
        else:
            rows.fill_(value)
        return f2

    def _splice(self, site: int, x: torch.Tensor, fs: torch.Tensor, ivs=(), upto: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """`x + decode(fs[r]) - decode(f)` for each row r of `fs` [B + 1, T, S] but the last,
        which is the clean features `f`, with the error interventions of `ivs[r]` applied
        to row r: [B, T, ...]; and the error term `x - decode(f)`. One `decode` call for
        all rows (it may use state its `encode` left, e.g. a run-time norm)."""
        sae = self.sites[site].sae
        rec = sae.decode(fs)
        err = x.to(rec.dtype) - rec[-1].detach()
        delta = rec[:-1] - rec[-1]
        for r, row in enumerate(ivs):
            if any(iv.site == site and iv.feature == ERROR for iv in row):
                delta[r] = delta[r] + self._new_f(site, err, row, upto, error=True) - err
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
                out, _ = self._splice(i, x, torch.stack([self._new_f(i, f, mine, upto), f]), [mine], upto)
                return out
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
        return Splice.logit_value(target, p.logits[target.position])

    @staticmethod
    def logit_value(target: Target, logits: torch.Tensor) -> torch.Tensor:
        """A logit target read from the logits at its position, [..., V] -> [...]."""
        if target.kind == "logit":
            return logits[..., target.token]
        if target.kind == "logit_diff":
            return logits[..., target.token] - logits[..., target.other]
        return -logits.double().log_softmax(-1)[..., target.token]  # loss

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

    # ---- batched passes -----------------------------------------------------------
    def rows_per_pass(self, tokens: int, site: int, positions: int | None = None) -> int:
        """How many rows (ablations) one batched pass over `tokens` positions holds under
        `batch_bytes`, at least two (the clean row and one more), where a row carries
        `positions` of them (default all) from `site` on. A rough count of a row's largest
        live tensors: its features and reconstruction at the site, a block's activations,
        the attention pattern, the residual stream and a row of logits."""
        cfg = self.lm.model.cfg
        positions = tokens if positions is None else positions
        per_position = (2 * self.sites[site].sae.cfg.d_sae + 8 * cfg.d_model + 3 * (cfg.d_mlp or 0)
                        + 3 * cfg.n_heads * positions)
        per_row = 4 * (positions * per_position + tokens * cfg.d_model + cfg.d_vocab)
        return max(2, self.batch_bytes // per_row)

    def _last_only(self, site: int, rows: list[list[Intervention]], measure: tuple[int, ...], logits: bool) -> bool:
        """Whether only the target position of `site` matters to what a pass measures: no
        attention lies between them (the site is past its block's attention, and the
        measured sites are in that block, or the logits with it the last block), and the
        rows ablate at every position (a list of positions would count from the BOS)."""
        block, stage = hook_order(self.sites[site].hook)
        if not _BLOCK_ORDER.index("attn.hook_z") <= stage < len(_BLOCK_ORDER):
            return False
        if logits and block != self.lm.model.cfg.n_layers - 1:
            return False
        return (all(hook_order(self.sites[j].hook)[0] == block for j in measure)
                and all(iv.positions is None for row in rows for iv in row))

    def run_rows(self, tokens: torch.Tensor, site: int, rows: list[list[Intervention]], position: int,
                 measure: tuple[int, ...] = (), logits: bool = True, job=None) -> Rows:
        """One forward pass for many ablations of `site`'s features: batch row r carries
        `rows[r]` (interventions at `site`, up to `position`; [] is the clean model), error
        terms kept as in `run`. Only what `position` sees is run and measured: the prompt is
        cut after it (the model is causal), the logits are taken there alone (with
        `logits`), and the later sites in `measure` are encoded there. The model before
        `site` runs once; the site's hook fans its activation out to the rows, at the
        target position alone where nothing after the site mixes positions (`_last_only`).
        `job` (an `engine.jobs.Job`) is checked before every block."""
        self._check([iv for row in rows for iv in row])
        tokens = tokens[:, :position + 1]
        last = self._last_only(site, rows, measure, logits)
        hooks = [(self.sites[site].hook, self._fan_out(site, rows, position, last))]
        measured, more, kwargs = self._measure_last(site, measure, logits)
        if self.sites[site].hook.endswith(_HEAD_MIXING):
            tokens = tokens.expand(len(rows), -1)  # the rows must exist before the heads mix
        with torch.no_grad():
            out = self.lm.run_with_hooks(tokens, fwd_hooks=hooks + more, job=job, **kwargs)
        return Rows(out[:, -1] if logits else None, measured)

    def passes(self, tokens: torch.Tensor, site: int, rows: list[list[Intervention]], position: int,
               measure: tuple[int, ...] = (), logits: bool = True, job=None):
        """`run_rows` over `rows` in as many passes as `batch_bytes` needs, each with a clean
        row first to measure against: yields `(chunk, Rows)`, Rows' row 0 clean and row i
        `chunk[i - 1]`. `job` is checked between the passes and inside them."""
        positions = 2 if self._last_only(site, rows, measure, logits) else None  # see `_fan_out`
        n = self.rows_per_pass(position + 1, site, positions) - 1
        for lo in range(0, len(rows), n):
            if job is not None:
                job.check()
            chunk = rows[lo:lo + n]
            yield chunk, self.run_rows(tokens, site, [[], *chunk], position, measure, logits, job)

    def _fan_out(self, site: int, rows: list[list[Intervention]], upto: int, last: bool = False):
        """The hook of `run_rows` at `site`: the activation of row r spliced with `rows[r]`;
        a row with no intervention is the activation itself, bit for bit. With `last`, only
        position `upto` goes on, [B, 1, ...] (spliced beside the BOS, so that positions
        count as everywhere else)."""
        sae = self.sites[site].sae
        upto_here = 1 if last else upto

        def hook(act, hook):
            x = act[0, [0, upto]] if last else act[0]  # every row is the same up to here
            f = sae.encode(x)
            f[0] = 0  # BOS: not what the SAEs were trained on
            fs = f.expand(len(rows) + 1, *f.shape).clone()  # a row per ablation, then the clean one
            for r, row in enumerate(rows):
                for iv in row:
                    if iv.feature != ERROR:
                        self._apply(site, fs[r], iv, upto_here)
            out, _ = self._splice(site, x, fs, rows, upto_here)
            out[[r for r, row in enumerate(rows) if not row]] = x
            return out[:, 1:] if last else out
        return hook

    def _measure_last(self, site: int, measure: tuple[int, ...], logits: bool) -> tuple[dict, list, dict]:
        """What a pass over a prompt cut after the target position needs to measure only
        there: the dict the hooks fill with the features of the `measure` sites at the last
        position ([B, S] each), those hooks, and forward arguments. With `logits` the last
        block's output is cut to the last position (so the unembedding runs for it alone);
        without, the pass stops after the last block it needs."""
        measured: dict[int, torch.Tensor] = {}

        def encode_last(j: int):
            def hook(act, hook):
                measured[j] = self.sites[j].sae.encode(act[:, -1])
            return hook

        hooks = [(self.sites[j].hook, encode_last(j)) for j in measure]
        n_layers = self.lm.model.cfg.n_layers
        blocks = [hook_order(self.sites[j].hook)[0] for j in (site, *measure)]
        if not all(0 <= b < n_layers for b in blocks):  # a site outside the blocks (embedding, final norm)
            return measured, hooks, {} if logits else {"return_type": None}
        if logits:
            last = f"blocks.{n_layers - 1}.hook_resid_post"
            return measured, hooks + [(last, lambda act, hook: act[:, -1:])], {}
        return measured, hooks, {"stop_at_layer": max(blocks) + 1}

    # ---- effects ------------------------------------------------------------
    def exact_effects(self, tokens, target: Target, site: int, features: list[int], mode: str = "zero",
                      value: float = 0.0, job=None) -> dict[int, float]:
        """Change of the target when each feature (or ERROR) of `site` is ablated alone:
        batched passes (`passes`), a row per candidate, each pass measured against its own
        clean row. `job` (an `engine.jobs.Job`) is checked between (and inside) the passes
        and gets progress as they go."""
        from engine.jobs import as_job

        job = as_job(job)
        self.check_target(tokens, target)
        self._check_later(target, site)
        ivs = [Intervention(site, f, self._error_mode(site, mode) if f == ERROR else mode, value) for f in features]
        message = f"ablating {len(features)} candidates at {self.sites[site].name}"
        job.progress(0.0, message, step=0, total=len(features))
        feature_target = target.kind == "feature"
        out: dict[int, float] = {}
        for chunk, rows in self.passes(tokens, site, [[iv] for iv in ivs], target.position,
                                       (target.site,) if feature_target else (), not feature_target, job):
            values = (rows.acts[target.site][:, target.feature] if feature_target
                      else self.logit_value(target, rows.logits)).double()
            out.update(zip((row[0].feature for row in chunk), (values[1:] - values[0]).tolist()))
            job.progress(len(out) / len(features), message, step=len(out), total=len(features))
        return out

    def _check_later(self, target: Target, site: int) -> None:
        if target.kind == "feature" and target.site <= site:
            raise UserError("a feature target must be at a later site than the features it is explained by")

    def attribution_effects(self, tokens, target: Target, site: int, mode: str = "zero", value: float = 0.0,
                            steps: int = 1, job=None) -> tuple[torch.Tensor, float]:
        """Estimated change of the target for every feature of `site` (and the error term).

        Returns `(effects [S], error_effect)`. `steps == 1` is attribution patching;
        `steps > 1` is integrated gradients with that many points on the path. Each
        point is one forward and one backward pass over the prompt up to the target
        position, measured there alone (as in `run_rows`).
        `job` (an `engine.jobs.Job`) is checked between and inside the passes.
        """
        from engine.jobs import as_job

        job = as_job(job)
        self.check_target(tokens, target)
        self._check_later(target, site)
        message = f"attribution at {self.sites[site].name}"
        job.progress(0.0, message, step=0, total=steps)
        grads, err_grad = 0, 0
        for k in range(steps):
            job.check()
            alpha = (k + 0.5) / steps if steps > 1 else 0.0
            g, eg, point = self._grad_at(tokens, target, site, alpha, mode, value, job)
            grads = grads + g / steps
            err_grad = err_grad + eg.to(point["err"].dtype) / steps
            job.progress((k + 1) / steps, message, step=k + 1, total=steps)
        f, f_new, err = point["f"], point["f_new"], point["err"]
        effects = ((f_new - f) * grads).sum(0)
        err_iv = Intervention(site, ERROR, self._error_mode(site, mode), value)
        err_effect = float(((self._new_f(site, err, [err_iv], target.position, error=True) - err) * err_grad).sum())
        return effects, err_effect

    def _grad_at(self, tokens, target: Target, site: int, alpha: float, mode: str, value: float, job=None):
        """Gradient of the target w.r.t. the features of `site` at the point `alpha` of the
        way from their clean value `f` to the ablated `f_new` (taken through `sae.decode`),
        and w.r.t. an additive perturbation of the site's activation (for the error term);
        and `point`: `f`, `f_new` and the site's error term `x - decode(f)`."""
        upto = target.position
        tokens = tokens[:, :upto + 1]
        point: dict = {}
        s = self.sites[site]

        def hook(act, hook):
            x = act[0]
            f = s.sae.encode(x).detach()
            f[0] = 0
            f_new = self._ablate_all(site, f, mode, value, upto)
            point.update(f=f, f_new=f_new, leaf=(f + alpha * (f_new - f)).requires_grad_(True))
            out, point["err"] = self._splice(site, x, torch.stack([point["leaf"], f]))
            point["e"] = torch.zeros_like(x, requires_grad=True)
            return out + point["e"]

        feature_target = target.kind == "feature"
        measured, more, kwargs = self._measure_last(site, (target.site,) if feature_target else (),
                                                    not feature_target)
        with torch.enable_grad():
            out = self.lm.run_with_hooks(tokens, fwd_hooks=[(s.hook, hook)] + more, job=job, **kwargs)
            v = (measured[target.site][0, target.feature] if feature_target
                 else self.logit_value(target, out[0, -1]))
            g_f, g_e = torch.autograd.grad(v, [point["leaf"], point["e"]], allow_unused=True)
        g_f = torch.zeros_like(point["leaf"]) if g_f is None else g_f
        g_e = torch.zeros_like(point["e"]) if g_e is None else g_e
        point["err"] = point["err"].detach()
        return g_f.detach(), g_e.detach(), point

