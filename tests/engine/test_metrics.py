"""Every figure (engine/figures.py) against an independent plain-torch computation,
written here from the rule, never by calling the code under test twice; and the dead
fraction of one SAE being one number in the training run's final eval, `saescope
eval` (its engine function) and the Inspector.

Each assertion is built to fail for a plausible wrong implementation: inputs have a
different mean per dimension (a mean over the wrong axis changes the explained
variance), activations fire on a varying number of features per token (a density
is not a count), a feature fires only at BOS (counted, it would not be dead), and
a feature fires only after the dead window (counted, it would not be dead either).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.figures import DEAD_TOKENS, DENSITY_THRESHOLD, FIGURES, dead_label
from engine.train import metrics
from engine.train.metrics import (FiringTracker, HeldOutFiring, StreamingReconstruction, batch_metrics, ce_scores,
                                  density_histogram, firing_density)
from tests.conftest import REPO

HOOK = "blocks.0.hook_mlp_out"
SHIPPED = REPO / "weights" / "saes" / "mlp_out-topk"


def _data(seed=0, n=300, d=16, d_sae=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.5, 4, d) + torch.arange(d) * 2.0  # per-dim means
    x_hat = x + 0.5 * torch.randn(n, d, generator=g)
    acts = torch.relu(torch.randn(n, d_sae, generator=g) - 1.2 + torch.linspace(-1, 1, n).unsqueeze(1))
    return x, x_hat, acts


def test_reconstruction_figures_against_plain_torch():
    x, x_hat, acts = _data()
    m = batch_metrics(x, x_hat, acts)
    xd, hd = x.double(), x_hat.double()
    # MSE: over tokens AND dimensions (a per-token sum would be d times larger)
    assert m["mse"] == pytest.approx(F.mse_loss(hd, xd).item(), rel=1e-9)
    # EV: one ratio over all tokens, the mean per dimension
    ev = 1 - ((xd - hd) ** 2).sum() / ((xd - xd.mean(dim=0, keepdim=True)) ** 2).sum()
    assert m["explained_variance"] == pytest.approx(ev.item(), rel=1e-9)
    wrong_axis = 1 - ((xd - hd) ** 2).sum() / ((xd - xd.mean(dim=1, keepdim=True)) ** 2).sum()
    mean_of_ratios = (1 - ((xd - hd) ** 2).sum(1) / ((xd - xd.mean(0)) ** 2).sum(1)).mean()
    for wrong in (wrong_axis, mean_of_ratios):
        assert abs(wrong.item() - ev.item()) > 1e-3  # the data tell these apart
    # L0: features firing per token (a count per token, averaged over tokens)
    l0 = sum(int((row != 0).sum()) for row in acts) / len(acts)
    assert m["l0"] == pytest.approx(l0, rel=1e-12)
    assert m["l1"] == pytest.approx(acts.double().abs().sum(1).mean().item(), rel=1e-6)  # summed in float32
    # density: fraction of tokens per feature, not a count
    density = torch.tensor([sum(1 for row in acts if row[j] != 0) / len(acts) for j in range(acts.shape[1])])
    assert torch.allclose(firing_density(acts).float(), density, atol=1e-7)
    assert firing_density(acts).max() <= 1.0


def test_streaming_reconstruction_equals_the_rule_over_all_tokens():
    x, x_hat, acts = _data(n=1000)
    s = StreamingReconstruction()
    for i in range(0, 1000, 137):
        s.update(x[i:i + 137], x_hat[i:i + 137], acts[i:i + 137])
    got = s.result()
    xd, hd = x.double(), x_hat.double()
    assert got["explained_variance"] == pytest.approx(
        (1 - ((xd - hd) ** 2).sum() / ((xd - xd.mean(0)) ** 2).sum()).item(), rel=1e-9)
    assert got["mse"] == pytest.approx(((xd - hd) ** 2).mean().item(), rel=1e-9)
    assert got["l0"] == pytest.approx((acts != 0).sum().item() / len(acts), rel=1e-12)


def test_quiet_fraction_against_a_token_by_token_count():
    """The training-time figure ("quiet", record key dead_fraction_window) and the
    rare fraction, counted token by token in plain Python."""
    g = torch.Generator().manual_seed(3)
    d_sae, window = 12, 50
    tracker = FiringTracker(d_sae, window)
    since = [0] * d_sae
    counts, tokens, last_density = [0] * d_sae, 0, None
    for _ in range(9):
        n = int(torch.randint(5, 30, (1,), generator=g))
        acts = torch.relu(torch.randn(n, d_sae, generator=g) - 1.5 + torch.linspace(-2, 0.5, d_sae))
        tracker.update(acts)
        for row in acts.tolist():
            for j, a in enumerate(row):
                since[j] = 0 if a != 0 else since[j] + 1
                counts[j] += a != 0
            tokens += 1
        if tokens >= window:
            last_density = [c / tokens for c in counts]
            counts, tokens = [0] * d_sae, 0
        assert tracker.since_fired.tolist() == since
    density = last_density or [c / max(1, tokens) for c in counts]
    assert tracker.density().tolist() == pytest.approx(density)
    assert tracker.quiet_fraction() == pytest.approx(np.mean([s >= window for s in since]))
    assert tracker.dead_fraction_density() == pytest.approx(np.mean([d < DENSITY_THRESHOLD for d in density]))


def test_held_out_firing_counts_only_the_dead_window(monkeypatch):
    monkeypatch.setattr(metrics, "DEAD_TOKENS", 4 * 8)  # 4 windows of 8 tokens
    firing = HeldOutFiring(d_sae=3, n_ctx=8)
    a = torch.zeros(6, 7, 3)  # 6 windows, BOS left out
    a[0, 2, 0] = 1.0  # feature 0 fires in the window
    a[5, 0, 1] = 1.0  # feature 1 fires only after it: dead by the rule
    firing.update(a[:3])
    firing.update(a[3:])
    got = firing.result()
    assert got["dead_fraction"] == pytest.approx(2 / 3) and got["dead_tokens"] == 32 and firing.complete


def test_density_histogram_counts_every_feature_once():
    density = torch.tensor([0.0, 0.0, 1e-9, 1e-6, 1e-3, 0.02, 0.5, 1.0])
    h = density_histogram(density)
    assert h["never_fired"] == 2 and sum(h["counts"]) == 6
    expected = np.histogram(np.clip(np.log10([1e-9, 1e-6, 1e-3, 0.02, 0.5, 1.0]), -8, 0), bins=np.array(h["edges"]))[0]
    assert h["counts"] == expected.tolist()


def test_ce_scores_formulae():
    s = ce_scores(ce_clean=2.0, ce_sae=2.5, ce_zero=4.0, kl_sae=0.1, kl_zero=1.0)
    assert s["ce_loss_score"] == pytest.approx(0.75) and s["kl_div_score"] == pytest.approx(0.9)
    assert math.isnan(ce_scores(1, 1, 1, 0, 0)["ce_loss_score"])


def _tiny_sae(lm, windows, d_sae=48):
    """A sae_lens SAE on the default model's mlp_out: feature 0 fires only at BOS,
    feature 1 never, feature 2 on every token, feature 3 only after the first 4
    windows, the rest sparsely."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    with torch.no_grad():
        _, cache = lm.run_with_cache(windows, names_filter=[HOOK], stop_at_layer=1)
    x = cache[HOOK].float()
    bos, body = x[:, 0].mean(0), x[:4, 1:].reshape(-1, x.shape[-1])
    late = x[7, 50]  # a token after the evaluated windows
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=x.shape[-1], d_sae=d_sae, metadata=SAEMetadata(
        hook_name=HOOK, model_name="mini-gelu-1l", context_size=128, prepend_bos=True)))
    with torch.no_grad():
        W = torch.randn(x.shape[-1], d_sae) / x.shape[-1] ** 0.5
        u = bos / bos.norm()
        W[:, 0] = u
        sae.W_enc.copy_(W)
        sae.W_dec.copy_(W.T * 0.3)
        sae.b_dec.zero_()
        proj = body @ W
        sae.b_enc.copy_(-proj.quantile(0.97, dim=0))  # each fires on ~3% of tokens
        top_body = (body @ u).max()
        sae.b_enc[0] = -(top_body + 0.5 * ((bos @ u) - top_body))  # between the body and BOS
        sae.b_enc[1] = -1e4
        sae.b_enc[2] = 1e4
        v = late / late.norm()
        W[:, 3] = v
        sae.W_enc.copy_(W)
        top_early = (body @ v).max()
        assert top_early < late @ v
        sae.b_enc[3] = -(top_early + 0.5 * (late @ v - top_early))
    return sae


@pytest.fixture(scope="module")
def held_out(default_model):
    from engine.corpus import load_shard

    return load_shard().windows(128, split="held_out", max_tokens=128 * 12)


def test_evaluate_against_plain_torch(default_model, held_out, monkeypatch):
    """CE, KL and their scores, MSE, EV, L0 and the dead fraction of a tiny sae_lens SAE
    spliced into the default model, recomputed here with plain hooks and torch."""
    from engine.train.evaluate import evaluate, sae_reconstructor

    monkeypatch.setattr(metrics, "DEAD_TOKENS", 128 * 10)  # a small dead window: 10 windows
    lm = default_model
    sae = _tiny_sae(lm, held_out[:10])
    windows, dead_windows = held_out[:4], held_out[:10]
    got = evaluate(lm, HOOK, sae_reconstructor(sae), windows, sae.cfg.d_sae, batch=3, dead_windows=dead_windows)

    with torch.no_grad():
        _, cache = lm.model.run_with_cache(dead_windows, names_filter=[HOOK])
        x_all = cache[HOOK]
        acts_all = F.relu((x_all - sae.b_dec) @ sae.W_enc + sae.b_enc)  # every position, BOS included
        x = x_all[:4, 1:].reshape(-1, x_all.shape[-1]).double()
        acts = acts_all[:4, 1:].reshape(-1, sae.cfg.d_sae)
        x_hat = (acts @ sae.W_dec + sae.b_dec).double()

        def patch(value):
            def fn(act, hook):
                act = act.clone()
                act[:, 1:] = value(act[:, 1:])
                return act
            return fn

        clean = lm.model(windows)
        spliced = lm.model.run_with_hooks(windows, fwd_hooks=[(HOOK, patch(
            lambda a: F.relu((a - sae.b_dec) @ sae.W_enc + sae.b_enc) @ sae.W_dec + sae.b_dec))])
        zeroed = lm.model.run_with_hooks(windows, fwd_hooks=[(HOOK, patch(torch.zeros_like))])

    tgt = windows[:, 1:].reshape(-1)
    ce = lambda lg: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]).double(), tgt).item()
    kl = lambda lg: F.kl_div(lg[:, :-1].double().log_softmax(-1), clean[:, :-1].double().log_softmax(-1),
                             log_target=True, reduction="none").sum(-1).mean().item()
    assert got["ce_loss_clean"] == pytest.approx(ce(clean), rel=1e-6)
    assert got["ce_loss_with_sae"] == pytest.approx(ce(spliced), rel=1e-5)
    assert got["ce_loss_zero_ablation"] == pytest.approx(ce(zeroed), rel=1e-6)
    assert got["kl_div_with_sae"] == pytest.approx(kl(spliced), rel=1e-4)
    assert got["kl_div_zero_ablation"] == pytest.approx(kl(zeroed), rel=1e-5)
    assert got["ce_loss_score"] == pytest.approx((ce(zeroed) - ce(spliced)) / (ce(zeroed) - ce(clean)), rel=1e-4)
    assert got["kl_div_score"] == pytest.approx((kl(zeroed) - kl(spliced)) / kl(zeroed), rel=1e-4)

    assert got["mse"] == pytest.approx(((x - x_hat) ** 2).mean().item(), rel=1e-4)
    ev = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert got["explained_variance"] == pytest.approx(ev.item(), rel=1e-4)
    l0 = (acts != 0).sum(1).double().mean().item()
    assert got["l0"] == pytest.approx(l0, rel=1e-6)
    assert 2 < l0 < sae.cfg.d_sae / 2  # a sparse SAE: a density would be < 1, a count per window >> this

    # dead: never fired at a non-BOS position of the 10 dead windows (not just the 4 evaluated)
    assert bool((acts_all[:, 0, 0] > 0).all()) and not bool((acts_all[:, 1:, 0] > 0).any())  # 0: BOS only
    fired = (acts_all[:, 1:] > 0).reshape(-1, sae.cfg.d_sae).any(0)
    dead = 1 - fired.double().mean().item()
    assert got["dead_fraction"] == pytest.approx(dead, abs=1e-12)
    assert got["dead_tokens"] == 128 * 10 and got["dead_context"] == 128
    with_bos = 1 - (acts_all > 0).reshape(-1, sae.cfg.d_sae).any(0).double().mean().item()
    only_evaluated = 1 - (acts_all[:4, 1:] > 0).reshape(-1, sae.cfg.d_sae).any(0).double().mean().item()
    assert with_bos != dead  # feature 0 tells the rule from one that counts BOS
    assert only_evaluated != dead  # feature 3 tells it from one measured on the evaluated windows only


def test_dead_fraction_is_one_number_for_one_sae(default_model):
    """The shipped SAE's training run saved its final eval (eval.json); the Inspector
    (SaeView, what `sae.open` and `saescope inspect` report) and `saescope eval` (its
    engine function, on far fewer eval tokens, measuring dead on the rule's window as
    the Inspector does for an SAE with no saved eval) show that same dead fraction,
    under the one label."""
    from engine.inspect import SaeView
    from engine.train.runs import evaluate_folder

    final = json.loads((SHIPPED / "eval.json").read_text())  # the training run's final eval record
    view = SaeView(default_model, SHIPPED, index_tokens=128 * 8)
    shown = view.dead_figure()
    assert shown["source"] == "eval.json" and shown["dead_fraction"] == final["dead_fraction"]
    assert shown["dead_tokens"] == DEAD_TOKENS and dead_label(shown["dead_tokens"]) == "dead"

    cli = evaluate_folder(SHIPPED, 1024, lm=default_model)
    assert cli["dead_tokens"] == DEAD_TOKENS, "evaluate_folder must measure dead on DEAD_TOKENS (dead_windows)"
    assert cli["dead_fraction"] == final["dead_fraction"]


def test_every_shown_figure_has_a_name_and_rule():
    for key in ("dead_fraction", "dead_fraction_window", "density", "l0", "mse", "explained_variance",
                "ce_loss_score", "kl_div_score"):
        short, name, text = FIGURES[key]
        assert short and name and text
    assert FIGURES["dead_fraction_window"][0] != "dead" and "dead" not in FIGURES["dead_fraction_window"][1]
    assert f"{DEAD_TOKENS:,}" in FIGURES["dead_fraction"][2]
