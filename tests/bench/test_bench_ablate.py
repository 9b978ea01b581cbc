"""Time to expand an ablation-tree node by attribution (one forward + one backward) and
by exact ablation of every candidate feature one at a time (the naive loop), and the
agreement of the two, on the default model and SAEs (issue: ablation explorer).
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


def test_expand_timing_and_agreement(report):
    from engine.ablate import Splice, Target
    from engine.models import load_model
    from engine.tree import TreeBuilder, open_sites

    lm = load_model("default", device="cpu")
    sites, _ = open_sites(lm, [UP, DOWN])
    splice = Splice(lm, sites)
    rows = []
    for prompt in PROMPTS:
        tokens = lm.model.to_tokens(prompt)
        T = tokens.shape[1] - 1
        metric = Target("logit", T, token=int(splice.run(tokens).logits[T].argmax()))
        tb = TreeBuilder(splice, tokens, T, metric)
        for site, target in ((1, metric),):
            t0 = time.perf_counter()
            tb.effects_on(target, site, "attribution")
            t_attr = time.perf_counter() - t0
            t0 = time.perf_counter()
            tb.effects_on(target, site, "exact")
            t_exact = time.perf_counter() - t0
            agree = tb.agreement(target, site)
            # the upstream site, for the strongest downstream feature at the position
            f = int(tb.clean.acts[1][T].argmax())
            ft = Target("feature", T, site=1, feature=f)
            agree_up = tb.agreement(ft, 0)
            rows.append({"prompt": prompt[:30], "candidates": len(tb.candidates(site)),
                         "attribution_s": round(t_attr, 4), "exact_loop_s": round(t_exact, 4),
                         "ratio": round(t_exact / t_attr, 1),
                         "spearman_metric": round(agree["spearman"], 3), "pearson_metric": round(agree["pearson"], 3),
                         "spearman_feature_edge": round(agree_up["spearman"], 3),
                         "pearson_feature_edge": round(agree_up["pearson"], 3)})
    report("ablate", {"rows": rows,
                      "median_ratio": statistics.median(r["ratio"] for r in rows),
                      "median_spearman_metric": statistics.median(r["spearman_metric"] for r in rows),
                      "median_spearman_feature_edge": statistics.median(r["spearman_feature_edge"] for r in rows)})
