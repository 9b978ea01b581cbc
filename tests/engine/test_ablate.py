"""Ablation with SAEs spliced in, against plain TransformerLens hooks."""

from __future__ import annotations

import pytest
import torch

from engine.ablate import ERROR, Intervention, Site, Splice, Target
from engine.errors import UserError
from engine.saes import load_sae
from engine.tree import TreeBuilder
from tests.engine.test_inspect import make_sae

MID, OUT = "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"
PROMPT = "def __init__(self, name):\n        self.name"


@pytest.fixture(scope="module")
def splice(default_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    up = load_sae(make_sae(root / "up", hook=MID, d_sae=128, seed=1))
    down = load_sae(make_sae(root / "down", hook=OUT, d_sae=96, seed=2))
    return Splice(default_model, [Site("resid_mid", MID, up), Site("mlp_out", OUT, down)])


@pytest.fixture(scope="module")
def tokens(default_model):
    return default_model.model.to_tokens(PROMPT)


def test_no_ablation_leaves_logits_exactly_unchanged(splice, tokens, default_model):
    with torch.no_grad():
        clean = default_model.model(tokens)[0]
    assert torch.equal(splice.run(tokens).logits, clean)


def _independent_zero_ablation(lm, up, down, tokens, feature):
    """Zero-ablate `feature` of the upstream SAE with plain hooks; downstream acts and logits."""
    def ablate(act, hook):
        f = up.encode(act[0])
        f[0] = 0
        return act - (f[:, feature:feature + 1] * up.W_dec[feature]).unsqueeze(0)

    with torch.no_grad():
        logits, cache = lm.model.run_with_cache(tokens, names_filter=[OUT])
        clean_down = down.encode(cache[OUT][0])
        lm.model.add_hook(MID, ablate)
        try:
            logits2, cache2 = lm.model.run_with_cache(tokens, names_filter=[OUT])
        finally:
            lm.model.reset_hooks()
        return down.encode(cache2[OUT][0]) - clean_down, logits2[0] - logits[0]


def test_zero_ablation_matches_plain_hooks(splice, tokens, default_model):
    up, down = splice.sites[0].sae, splice.sites[1].sae
    clean = splice.run(tokens)
    active = (clean.acts[0][1:] > 0).any(0).nonzero().flatten().tolist()
    assert active
    for feature in active[:5]:
        after = splice.run(tokens, [Intervention(0, feature, "zero")])
        want_down, want_logits = _independent_zero_ablation(default_model, up, down, tokens, feature)
        got_down = after.acts[1] - clean.acts[1]
        torch.testing.assert_close(got_down[1:], want_down[1:], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(after.logits - clean.logits, want_logits, atol=1e-4, rtol=1e-4)


def test_error_ablation_continues_from_the_reconstruction(splice, tokens, default_model):
    down = splice.sites[1].sae

    def recon(act, hook):
        out = down.decode(down.encode(act[0]))
        out[0] = act[0, 0]
        return out.unsqueeze(0)

    with torch.no_grad():
        want = default_model.model.run_with_hooks(tokens, fwd_hooks=[(OUT, recon)])[0]
    got = splice.run(tokens, [Intervention(1, ERROR)]).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_attribution_is_exact_for_a_linear_path(splice, tokens):
    """Downstream-site features act on the logits through a linear path (W_dec, then the
    residual stream into ln_final and W_U), which is not linear because of the final
    LayerNorm: attribution and exact must still agree closely, and exactly in sign for
    the largest effects."""
    T = tokens.shape[1] - 1
    metric = Target("logit", T, token=int(splice.run(tokens).logits[T].argmax()))
    tb = TreeBuilder(splice, tokens, T, metric)
    agree = tb.agreement(metric, site=1)
    assert agree["n"] > 3
    assert agree["pearson"] > 0.9, agree


def test_integrated_gradients_satisfies_completeness(splice, tokens):
    """IG's effects sum to the exact change when every feature of the site is ablated
    together (up to the midpoint rule's error); one-step attribution need not."""
    T = tokens.shape[1] - 1
    target = Target("feature", T, site=1, feature=int(splice.run(tokens).acts[1][T].argmax()))
    base = float(splice.value(target, splice.run(tokens, upto=T)))
    joint = splice.run(tokens, [Intervention(0, f) for f in range(128)], upto=T)
    exact_joint = float(splice.value(target, joint)) - base
    ig, _ = splice.attribution_effects(tokens, target, 0, steps=16)
    assert float(ig.sum()) == pytest.approx(exact_joint, rel=0.05, abs=1e-4)


def test_bad_input(splice, tokens, default_model):
    sites = splice.sites
    with pytest.raises(UserError, match="model order"):
        Splice(default_model, [sites[1], sites[0]])
    with pytest.raises(UserError, match="beyond the prompt"):
        splice.exact_effects(tokens, Target("logit", tokens.shape[1], token=1), 0, [0])
    with pytest.raises(UserError, match="out of range"):
        splice.attribution_effects(tokens, Target("feature", 2, site=1, feature=10_000), 0)
    with pytest.raises(UserError, match="later site"):
        splice.attribution_effects(tokens, Target("feature", 2, site=0, feature=1), 0)


def test_attribution_ranks_like_exact_ablation_on_the_default_saes(default_model):
    """On the shipped circuit pair, the cheap estimate orders upstream features by
    effect on a downstream feature much as the exact one-at-a-time ablation does."""
    from engine.paths import WEIGHTS_DIR
    from engine.tree import open_sites

    sites, _ = open_sites(default_model, [str(WEIGHTS_DIR / "saes" / "resid_mid-topk"),
                                         str(WEIGHTS_DIR / "saes" / "mlp_out-topk")])
    splice = Splice(default_model, sites)
    tokens = default_model.model.to_tokens("    for i in range(len(items)):\n        if items[i] is None")
    T = tokens.shape[1] - 1
    metric = Target("logit", T, token=int(splice.run(tokens).logits[T].argmax()))
    tb = TreeBuilder(splice, tokens, T, metric)
    edge = Target("feature", T, site=1, feature=int(tb.clean.acts[1][T].argmax()))
    agree = tb.agreement(edge, site=0)
    assert agree["n"] > 50 and agree["spearman"] > 0.7, {k: agree[k] for k in ("n", "spearman", "pearson")}
