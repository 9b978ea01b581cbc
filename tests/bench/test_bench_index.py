"""Feature indexing throughput against the bare model-forward + SAE-encode cost on the
same tokens, and peak memory at two corpus sizes (issue: feature inspector). A feature
page's latency: `test_bench_page.py`.
"""

import os
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

SAE = os.environ.get("BENCH_SAE", str(REPO / "weights" / "saes" / "mlp_out-topk"))
MEASURE = """
import resource, sys, time, torch
from engine.models import load_model
from engine.inspect import SaeView
from engine.index import build_index
lm = load_model("default", device="cpu")
view = SaeView(lm, sys.argv[1], index_tokens=int(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
build_index(lm, view.sae, view.hook, view.windows, view.identity)
dt = time.perf_counter() - t0
print(view.windows.numel(), dt, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _index_run(tokens: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, SAE, str(tokens)], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    n, dt, base, peak = int(out[0]), float(out[1]), int(out[2]), int(out[3])
    return {"tokens": n, "seconds": round(dt, 2), "tokens_per_s": round(n / dt),
            "rss_before_mb": round(base / 1024), "peak_rss_mb": round(peak / 1024),
            "growth_mb": round((peak - base) / 1024)}


def _bare_cost(tokens: int) -> float:
    from engine.inspect import SaeView
    from engine.models import load_model

    lm = load_model("default", device="cpu")
    view = SaeView(lm, SAE, index_tokens=tokens)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(view.windows), 32):
            _, cache = lm.run_with_cache(view.windows[i:i + 32], names_filter=[view.hook], stop_at_layer=1)
            view.sae.encode(cache[view.hook][:, 1:].reshape(-1, cache[view.hook].shape[-1]))
    return view.windows.numel() / (time.perf_counter() - t0)


def test_index_throughput_and_memory(report):
    small, large = _index_run(1 << 18), _index_run(1 << 21)
    bare = _bare_cost(1 << 18)
    report("index", {"sae": SAE, "small": small, "large": large,
                     "bare_forward_plus_encode_tokens_per_s": round(bare),
                     "index_vs_bare": round(small["tokens_per_s"] / bare, 3)})

