"""Every training/eval metric against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.train.metrics import (DENSITY_THRESHOLD, FiringTracker, StreamingReconstruction,
                                  batch_metrics, ce_scores, density_histogram)


def _data(seed=0, n=300, d=16, d_sae=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 3 + 1
    x_hat = x + 0.5 * torch.randn(n, d, generator=g)
    acts = torch.relu(torch.randn(n, d_sae, generator=g) - 1.2)
    return x, x_hat, acts


def test_batch_metrics_match_numpy():
    x, x_hat, acts = _data()
    m = batch_metrics(x, x_hat, acts)
    xn, hn, an = x.numpy().astype(np.float64), x_hat.numpy().astype(np.float64), acts.numpy()
    assert m["mse"] == pytest.approx(((xn - hn) ** 2).mean(), rel=1e-9)
    ev = 1 - ((xn - hn) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    assert m["explained_variance"] == pytest.approx(ev, rel=1e-9)
    assert m["l0"] == pytest.approx((an > 0).sum(1).mean())
    assert m["l1"] == pytest.approx(np.abs(an).sum(1).mean(), rel=1e-6)


def test_streaming_reconstruction_equals_one_big_batch():
    x, x_hat, acts = _data(n=1000)
    s = StreamingReconstruction()
    for i in range(0, 1000, 137):
        s.update(x[i:i + 137], x_hat[i:i + 137], acts[i:i + 137])
    whole = batch_metrics(x, x_hat, acts)
    got = s.result()
    assert got["explained_variance"] == pytest.approx(whole["explained_variance"], rel=1e-9)
    assert got["mse"] == pytest.approx(whole["mse"], rel=1e-9)
    assert got["l0"] == pytest.approx(whole["l0"], rel=1e-9)


def test_firing_tracker_against_a_token_by_token_count():
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
    assert tracker.dead_fraction_window() == pytest.approx(np.mean([s >= window for s in since]))
    assert tracker.dead_fraction_density() == pytest.approx(np.mean([d < DENSITY_THRESHOLD for d in density]))


def test_density_histogram_counts_every_feature_once():
    density = torch.tensor([0.0, 0.0, 1e-9, 1e-6, 1e-3, 0.02, 0.5, 1.0])
    h = density_histogram(density)
    assert h["never_fired"] == 2 and sum(h["counts"]) == 6
    edges = np.array(h["edges"])
    expected = np.histogram(np.clip(np.log10([1e-9, 1e-6, 1e-3, 0.02, 0.5, 1.0]), -8, 0), bins=edges)[0]
    assert h["counts"] == expected.tolist()


def test_ce_scores_formulae():
    s = ce_scores(ce_clean=2.0, ce_sae=2.5, ce_zero=4.0, kl_sae=0.1, kl_zero=1.0)
    assert s["ce_loss_score"] == pytest.approx(0.75) and s["kl_div_score"] == pytest.approx(0.9)
    assert math.isnan(ce_scores(1, 1, 1, 0, 0)["ce_loss_score"])


def test_evaluate_matches_plain_transformer_lens_hooks(default_model):
    """CE/KL with a splice computed independently with F.cross_entropy and F.kl_div."""
    from engine.corpus import load_shard
    from engine.train.evaluate import evaluate

    lm = default_model
    hook = "blocks.0.hook_mlp_out"
    windows = load_shard().windows(128, split="held_out", max_tokens=128 * 6)
    g = torch.Generator().manual_seed(0)
    W = torch.randn(256, 32, generator=g) / 16

    def reconstruct(x):
        acts = torch.relu(x @ W)
        return acts @ W.T, acts

    got = evaluate(lm, hook, reconstruct, windows, d_sae=32, batch=4)

    def patch(value):
        def fn(act, hook):
            act = act.clone()
            act[:, 1:] = value(act[:, 1:])
            return act
        return fn

    with torch.no_grad():
        clean = lm.model(windows)
        spliced = lm.model.run_with_hooks(windows, fwd_hooks=[(hook, patch(lambda a: reconstruct(a)[0]))])
        zeroed = lm.model.run_with_hooks(windows, fwd_hooks=[(hook, patch(torch.zeros_like))])
    tgt = windows[:, 1:].reshape(-1)
    ce = lambda lg: F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]).double(), tgt).item()
    kl = lambda lg: F.kl_div(lg[:, :-1].double().log_softmax(-1), clean[:, :-1].double().log_softmax(-1),
                            log_target=True, reduction="none").sum(-1).mean().item()
    assert got["ce_loss_clean"] == pytest.approx(ce(clean), rel=1e-6)
    assert got["ce_loss_with_sae"] == pytest.approx(ce(spliced), rel=1e-6)
    assert got["ce_loss_zero_ablation"] == pytest.approx(ce(zeroed), rel=1e-6)
    assert got["kl_div_with_sae"] == pytest.approx(kl(spliced), rel=1e-5)
    assert got["kl_div_score"] == pytest.approx((kl(zeroed) - kl(spliced)) / kl(zeroed), rel=1e-5)
    assert got["ce_loss_score"] == pytest.approx((ce(zeroed) - ce(spliced)) / (ce(zeroed) - ce(clean)), rel=1e-5)
