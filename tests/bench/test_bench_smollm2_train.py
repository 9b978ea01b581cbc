"""A real-model training run, as a user types it: `saescope train --model smollm2-135m`
on `blocks.3.hook_resid_post` for 200k tokens (issue: any model, any SAE). Prints the
wall time, the run's own tokens/s and the peak resident memory of the process
(target: under 4 GB), then the top examples of a live feature from `saescope inspect`.

`BENCH_SMOLLM2_TOKENS` changes the token count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.models import smollm2_gguf
from tests.conftest import REPO

pytestmark = [pytest.mark.timeout(0),
              pytest.mark.skipif(smollm2_gguf() is None, reason="the smollm2 extra is not installed")]

TOKENS = int(os.environ.get("BENCH_SMOLLM2_TOKENS", 200_000))


def _peak_rss_gb(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `cmd` in a fresh process; its wall time and its peak RSS (GiB)."""
    script = ("import resource, subprocess, sys, json, time; t = time.time(); "
              "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
              "print(json.dumps({'rc': r.returncode, 'wall': time.time() - t, 'err': r.stderr[-2000:], "
              "'out': r.stdout[-4000:], 'rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    r = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True, cwd=REPO)
    data = json.loads(r.stdout)
    assert data["rc"] == 0, data["err"]
    return data["wall"], data["rss_kb"] / 2**20, data


def test_smollm2_training_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "engine", "train", "--model", "smollm2-135m", "--hook",
           "blocks.3.hook_resid_post", "--tokens", str(TOKENS), "--d-sae", "1024", "--batch-size", "1024",
           "--eval-tokens", "4096", "--out", str(out)]
    wall, rss, _ = _peak_rss_gb(cmd)
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    result = json.loads((out / "eval.json").read_text())
    print(f"\nsmollm2-135m blocks.3.hook_resid_post, {TOKENS:,} tokens: {wall:.0f} s wall, "
          f"{records[-1]['tokens_per_s']:.0f} tokens/s (run's own rate), peak RSS {rss:.2f} GiB; "
          f"EV {result['explained_variance']:.3f}, L0 {result['l0']:.1f}, CE score {result['ce_loss_score']:.3f}")
    from safetensors.torch import load_file

    wall, rss, data = _peak_rss_gb([sys.executable, "-m", "engine", "inspect", str(out), "0", "--tokens",
                                    "32768", "--json"])
    index = load_file(str(next((out / "index").glob("*.safetensors"))))
    live = int(index["fire_count"].argmax())
    page = json.loads(subprocess.run([sys.executable, "-m", "engine", "inspect", str(out), str(live), "--json"],
                                     capture_output=True, text=True, cwd=REPO, check=True).stdout)
    print(f"index + inspect: {wall:.0f} s, peak RSS {rss:.2f} GiB; feature {live} top examples:")
    for ex in page["examples"][:3]:
        print("   ", repr("".join(ex["tokens"])))
