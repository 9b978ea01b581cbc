"""Ablation through any sae_lens SAE: the splice decodes through the SAE itself, so every
architecture and option gives what sae_lens's own `HookedSAETransformer` gives.

Each case is a tiny random SAE whose decoder rows have non-unit norms (0.3..3.3), saved
and loaded back the way the app loads SAEs, with a standard SAE downstream at
`hook_mlp_out`. sae_lens's answer comes from a second copy of each SAE attached to a
`HookedSAETransformer` with its error term, ablated by hooks on `hook_sae_acts_post`
and `hook_sae_error` at positions 1.. (the splice zeroes BOS features; with the error
kept, position 0's output is the activation either way).
"""

from __future__ import annotations

import pytest
import torch

from engine.ablate import ERROR, Intervention, Site, Splice, Target
from engine.errors import UserError
from engine.saes import load_sae

MID, OUT, Z = "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out", "blocks.0.attn.hook_z"
PROMPT = "def __init__(self, name):\n        self.name = name\n        return"
TOPK = dict(k=16, rescale_acts_by_decoder_norm=True)
CASES = {  # name: (architecture, hook, options)
    "topk_rescaled": ("topk", MID, TOPK),
    "jumprelu": ("jumprelu", MID, {}),
    # sae_lens 6.54 has no run-time effect for this option: its trainer folds the factor into
    # the weights (`fold_activation_norm_scaling_factor`), as done here with factor 3
    "standard_expected_average": ("standard", MID, dict(normalize_activations="expected_average_only_in",
                                                        norm_factor=3.0)),
    # run-time in/out scaling: `encode` stores the input's norm on the SAE for `decode`
    "standard_constant_norm": ("standard", MID, dict(normalize_activations="constant_norm_rescale")),
    "hook_z_topk": ("topk", Z, dict(TOPK, reshape_activations="hook_z")),
}


def _build(kind: str, hook: str, acts: torch.Tensor, folder, seed: int, d_sae: int = 96, **opts):
    """A random SAE of `kind` at `hook`, sparse on `acts`, saved to `folder`."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    cls, cfg_cls = {"topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
                    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
                    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig)}[kind]
    norm_factor = opts.pop("norm_factor", None)
    meta = SAEMetadata(hook_name=hook, model_name="mini-gelu-1l", context_size=128, prepend_bos=True)
    sae = cls(cfg_cls(d_in=256, d_sae=d_sae, metadata=meta, **opts))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(256, d_sae, generator=g) / 16)
        norms = torch.exp(torch.empty(d_sae, 1).uniform_(-1.2, 1.2, generator=g))
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True) * norms)
        sae.b_dec.copy_(torch.randn(256, generator=g) * 0.05)
        if norm_factor:
            sae.fold_activation_norm_scaling_factor(norm_factor)
            sae.cfg.normalize_activations = "expected_average_only_in"
        if kind != "topk":  # each feature fires on ~15% of the prompt's tokens
            sae.b_enc.zero_()
            _, cache = sae.run_with_cache(acts, names_filter=["hook_sae_acts_pre"])
            cut = cache["hook_sae_acts_pre"].flatten(0, -2).quantile(0.85, dim=0)
            if kind == "jumprelu":
                sae.threshold.copy_(cut.clamp(min=0.01))
            else:
                sae.b_enc.copy_(-cut)
    sae.save_model(folder)
    return folder


@pytest.fixture(scope="module")
def tokens(default_model):
    return default_model.model.to_tokens(PROMPT)


@pytest.fixture(scope="module")
def hooked(default_model):
    from sae_lens import HookedSAETransformer

    m = HookedSAETransformer(default_model.model.cfg, tokenizer=default_model.tokenizer)
    m.load_state_dict(default_model.model.state_dict())
    return m.eval()


@pytest.fixture(scope="module", params=list(CASES))
def case(request, default_model, tokens, tmp_path_factory):
    """(splice, upstream hook, sae_lens's copies of the two SAEs)."""
    kind, hook, opts = CASES[request.param]
    with torch.no_grad():
        _, cache = default_model.model.run_with_cache(tokens, names_filter=[hook, OUT])
    root = tmp_path_factory.mktemp(request.param)
    up = _build(kind, hook, cache[hook][0], root / "up", seed=1, **dict(opts))
    down = _build("standard", OUT, cache[OUT][0], root / "down", seed=2, d_sae=64)
    splice = Splice(default_model, [Site("up", hook, load_sae(up)), Site("down", OUT, load_sae(down))])
    return splice, hook, (load_sae(up), load_sae(down))


def _hooked_run(hooked, tokens, saes, hook, features=(), error=None, scale=0.0, mean=None):
    """sae_lens's answer: the SAEs attached with their error terms; `features` of the upstream
    SAE scaled by `scale` at positions 1.., and the error term at hook `error` scaled by
    `scale` there (or replaced by `mean`). Logits and downstream features."""
    def on_features(acts, hook):
        acts[:, 1:, list(features)] *= scale
        return acts

    def on_error(err, hook):
        if mean is not None:
            err[:, 1:] = mean.reshape(err.shape[2:])
        else:
            err[:, 1:] *= scale
        return err

    fwd = [(f"{hook}.hook_sae_acts_post", on_features)] if len(features) else []
    if error:
        fwd.append((f"{error}.hook_sae_error", on_error))
    for sae in saes:
        hooked.add_sae(sae, use_error_term=True)
    try:
        with torch.no_grad(), hooked.hooks(fwd_hooks=fwd):
            logits, cache = hooked.run_with_cache(tokens, names_filter=[f"{OUT}.hook_sae_acts_post"])
    finally:
        hooked.reset_saes()
    return logits[0], cache[f"{OUT}.hook_sae_acts_post"][0]


def _active(p, position=None) -> list[int]:
    acts = p.acts[0][1:] if position is None else p.acts[0][position:position + 1]
    return (acts > 0).any(0).nonzero().flatten().tolist()


def test_no_intervention_is_bit_for_bit_the_clean_model(case, tokens, default_model):
    with torch.no_grad():
        clean = default_model.model(tokens)[0]
    assert torch.equal(case[0].run(tokens).logits, clean)


def test_ablation_equals_hooked_sae_transformer(case, tokens, hooked):
    splice, hook, saes = case
    clean = splice.run(tokens)
    features = _active(clean)[::7][:4]
    assert len(features) >= 2
    for ivs, kw in [([Intervention(0, f) for f in features], dict(features=features)),
                    ([Intervention(0, ERROR)], dict(error=hook)),
                    ([Intervention(1, ERROR)], dict(error=OUT)),
                    ([Intervention(0, f, "scale", 0.5) for f in features] + [Intervention(0, ERROR, "scale", 0.5)],
                     dict(features=features, error=hook, scale=0.5))]:
        got = splice.run(tokens, ivs)
        want_logits, want_down = _hooked_run(hooked, tokens, saes, hook, **kw)
        torch.testing.assert_close(got.logits, want_logits, atol=1e-4, rtol=1e-4)
        if kw.get("error") != OUT:  # downstream features see upstream changes only
            torch.testing.assert_close(got.acts[1][1:], want_down[1:], atol=1e-4, rtol=1e-4)
        assert (got.logits - clean.logits).abs().max() > 1e-3  # the ablation does something


@pytest.mark.parametrize("case", ["topk_rescaled"], indirect=True)
def test_the_old_unit_norm_formula_is_wrong_for_rescaled_topk(case, tokens, hooked, default_model):
    """`x + (f' - f) @ W_dec` (what ablate did before) ignores TopK's decoder-norm rescaling:
    it misses sae_lens's answer by far more than the tolerance above."""
    splice, hook, saes = case
    sae = splice.sites[0].sae
    features = _active(splice.run(tokens))[::7][:4]

    def old(act, hook):
        f = sae.encode(act[0])
        f2 = f.clone()
        f2[1:, features] = 0
        return act + ((f2 - f) @ sae.W_dec).unsqueeze(0)

    with torch.no_grad():
        old_logits = default_model.model.run_with_hooks(tokens, fwd_hooks=[(MID, old)])[0]
    want, _ = _hooked_run(hooked, tokens, saes, hook, features=features)
    assert (old_logits - want).abs().max() > 1e-2


def test_error_ablation_positions_scale_and_mean(case, tokens, hooked):
    splice, hook, saes = case
    T = tokens.shape[1]
    clean = splice.run(tokens).logits
    p = T // 2
    at_p = splice.run(tokens, [Intervention(0, ERROR, positions=[p])]).logits
    torch.testing.assert_close(at_p[:p], clean[:p], atol=1e-5, rtol=0)
    assert (at_p[p] - clean[p]).abs().max() > 1e-3

    zero = splice.run(tokens, [Intervention(0, ERROR)]).logits
    half = splice.run(tokens, [Intervention(0, ERROR, "scale", 0.5)]).logits
    one = splice.run(tokens, [Intervention(0, ERROR, "scale", 1.0)]).logits
    torch.testing.assert_close(one, clean, atol=1e-5, rtol=0)
    d = lambda a, b: float((a - b)[1:].norm())  # noqa: E731
    assert 0 < d(half, clean) < d(zero, clean) and 0 < d(half, zero) < d(zero, clean)

    with pytest.raises(UserError, match="not defined for the error term"):
        splice.run(tokens, [Intervention(0, ERROR, "value", 1.0)])
    with pytest.raises(UserError, match="mean ablation of the error term needs"):
        splice.run(tokens, [Intervention(0, ERROR, "mean")])
    site = splice.sites[0]
    with torch.no_grad():
        x = hooked.run_with_cache(tokens, names_filter=[hook])[1][hook][0]
        err = x - site.sae.decode(site.sae.encode(x))
    mean = err[1:].mean(0)  # the hook's per-position shape: [n_heads, d_head] for hook_z
    want, _ = _hooked_run(hooked, tokens, saes, hook, error=hook, mean=mean)
    try:
        for m in (mean, mean.flatten()):  # [d_in] works for hook_z too
            site.mean_error = m
            got = splice.run(tokens, [Intervention(0, ERROR, "mean")]).logits
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        site.mean_error = torch.zeros_like(mean)
        torch.testing.assert_close(splice.run(tokens, [Intervention(0, ERROR, "mean")]).logits, zero,
                                   atol=1e-5, rtol=0)
    finally:
        site.mean_error = None


def test_error_attribution_is_the_first_order_change(case, tokens):
    """The error term's attribution is the derivative of its ablation, for any hook shape:
    scaling the error by 1 - eps changes the target by eps times the zero-ablation estimate."""
    splice, _, _ = case
    T, eps = tokens.shape[1] - 1, 0.01
    target = Target("logit", T, token=int(splice.run(tokens).logits[T].argmax()))
    for site in (0, 1):
        _, err_zero = splice.attribution_effects(tokens, target, site)
        _, err_small = splice.attribution_effects(tokens, target, site, mode="scale", value=1 - eps)
        assert err_small == pytest.approx(eps * err_zero, rel=1e-4, abs=1e-7)
        exact = splice.exact_effects(tokens, target, site, [ERROR], mode="scale", value=1 - eps)[ERROR]
        assert abs(err_zero) > 1e-2 and exact == pytest.approx(err_small, rel=0.05, abs=1e-4), (site, exact)


def _hooked_effects(hooked, tokens, saes, hook, features, T, token, scale) -> torch.Tensor:
    """sae_lens's change of logit `token` at `T` when each feature alone is scaled at 1..
    (one batch: row i scales feature i, the last row is clean)."""
    n, cols = len(features), torch.tensor(features)

    def on_features(acts, hook):
        acts[torch.arange(n), 1:, cols] *= scale
        return acts

    hooked.add_sae(saes[0], use_error_term=True)
    try:
        with torch.no_grad():
            logits = hooked.run_with_hooks(tokens.repeat(n + 1, 1),
                                           fwd_hooks=[(f"{hook}.hook_sae_acts_post", on_features)])
    finally:
        hooked.reset_saes()
    return (logits[:n, T, token] - logits[n, T, token]).double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_attribution_is_the_derivative_through_decode(case, tokens, hooked):
    """Attribution of scaling each feature by 1 - eps is sae_lens's exact change to first
    order, feature by feature; for TopK with rescaled, non-unit decoder rows, the gradient
    that ignores the decoder norms (the old `(f' - f) @ W_dec`) is off by those norms."""
    splice, hook, saes = case
    T, eps = tokens.shape[1] - 1, 0.01
    clean = splice.run(tokens)
    token = int(clean.logits[T].argmax())
    attr, _ = splice.attribution_effects(tokens, Target("logit", T, token=token), 0, mode="scale", value=1 - eps)
    features = _active(clean, T)  # what moves the logit at T (features act at their own position)
    assert len(features) >= 4
    exact = _hooked_effects(hooked, tokens, saes, hook, features, T, token, scale=1 - eps)
    est = attr[features].double()
    big = exact.abs() > 0.05 * exact.abs().max()
    torch.testing.assert_close(est[big], exact[big], rtol=0.05, atol=0.02 * float(exact.abs().max()))
    if getattr(splice.sites[0].sae.cfg, "rescale_acts_by_decoder_norm", False):
        blind = est * splice.sites[0].sae.W_dec.detach().norm(dim=1)[features].double()
        assert float(((blind - exact)[big] / exact[big]).abs().max()) > 0.3


@pytest.mark.parametrize("case", ["topk_rescaled"], indirect=True)
def test_attribution_ranks_like_sae_lens_zero_ablation_for_rescaled_topk(case, tokens, hooked):
    """Zero-ablation effects (large changes, through the MLP) rank alike. Ranks alone hardly
    see the decoder norms; the derivative test above is the one that does."""
    splice, hook, saes = case
    T = tokens.shape[1] - 1
    clean = splice.run(tokens)
    token = int(clean.logits[T].argmax())
    attr, _ = splice.attribution_effects(tokens, Target("logit", T, token=token), 0)
    features = _active(clean, T)
    exact = _hooked_effects(hooked, tokens, saes, hook, features, T, token, scale=0.0)
    assert len(features) >= 12 and _spearman(attr[features].double(), exact) > 0.7


def test_index_and_eval_read_a_hook_z_sae_per_token(default_model, tmp_path):
    """A hook_z SAE that flattens heads itself gets [tokens, heads, d_head] in the index
    pass and the evaluation (flat input would be read as n_heads = tokens)."""
    from engine.inspect import SaeView
    from engine.saes import load_sae
    from engine.train.runs import evaluate_folder

    with torch.no_grad():
        _, cache = default_model.run_with_cache(default_model.model.to_tokens(PROMPT), names_filter=[Z])
    folder = _build("topk", Z, cache[Z][0].flatten(-2), tmp_path / "z", seed=3, **TOPK,
                    reshape_activations="hook_z")
    view = SaeView(default_model, folder, index_tokens=128 * 8)
    idx = view.ensure_index()
    assert idx.meta["tokens"] == 8 * 127
    # every token has exactly k active features: per-token encoding, not one flattened row
    assert int(idx.fire_count.sum()) == 16 * 8 * 127
    sae = load_sae(folder)
    windows = view.windows[:2]
    with torch.no_grad():
        _, c = default_model.run_with_cache(windows, names_filter=[Z])
        f = sae.encode(c[Z][:, 1:])  # sae_lens's own per-token encoding
    page = view.feature_page(int(f.flatten(0, 1).ne(0).sum(0).argmax()), top=1)
    assert page["examples"]
    result = evaluate_folder(folder, 1024, lm=default_model)
    assert result["l0"] == pytest.approx(16.0) and result["explained_variance"] < 1
