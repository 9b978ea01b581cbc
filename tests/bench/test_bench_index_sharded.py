"""Sharded indexing (engine/index_distributed.py, issue 17): `saescope index` of the
shipped default SAE on 1 rank against `--distributed 2` on the same tokens, on this
machine's CPUs.

Each run is the real command in its own process (a copy of the SAE, `--rebuild`),
alternating 1 and 2 ranks, best of `REPS`. Two figures per run: the wall clock of the
whole command (model loading, per rank, included) and the index phase rank 0 reports
(`seconds` of `--json`: its share's pass, the merge, the weight tables). The 1-rank
run uses torch's default threads (one per core); each of the 2 ranks gets half of
them (OMP_NUM_THREADS, set by `--distributed`). The machine's load average is kept
beside the figures: other work on the cores changes them.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

SAE = REPO / "weights" / "saes" / "mlp_out-topk"
TOKENS = int(os.environ.get("BENCH_INDEX_SHARDED_TOKENS", 1 << 19))
REPS = 2


def _run(folder, ranks: int) -> dict:
    cmd = [sys.executable, "-m", "engine", "index", str(folder), "--tokens", str(TOKENS), "--rebuild",
           "--device", "cpu", "--json"] + (["--distributed", str(ranks)] if ranks > 1 else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "index_s": result["seconds"], "tokens": result["tokens"]}


def test_index_one_rank_vs_two(report, tmp_path):
    folder = tmp_path / "sae"
    shutil.copytree(SAE, folder, ignore=shutil.ignore_patterns("index", "metrics.jsonl"))
    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(REPS):
        for ranks in (1, 2):
            runs[ranks].append(_run(folder, ranks))
    load_after = os.getloadavg()
    best = {n: min(rs, key=lambda r: r["index_s"]) for n, rs in runs.items()}
    report("index_sharded", {
        "sae": SAE.name, "tokens": best[1]["tokens"], "cpus": os.cpu_count(), "reps": REPS,
        "one_rank_index_s": round(best[1]["index_s"], 2), "two_ranks_index_s": round(best[2]["index_s"], 2),
        "index_speedup": round(best[1]["index_s"] / best[2]["index_s"], 3),
        "one_rank_wall_s": round(min(r["wall_s"] for r in runs[1]), 2),
        "two_ranks_wall_s": round(min(r["wall_s"] for r in runs[2]), 2),
        "wall_speedup": round(min(r["wall_s"] for r in runs[1]) / min(r["wall_s"] for r in runs[2]), 3),
        "all_one_rank_index_s": [round(r["index_s"], 2) for r in runs[1]],
        "all_two_ranks_index_s": [round(r["index_s"], 2) for r in runs[2]],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    })
