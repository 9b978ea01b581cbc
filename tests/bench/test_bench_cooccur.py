"""The co-occurrence count's cost in the index pass (issue: co-activation graphs): the
same index pass with and without it, on the shipped TopK SAE (1024 features) and on a
random TopK SAE of 16k features, with the table's memory and the peak RSS.

Each configuration runs in its own process (peak RSS is per process), alternating
plain and counted runs, best of `REPS`. "Plain" replaces `CooccurrenceCounter.add`
with a no-op, so everything else in the pass is the same code.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

TOKENS = int(os.environ.get("BENCH_COOC_TOKENS", 1 << 18))
WIDE_TOKENS = int(os.environ.get("BENCH_COOC_WIDE_TOKENS", 1 << 16))  # the 16k SAE's pass is slow on a CPU
REPS = 2
MEASURE = """
import json, resource, sys, time, torch
import engine.cooccur as cooccur
from engine.models import load_model
from engine.inspect import SaeView
from engine.index import build_index
sae_dir, tokens, counted = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
lm = load_model("default", device="cpu")
view = SaeView(lm, sae_dir, index_tokens=tokens)
table = {}
if counted:
    finish = cooccur.CooccurrenceCounter.finish
    def measured(self):
        table["bytes"] = self.nbytes()
        out = finish(self)
        table["pairs"] = len(out["cooc_counts"])
        return out
    cooccur.CooccurrenceCounter.finish = measured
else:
    cooccur.CooccurrenceCounter.add = lambda self, *a: None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
build_index(lm, view.sae, view.hook, view.windows, view.identity)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "tokens": int(view.windows[:, 1:].numel()), "rss_before_mb": base // 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, **table}))
"""


def _run(sae_dir, counted: bool, tokens: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(sae_dir), str(tokens), "1" if counted else "0"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(sae_dir, tokens: int) -> dict:
    plain, counted = [], []
    for _ in range(REPS):
        plain.append(_run(sae_dir, False, tokens))
        counted.append(_run(sae_dir, True, tokens))
    best_plain, best_counted = min(plain, key=lambda r: r["seconds"]), min(counted, key=lambda r: r["seconds"])
    return {"tokens": best_plain["tokens"], "plain_s": round(best_plain["seconds"], 2),
            "with_cooccurrence_s": round(best_counted["seconds"], 2),
            "cost_ratio": round(best_counted["seconds"] / best_plain["seconds"], 3),
            "all_plain_s": [round(r["seconds"], 2) for r in plain],
            "all_counted_s": [round(r["seconds"], 2) for r in counted],
            "table_mb": round(best_counted["bytes"] / 2**20, 1), "pairs": best_counted["pairs"],
            "peak_rss_plain_mb": best_plain["peak_rss_mb"], "peak_rss_counted_mb": best_counted["peak_rss_mb"]}


def _random_topk_sae(folder, d_sae: int, k: int = 32):
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=256, d_sae=d_sae, k=k, metadata=SAEMetadata(
        hook_name="blocks.0.hook_mlp_out", model_name="mini-gelu-1l", context_size=128, prepend_bos=True)))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / 16)
        sae.W_dec.copy_(sae.W_enc.T)
    sae.save_model(folder)
    return folder


def test_cooccurrence_cost_and_memory(report, tmp_path):
    figures = {"machine_threads": os.cpu_count(),
               "shipped_topk_1024": _compare(REPO / "weights" / "saes" / "mlp_out-topk", TOKENS)}
    report("cooccurrence", figures)  # kept even if the wide run is stopped
    figures["random_topk_16384"] = _compare(_random_topk_sae(tmp_path / "topk16k", 16384), WIDE_TOKENS)
    report("cooccurrence", figures)
