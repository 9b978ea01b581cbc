"""Mask circuits (engine/circuits/mask.py): the binarised mask's faithfulness recomputed
by ablation with hooks written here, lambda 0 keeping (nearly) everything, the
temperature schedule and the sparsity term as documented, and the CLI's options."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.circuits import mask as mk
from engine.circuits.discover import CircuitBuilder
from engine.circuits.tasks import load_task
from engine.protocol import CircuitFindParams
from tests.conftest import REPO, run_saescope

SITES = ["resid_mid-topk", "mlp_out-topk"]
STEPS = 30
PAIRS = 30  # of the task's 60: masks train on 20, are evaluated on 10 (the tests' time)


@pytest.fixture(scope="module")
def builder(default_model):
    from engine.inspect import SaeView

    views = [SaeView(default_model, REPO / "weights" / "saes" / s) for s in SITES]
    task = load_task("was_were", default_model).subset(list(range(PAIRS)))
    params = CircuitFindParams(task="was_were", saes=SITES, method="mask", mask_steps=STEPS)
    return CircuitBuilder(default_model, views, SITES, task, params)


def metric_by_hand(builder, keep_f: list[torch.Tensor] | None, clean_errors: bool) -> float:
    """The held-out metric with each site's features outside `keep_f[i]` ([T, S] bool;
    None: every feature kept) set to their patch means, written with plain hooks."""
    lm, held = builder.lm, builder.held
    hooks = []
    for i, site in enumerate(builder.stack.sites):
        sae, mu = site.sae, builder.means[i]

        def hook(act, hook, sae=sae, mu=mu, keep=None if keep_f is None else keep_f[i]):
            f = sae.encode(act)
            e = act - sae.decode(f)
            if keep is not None:
                f = torch.where(keep, f, mu.f.expand_as(f))
            out = sae.decode(f) + (e if clean_errors else mu.e.expand_as(e))
            out[:, 0] = act[:, 0]
            return out
        hooks.append((site.hook, hook))
    with torch.no_grad():
        logits = lm.model.run_with_hooks(held.clean, fwd_hooks=hooks)[:, -1]
    rows = torch.arange(len(held.clean))
    return float((logits[rows, held.patch_answers] - logits[rows, held.clean_answers]).mean())


def test_a_mask_circuits_faithfulness_recomputed_by_ablation(builder):
    found = builder.circuit(64.0, errors=False)
    result = builder.masks[(64.0, False)]
    assert found.method == "mask" and found.per_position and 0 < found.figures.features == result.size
    keep_f = [m > 0 for m in result.logits]
    for k in keep_f:
        k[0] = False
    held = builder.held
    with torch.no_grad():
        logits = builder.lm.model(held.clean)[:, -1]
    rows = torch.arange(len(held.clean))
    m_model = float((logits[rows, held.patch_answers] - logits[rows, held.clean_answers]).mean())
    m_empty = metric_by_hand(builder, [torch.zeros_like(k) for k in keep_f], clean_errors=False)
    m_circuit = metric_by_hand(builder, keep_f, clean_errors=False)
    f = found.figures
    assert f.m_model == pytest.approx(m_model, abs=1e-4) and f.m_empty == pytest.approx(m_empty, abs=1e-4)
    assert f.m_circuit == pytest.approx(m_circuit, abs=1e-4)
    assert f.faithfulness == pytest.approx((m_circuit - m_empty) / (m_model - m_empty), abs=1e-4)
    assert f.plain == pytest.approx(m_circuit / m_model, abs=1e-4)
    assert {n.id for n in found.nodes} == {f"{builder.stack.sites[i].name}/{int(s)}@{int(p) - 1}"
                                         for i, k in enumerate(keep_f) for p, s in k.nonzero().tolist()}


def test_lambda_zero_keeps_nearly_everything(builder):
    clean = builder.mask(0.0, True)
    total = sum(m[1:].numel() for m in clean.logits)
    assert clean.size >= 0.95 * total
    _, _, faith, _ = builder.evaluator.evaluate(clean.keep())
    assert faith == pytest.approx(1.0, abs=0.05)
    # error terms at their means: the SAEs' reconstruction bounds what keeping everything
    # gives; the mask, fitted to the metric, drops the few latents that hurt it and does
    # at least as well
    at_mean = builder.mask(0.0, False)
    assert at_mean.size >= 0.9 * total
    _, _, faith_mean, _ = builder.evaluator.evaluate(at_mean.keep())
    all_features = [torch.ones_like(m, dtype=torch.bool) for m in at_mean.logits]
    everything = builder.evaluator.baseline.ratio(metric_by_hand(builder, all_features, clean_errors=False))
    assert everything < 0.95 and faith_mean >= everything - 0.02


def test_temperature_schedule_and_sparsity_term(builder):
    steps = 7
    temps = [mk.temperature(s, steps) for s in range(steps)]
    assert temps[0] == pytest.approx(mk.T_START) and temps[-1] == pytest.approx(mk.T_END)
    ratios = [b / a for a, b in zip(temps, temps[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios) and ratios[0] > 1  # geometric, upward
    args = (builder.stack, builder.disc.clean, builder.metric, builder.means)
    small = builder.mask(4.0, False)  # (also computes the target and span masks share)
    target, span = builder._mask_fit
    zero = mk.train_mask(*args, 0.0, steps=2, span=span, target=target)
    lam = mk.train_mask(*args, 2.5, steps=2, span=span, target=target)
    # step 0: every soft mask is sigmoid(T_START * INIT), so the sparsity term adds exactly lambda times it
    expected = 2.5 * float(torch.sigmoid(torch.tensor(mk.T_START * mk.INIT)))
    assert lam.losses[0] - zero.losses[0] == pytest.approx(expected,
                                                           rel=1e-5)
    large = builder.mask(256.0, False)
    assert large.size < small.size  # a heavier sparsity term keeps fewer latents
    assert large.sizes[-1] <= large.sizes[len(large.sizes) // 2] <= large.sizes[0]
    with pytest.raises(Exception, match="lambda is a number"):
        mk.train_mask(*args, -1.0, steps=1)


def test_mask_sweep_curves(builder, monkeypatch):
    import engine.circuits.discover as discover

    monkeypatch.setattr(discover, "LAMBDAS", [4.0, 256.0])  # two of the grid: the tests' time
    builder.sweep()
    assert [p.threshold for p in builder.curve] == [4.0, 256.0] == [p.threshold for p in builder.curve_features]
    assert all(p.plain is not None and math.isfinite(p.faithfulness) for p in builder.curve + builder.curve_features)
    assert builder.curve_features[0].features > builder.curve_features[-1].features


def test_circuit_command_with_the_mask_method():
    args = ["circuit", "--task", "was_were", "--sae", "weights/saes/resid_mid-topk", "--sae",
            "weights/saes/mlp_out-topk"]
    r = run_saescope(*args, "--method", "mask", "--lambda", "64", "--mask-steps", "15", "--features-only",
                     "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["method"] == "mask" and out["per_position"] and out["figures"]["threshold"] == 64
    assert out["figures"]["nodes"] == len(out["nodes"]) > 0 and "plain" in out["figures"]
    r = run_saescope(*args, "--lambda", "3")
    assert r.returncode == 2 and "--lambda goes with --method mask" in r.stderr
    r = run_saescope(*args, "--method", "mask", "--threshold", "3")
    assert r.returncode == 2 and "takes --lambda" in r.stderr
