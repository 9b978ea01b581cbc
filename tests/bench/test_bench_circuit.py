"""Feature circuits on the shipped tasks and circuit sites (issue 13's figures).

For each shipped task, with the default circuit sites (`resid_pre-topk`,
`attn_out-topk`, `mlp_out-topk` on the default model):
- the time to find a circuit (node effects, the circuit at a threshold, its edges)
  by attribution and by integrated gradients, against the naive exact loop over the
  same nodes (one patched forward pass per node) and over the same edges (two per edge);
- the sweep's time, and from it the node counts where faithfulness reaches 0.5 and
  0.8, with error nodes and without, and the completeness of those circuits;
- rank agreement (Spearman) of attribution and IG node effects with exact effects on
  a sample of nodes (the 20 largest and 20 drawn from the rest), and of edge effects
  with exact two-node ablations on the circuit's 20 largest edges.

Run: `pytest -s tests/bench/test_bench_circuit.py` (figures in tests/bench/results/circuit.json).
"""

from __future__ import annotations

import os
import random
import time

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)

SITES = [str(REPO / "weights/saes" / n) for n in
         os.environ.get("BENCH_SITES", "resid_pre-topk,attn_out-topk,mlp_out-topk").split(",")]
TASKS = os.environ.get("BENCH_TASKS", "was_were,close_paren,from_import").split(",")


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return round(float(spearmanr(a, b).statistic), 3)


def _at(curve, nodes):
    return next((p for p in curve if p.nodes == nodes), None)


def test_circuits_on_the_shipped_tasks(report):
    from engine.circuits import effects as fx
    from engine.circuits.discover import CircuitBuilder
    from engine.circuits.evaluate import keep_masks
    from engine.circuits.tasks import load_task
    from engine.corpus import corpus_for
    from engine.inspect import SaeView
    from engine.models import load_model
    from engine.protocol import CircuitFindParams

    torch.set_grad_enabled(False)
    lm = load_model("default")
    views = [SaeView(lm, p, corpus=corpus_for(None, lm)) for p in SITES]
    figures: dict = {"sites": [os.path.basename(p) for p in SITES], "threads": torch.get_num_threads()}
    for name in TASKS:
        task = load_task(name, lm)
        row: dict = {}
        for method in ("attribution", "ig"):
            params = CircuitFindParams(task=name, saes=SITES, method=method, points=20)
            t0 = time.perf_counter()
            b = CircuitBuilder(lm, views, SITES, task, params)
            t_effects = time.perf_counter() - t0
            t0 = time.perf_counter()
            b.sweep()
            t_sweep = time.perf_counter() - t0
            thr = b.default_threshold(True)
            t0 = time.perf_counter()
            found = b.circuit(thr, True)
            t_circuit = time.perf_counter() - t0
            c = found.crossings
            curve, feats = found.curve, found.curve_features
            row[method] = {
                "find_s": round(t_effects + t_circuit, 2), "effects_s": round(t_effects, 2),
                "circuit_and_edges_s": round(t_circuit, 2), "sweep_s": round(t_sweep, 2),
                "circuit_nodes": found.figures.nodes, "circuit_edges": len(found.edges),
                "faithfulness": round(found.figures.faithfulness, 3),
                "completeness": round(found.figures.completeness, 3),
                "faith_0.5_nodes": c.half, "faith_0.8_nodes": c.most,
                "faith_0.5_nodes_features_only": c.half_features, "faith_0.8_nodes_features_only": c.most_features,
                "completeness_at_0.5": _at(curve, c.half) and round(_at(curve, c.half).completeness, 3),
                "completeness_at_0.8": _at(curve, c.most) and round(_at(curve, c.most).completeness, 3),
                "completeness_at_0.5_features_only": _at(feats, c.half_features)
                and round(_at(feats, c.half_features).completeness, 3),
                "completeness_at_0.8_features_only": _at(feats, c.most_features)
                and round(_at(feats, c.most_features).completeness, 3),
                "best_features_only_within_300": max((round(p.faithfulness, 3) for p in feats if p.nodes <= 300),
                                                     default=None),
                "curve": [(p.nodes, round(p.faithfulness, 3), round(p.completeness, 3)) for p in curve],
                "curve_features_only": [(p.nodes, round(p.faithfulness, 3), round(p.completeness, 3)) for p in feats],
            }
            if method == "attribution":
                attribution_builder, attribution_found = b, found
            else:
                ig_builder = b
        # exact effects: a sample of nodes; the naive loop over every node the circuit search scored
        b = attribution_builder
        nodes = b.kept_nodes(keep_masks(b.effects, 0.0, True))
        rng = random.Random(0)
        sample = nodes[:20] + rng.sample(nodes[20:], min(20, len(nodes) - 20))
        args = (b.stack, b.disc.clean, b.metric, b.clean, b.patch)
        base = b.stack.metric(b.disc.clean, b.metric)
        exact = [fx.exact_node(*args, n, base) for n in sample]
        row["spearman_attribution_vs_exact"] = _spearman([b.estimate(n) for n in sample], exact)
        row["spearman_ig_vs_exact"] = _spearman([ig_builder.estimate(n) for n in sample], exact)
        t0 = time.perf_counter()
        for n in nodes:
            fx.exact_node(*args, n, base)
        row["naive_exact_nodes"] = len(nodes)
        row["naive_exact_nodes_s"] = round(time.perf_counter() - t0, 2)
        edges = sorted(attribution_found.edges, key=lambda e: -abs(e.effect))[:20]
        checked = b.verify([], [[e.source, e.target] for e in edges])
        row["spearman_edges_vs_exact"] = checked.spearman_edges
        row["edges_exact_over_estimate_median"] = round(float(torch.tensor(
            [v.exact / v.estimate for v in checked.edges if abs(v.estimate) > 1e-6]).median()), 3)
        circuit_nodes = b.kept_nodes(keep_masks(b.effects, b.default_threshold(True), True))
        pairs = [(u, d) for d in circuit_nodes for u in circuit_nodes if u.site < d.site and d.feature != fx.ERROR]
        pairs += [(u, None) for u in circuit_nodes]
        t0 = time.perf_counter()
        for u, d in pairs:
            fx.exact_edge(*args, u, d, base)
        row["naive_exact_edges"] = len(pairs)
        row["naive_exact_edges_s"] = round(time.perf_counter() - t0, 2)
        figures[name] = row
    report("circuit", figures)
