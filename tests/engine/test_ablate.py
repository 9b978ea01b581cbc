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


# ---- batched exact effects against one plain forward pass per candidate ----------------

V = "blocks.0.attn.hook_v"
PRE = "blocks.0.hook_resid_pre"
LONGER = "def __init__(self, name, value):\n        self.name = name\n        self.value = value"


def _linear_sae(hook: str, d_sae: int, seed: int, heads: bool = False):
    """A standard (linear-decoder) SAE at `hook` that fires sparsely, kept in memory; with
    `heads`, one that flattens [heads, d_head] itself (sae_lens allows that only for SAEs
    named at a hook_z, and hook_v has hook_z's shape)."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    meta = SAEMetadata(hook_name=hook.replace("hook_v", "hook_z") if heads else hook, model_name="mini-gelu-1l",
                       context_size=128, prepend_bos=True)
    sae = StandardSAE(StandardSAEConfig(d_in=256, d_sae=d_sae, metadata=meta,
                                        reshape_activations="hook_z" if heads else "none"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / 16)
        sae.W_dec.copy_(sae.W_enc.T * torch.linspace(0.5, 2.0, d_sae)[:, None])  # rows of unequal norm
        sae.b_enc.fill_(-1.2)
    return sae.eval()


def _plain_effects(lm, up, up_hook: str, down, tokens, target: Target, features: list[int],
                   mean: torch.Tensor | None = None) -> dict[int, float]:
    """The naive loop, with plain TransformerLens hooks and no splice: one forward pass per
    candidate, feature j of the linear SAE `up` set to 0 (or `mean[j]`) at positions 1..
    with the change reaching the activation through decoder row j (the error term kept),
    or for ERROR the activation replaced by its reconstruction at positions 1..; the
    target read from the logits, or from `down`'s features (at OUT) at its position."""
    def read(edit) -> float:
        seen = {}

        def read_down(act, hook):
            seen["f"] = down.encode(act[0])[target.position]

        hooks = ([(up_hook, edit)] if edit else []) + ([(OUT, read_down)] if target.kind == "feature" else [])
        with torch.no_grad():
            row = lm.model.run_with_hooks(tokens, fwd_hooks=hooks)[0, target.position]
        if target.kind == "feature":
            return float(seen["f"][target.feature])
        if target.kind == "logit":
            return float(row[target.token])
        if target.kind == "logit_diff":
            return float(row[target.token] - row[target.other])
        return float(-row.double().log_softmax(-1)[target.token])

    def ablate(j: int):
        def edit(act, hook):
            f = up.encode(act[0])[1:, j]
            new = torch.zeros_like(f) if mean is None else torch.full_like(f, float(mean[j]))
            out = act.clone()
            out[0, 1:] += ((new - f)[:, None] * up.W_dec[j]).reshape(act[0, 1:].shape)
            return out
        return edit

    def reconstruct(act, hook):
        out = act.clone()
        out[0, 1:] = up.decode(up.encode(act[0]))[1:]
        return out

    base = read(None)
    return {j: read(reconstruct if j == ERROR else ablate(j)) - base for j in features}


@pytest.fixture(scope="module", params=[MID, PRE, V])
def hooked_splice(request, default_model):
    """A splice with a linear SAE at MID (fanned out mid-block), at the block's input, or
    at `attn.hook_v` (where the pass starts with every row), and one at OUT."""
    hook = request.param
    up = _linear_sae(hook, 64, seed=3, heads=hook == V)
    down = _linear_sae(OUT, 48, seed=4)
    tokens = default_model.model.to_tokens(LONGER)
    with torch.no_grad():
        clean = Splice(default_model, [Site("up", hook, up), Site("mlp_out", OUT, down)]).run(tokens)
    sites = [Site("up", hook, up, mean_acts=clean.acts[0][1:].mean(0)),
             Site("mlp_out", OUT, down, mean_acts=clean.acts[1][1:].mean(0))]
    return Splice(default_model, sites), tokens, clean


def _candidates(acts: torch.Tensor, n: int = 12) -> list[int]:
    active = (acts[1:] != 0).any(0).nonzero().flatten().tolist()
    assert len(active) >= 4
    return active[:: max(1, len(active) // n)][:n] + [ERROR]


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_exact_effects_equal_one_plain_pass_per_candidate(hooked_splice, default_model, mode):
    """Batched exact effects are the naive loop's, at a site with attention after it
    (PRE, V: every position fanned out) and past it (MID, OUT: the target position alone),
    for feature and logit targets, at the last position and at one in the middle."""
    splice, tokens, clean = hooked_splice
    (up_hook, up, up_mean), (_, down, down_mean) = ((s.hook, s.sae, s.mean_acts) for s in splice.sites)
    T, mid = tokens.shape[1] - 1, tokens.shape[1] // 2
    top = int(clean.logits[T].argmax())
    cases = [  # (target, site): the prompt cut at a middle position, and read at its end
        (Target("feature", mid, site=1, feature=int(clean.acts[1][mid].argmax())), 0),
        (Target("logit_diff", T, token=top, other=int(clean.logits[T].argsort()[-2])), 0),
        (Target("loss", mid, token=int(tokens[0, mid + 1])), 0),
        (Target("logit", T, token=top), 1),
    ]
    for target, site in cases:
        sae, hook, mean = (up, up_hook, up_mean) if site == 0 else (down, OUT, down_mean)
        features = _candidates(clean.acts[site][:target.position + 1])
        got = splice.exact_effects(tokens, target, site, features, mode)
        want = _plain_effects(default_model, sae, hook, down, tokens, target, features,
                              mean if mode == "mean" else None)
        assert list(got) == features
        scale = max(abs(v) for v in want.values())
        assert scale > 1e-3, (target, want)  # the ablations do something
        where = f"{target} at {hook}"
        torch.testing.assert_close(torch.tensor([got[f] for f in features]), torch.tensor([want[f] for f in features]),
                                   atol=1e-4 * max(1.0, scale), rtol=1e-4, msg=lambda m, where=where: f"{where}: {m}")


def test_passes_follow_the_memory_budget_and_stop_between_them_on_cancel(splice, tokens):
    """A budget of one candidate a pass gives the one-pass answer with progress after each
    pass, and a cancel between passes stops before the next."""
    from engine.jobs import Cancelled, Job

    T = tokens.shape[1] - 1
    clean = splice.run(tokens)
    target = Target("feature", T, site=1, feature=int(clean.acts[1][T].argmax()))
    features = _candidates(clean.acts[0], n=8)
    one_pass = splice.exact_effects(tokens, target, 0, features)
    assert splice.rows_per_pass(T + 1, 0) > len(features)  # the default budget holds them all
    splice.batch_bytes = 0  # a clean row and one candidate a pass
    try:
        steps = []
        split = splice.exact_effects(tokens, target, 0, features,
                                     job=Job(emit=lambda kind, data: steps.append(data["step"]), min_interval=0))
        assert steps == list(range(len(features) + 1))  # progress after every pass
        torch.testing.assert_close(torch.tensor(list(split.values())), torch.tensor(list(one_pass.values())),
                                   atol=1e-5, rtol=1e-5)

        steps = []
        job = Job(min_interval=0)
        job.emit = lambda kind, data: (steps.append(data["step"]), data["step"] == 2 and job.cancel())
        with pytest.raises(Cancelled):
            splice.exact_effects(tokens, target, 0, features, job=job)
        assert steps == [0, 1, 2]  # no pass after the cancel
    finally:
        del splice.batch_bytes


def test_down_tree_rows_equal_separate_passes(splice, tokens):
    """`root_down` at depth 2 (its children's expansions batched in one pass) gives what
    one unbatched `run` per ablation gives."""
    T = tokens.shape[1] - 1
    clean = splice.run(tokens, upto=T)
    metric = Target("logit", T, token=int(clean.logits[T].argmax()))
    features = clean.acts[0][T].nonzero().flatten()[:2].tolist()  # what reaches T in a 1-layer model
    root = TreeBuilder(splice, tokens, T, metric, top=4).root_down(0, features, depth=2)
    after = splice.run(tokens, [Intervention(0, f) for f in features], upto=T)
    kinds = [c["node"]["kind"] for c in root["children"]]
    assert "feature" in kinds and "logit" in kinds
    for child in root["children"]:
        n = child["node"]
        if n["kind"] == "logit":
            assert child["effect"] == pytest.approx(float(after.logits[T, n["token_id"]] - clean.logits[T, n["token_id"]]),
                                                    abs=1e-4)
            continue
        f = n["feature"]
        assert child["effect"] == pytest.approx(float(after.acts[1][T, f] - clean.acts[1][T, f]), abs=1e-4)
        alone = splice.run(tokens, [Intervention(1, f)], upto=T)
        assert child["children"]
        for leaf in child["children"]:
            t = leaf["node"]["token_id"]
            assert leaf["effect"] == pytest.approx(float(alone.logits[T, t] - clean.logits[T, t]), abs=1e-4)
