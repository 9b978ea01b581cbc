"""Ablation-tree expansion on the default model and SAEs (issue 12: exact mode is slow).

- Exact node expansion (`TreeBuilder.expand_up`, the default 8 children with their
  descriptions; the candidates ablated in batched passes) against the naive loop, one
  forward pass per candidate (`Splice.run` with one ablation), and the largest
  difference between the two sets of effects.
- Attribution expansion against the same naive loop, and its agreement with exact.
- `tree.open` (method exact) and `tree.expand` (exact, and attribution beside it) as a
  client sees them over the real stdio protocol, at the default settings.

Two nodes per prompt: the root (candidates: the downstream SAE's active features) and
the strongest downstream feature (candidates: the upstream SAE's). Expansions are the
median of `REPEAT` runs after one (cold) run; the naive loop is timed once (seconds).
"""

import os
import statistics
import time

from tests.conftest import REPO

import pytest

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

UP = os.environ.get("BENCH_UP", str(REPO / "weights" / "saes" / "resid_mid-topk"))
DOWN = os.environ.get("BENCH_DOWN", str(REPO / "weights" / "saes" / "mlp_out-topk"))
PROMPTS = ["def __init__(self, name, value):\n        self.name = name\n        self.value",
           "It is a truth universally acknowledged, that a single man in possession of a good fortune",
           "    for i in range(len(items)):\n        if items[i] is None:\n            return",
           "Elizabeth was not much surprised, for she knew her sister"]
REPEAT = 5


def _median_s(fn, *args) -> float:
    """The median time of `REPEAT` calls of `fn(*args)`."""
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _naive_exact(splice, tokens, target, site: int, features: list[int], mode: str = "zero") -> dict[int, float]:
    """Exact effects the slow way: a clean pass, then one forward pass per candidate."""
    from engine.ablate import ERROR, Intervention

    base = float(splice.value(target, splice.run(tokens, upto=target.position)))
    out = {}
    for f in features:
        iv = Intervention(site, f, splice._error_mode(site, mode) if f == ERROR else mode)
        out[f] = float(splice.value(target, splice.run(tokens, [iv], upto=target.position))) - base
    return out


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def test_expand_timing_and_agreement(report):
    import torch

    from engine.ablate import ERROR, Target
    from engine.models import load_model
    from engine.tree import open_sites, open_tree

    lm = load_model("default", device="cpu")
    _, views = open_sites(lm, [UP, DOWN])
    rows = []
    for prompt in PROMPTS:
        tb = open_tree(lm, views, prompt, method="exact")
        T = tb.position
        feature = int(tb.clean.acts[1][T].argmax())
        nodes = [("root", {"node": {"kind": "metric"}, "children": None}, tb.metric, 1),
                 ("feature", {"node": {"kind": "feature", "site_index": 1, "feature": feature}, "children": None},
                  Target("feature", T, site=1, feature=feature), 0)]
        for name, node, target, site in nodes:
            candidates = tb.candidates(site) + [ERROR]
            t0 = time.perf_counter()
            tb.expand_up(node, "exact")
            cold = time.perf_counter() - t0
            t_exact = _median_s(tb.expand_up, node, "exact")
            t_attr = _median_s(tb.expand_up, node, "attribution")
            t0 = time.perf_counter()
            naive = _naive_exact(tb.s, tb.tokens, target, site, candidates, tb.mode)
            t_naive = time.perf_counter() - t0
            batched = tb.effects_on(target, site, "exact")
            diff = max(abs(batched[f] - naive[f]) for f in candidates)
            agree = tb.agreement(target, site)
            rows.append({"prompt": prompt[:30], "node": name, "candidates": len(candidates),
                         "naive_loop_s": round(t_naive, 3), "exact_first_s": round(cold, 3),
                         "exact_s": round(t_exact, 4), "exact_speedup": round(t_naive / t_exact, 1),
                         "attribution_s": round(t_attr, 4), "attribution_speedup": round(t_naive / t_attr, 1),
                         "max_abs_diff_vs_naive": float(f"{diff:.2e}"),
                         "spearman": round(agree["spearman"], 3), "pearson": round(agree["pearson"], 3)})
    report("ablate", {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(), "rows": rows,
                      "exact_ms": _spread([r["exact_s"] * 1000 for r in rows]),
                      "exact_speedup": _spread([r["exact_speedup"] for r in rows]),
                      "attribution_speedup": _spread([r["attribution_speedup"] for r in rows]),
                      "median_spearman_root": statistics.median(r["spearman"] for r in rows if r["node"] == "root"),
                      "median_spearman_feature": statistics.median(r["spearman"] for r in rows
                                                                   if r["node"] == "feature")})


def test_tree_requests_over_the_protocol(report):
    from tests.engine.engine_proc import EngineProcess

    engine = EngineProcess()

    def timed(rid: str, request: str, /, **params) -> tuple[float, dict]:
        """Seconds from sending `request` to its reply, and its result."""
        t0 = time.perf_counter()
        engine.request(rid, request, **params)
        reply, _ = engine.reply(rid, timeout=300)
        assert reply["status"] == "ok", reply
        return time.perf_counter() - t0, reply["result"]

    try:
        timed("load", "model.load", spec="default")
        first, _ = timed("cold", "tree.open", tree="cold", upstream=UP, downstream=DOWN, prompt=PROMPTS[0],
                         method="exact")  # opens the two SAE views too
        figures: dict = {"first_tree_open_exact_s": round(first, 3)}
        for method in ("exact", "attribution"):
            opens, expands = [], []
            for rep in range(2):
                for i, prompt in enumerate(PROMPTS):
                    name = f"{method}-{rep}-{i}"
                    t_open, opened = timed(f"o-{name}", "tree.open", tree=name, upstream=UP, downstream=DOWN,
                                           prompt=prompt, method=method)
                    child = next(i for i, c in enumerate(opened["root"]["children"]) if c["node"]["kind"] == "feature")
                    t_expand, _ = timed(f"e-{name}", "tree.expand", tree=name, path=[child], method=method)
                    opens.append(t_open * 1000)
                    expands.append(t_expand * 1000)
            figures[f"tree.open_{method}_ms"] = _spread(opens)
            figures[f"tree.expand_{method}_ms"] = _spread(expands)
    finally:
        engine.close()
    report("ablate_protocol", figures)
