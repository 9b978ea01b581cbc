"""Mask circuits against thresholding (issue: circuits with few SAEs): faithfulness at
matched circuit sizes for attribution thresholding, integrated-gradient thresholding
and the learned mask, on each shipped task of the default model and on a SmolLM2 task
with residual-stream SAEs at a few layers.

All three are per (position, latent), evaluated on the same held-out pairs with the
same means (`engine.circuits.evaluate`). Two settings: error terms at their means
(thresholding: features only; mask: `errors=False`) and error terms kept clean
(thresholding: with error nodes; mask: `errors=True`). A mask point's size is its
latents kept; the thresholding figure beside it is its curve's point with the nearest
feature count (its size is listed too).

Run: `pytest -s -o addopts="" tests/bench/test_bench_mask.py` (figures in
tests/bench/results/mask_circuits.json). SmolLM2 on a CPU is slow: set
BENCH_MASK_SMOLLM2=0 to skip it, or size it with BENCH_SMOLLM2_PAIRS (18),
BENCH_SMOLLM2_STEPS (60) and BENCH_SMOLLM2_LAMBDAS (4,32,256); BENCH_TASKS= (empty)
skips the default model's tasks.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)

DEFAULT_SITES = ["resid_mid-topk", "mlp_out-topk"]  # few SAEs: the residual stream mid-layer, the MLP out
SMOLLM2_SITES = ["smollm2-resid_post-l3", "smollm2-resid_post-l7", "smollm2-resid_post-l11"]
TASKS = [t for t in os.environ.get("BENCH_TASKS", "was_were,close_paren,from_import").split(",") if t]
SMOLLM2_PAIRS = int(os.environ.get("BENCH_SMOLLM2_PAIRS", 18))
SMOLLM2_STEPS = int(os.environ.get("BENCH_SMOLLM2_STEPS", 60))
SMOLLM2_LAMBDAS = [float(x) for x in os.environ.get("BENCH_SMOLLM2_LAMBDAS", "4,32,256").split(",")]


def _nearest(curve, features: int):
    return min(curve, key=lambda p: (abs(p.features - features), p.features)) if curve else None


def _compare(lm, sites: list[str], task_name: str, pairs: int | None, lambdas: list[float], steps: int,
             settings=(False, True)) -> dict:
    from engine.circuits import evaluate as ev
    from engine.circuits.discover import CircuitBuilder
    from engine.circuits.tasks import load_task
    from engine.inspect import SaeView
    from engine.protocol import CircuitFindParams

    views = [SaeView(lm, REPO / "weights" / "saes" / s) for s in sites]
    task = load_task(task_name, lm)
    if pairs is not None:
        task = task.subset(list(range(min(pairs, len(task)))))
    out: dict = {"sites": sites, "pairs": len(task), "mask_steps": steps}
    curves = {}
    for method in ("attribution", "ig", "mask"):
        t0 = time.perf_counter()
        params = CircuitFindParams(task=task_name, saes=sites, method=method, per_position=True, mask_steps=steps,
                                   max_nodes=2000, points=16)
        b = CircuitBuilder(lm, views, sites, task, params)
        if method == "mask":
            b.curve, b.curve_features = [], []
            for errors in settings:
                for lam in lambdas:
                    keep = b.mask(lam, errors).keep()
                    m_c, _, faith, comp = b.evaluator.evaluate(keep)
                    nodes, feats = ev.size(keep, False)
                    (b.curve if errors else b.curve_features).append(
                        ev.Point(lam, nodes, feats, faith, comp, b.evaluator.baseline.plain(m_c)))
        else:
            b.sweep()
        curves[method] = {False: b.curve_features, True: b.curve}
        out[f"{method}_seconds"] = round(time.perf_counter() - t0, 1)
        out["baseline"] = {"model": round(b.evaluator.baseline.model, 4), "empty": round(b.evaluator.baseline.empty, 4)}
    for errors in settings:
        rows = []
        for p in curves["mask"][errors]:
            row = {"lambda": p.threshold, "latents": p.features, "mask": round(p.faithfulness, 3),
                   "mask_plain": round(p.plain, 3), "mask_completeness": round(p.completeness, 3)}
            for method in ("attribution", "ig"):
                q = _nearest(curves[method][errors], p.features)
                row[method] = None if q is None else round(q.faithfulness, 3)
                row[f"{method}_latents"] = None if q is None else q.features
                row[f"{method}_plain"] = None if q is None or q.plain is None else round(q.plain, 3)
            rows.append(row)
        out["errors_clean" if errors else "errors_at_mean"] = rows
        out[("thresholding_curves_clean" if errors else "thresholding_curves_at_mean")] = {
            m: [(q.features, round(q.faithfulness, 3)) for q in curves[m][errors]] for m in ("attribution", "ig")}
    return out


def test_mask_against_thresholding(report):
    from engine.models import load_model

    figures: dict = {}
    lm = load_model("default", device="cpu") if TASKS else None
    for task in TASKS:
        figures[f"default/{task}"] = _compare(lm, DEFAULT_SITES, task, None, [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0],
                                              150)
        report("mask_circuits", figures)
    if os.environ.get("BENCH_MASK_SMOLLM2", "1") != "0":
        lm = load_model("smollm2-135m", device="cpu")
        figures["smollm2/was_were"] = _compare(lm, SMOLLM2_SITES, "was_were", SMOLLM2_PAIRS, SMOLLM2_LAMBDAS,
                                               SMOLLM2_STEPS, settings=(False,))
    report("mask_circuits", figures)
