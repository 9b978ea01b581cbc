"""Data-parallel training on this machine: one process against `--distributed 2`
(gloo, two ranks), on the same TopK SAE, hook and tokens, with the costs the design
note (docs/distributed.md) builds its model from.

Reported, never asserted:
- each run's rate (its own `tokens_per_s`, wall-clock over the whole run, model
  passes included) and the whole command's wall-clock (start-up included);
- the one-process run's parts per step: the model pass to the hook and the SAE
  step, each measured alone on one batch;
- the two collectives a step makes, timed at their real sizes under torchrun
  (`dist_comm.py`): the gradient all-reduce and the activation exchange.

On 2 cores, two ranks split the same two cores the one process already used (its
matmuls are multi-threaded), so expect little gain: the point is the cost model.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, saescope_cmd

pytestmark = pytest.mark.timeout(0)

HOOK = "blocks.0.hook_mlp_out"
TOKENS = int(os.environ.get("BENCH_DIST_TOKENS", 4096 * 40))
D_SAE, K, BATCH = int(os.environ.get("BENCH_DIST_D_SAE", 2048)), 32, 4096
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")  # cuda: both runs on the GPU(s) (two ranks may share one)


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    t = time.time()
    r = subprocess.run(saescope_cmd("train", "--hook", HOOK, "--d-sae", str(D_SAE), "--k", str(K), "--tokens",
                                    str(TOKENS), "--batch-size", str(BATCH), "--checkpoint-every", "0",
                                    "--eval-tokens", "1024", "--snapshot-every", "-1", "--device", DEVICE, "--out", str(out),
                                    *extra),
                       cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t
    assert r.returncode == 0, r.stderr[-3000:]
    run = out if (out / "metrics.jsonl").exists() else sorted(out.iterdir())[0]  # several runs: the first
    steps = [s for s in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if s["kind"] == "step"]
    return {"tokens_per_s": round(steps[-1]["tokens_per_s"]), "command_s": round(wall, 1)}


def _parts(d_in_out: list) -> dict:
    """The model pass and the SAE step of one batch, each alone, in this process."""
    from engine.corpus import corpus_for
    from engine.models import load_model
    from engine.train.config import TrainConfig, sae_lens_config, trainer_config
    from engine.train.sparse_step import SparseStep
    from sae_lens import TopKTrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    lm = load_model("default", device=DEVICE)
    d_in = lm.model.cfg.d_model
    d_in_out.append(d_in)
    windows = corpus_for(None, lm).windows(lm.model.cfg.n_ctx, split="train", max_tokens=BATCH + 4096)
    tokens = windows[: BATCH // (windows.shape[1] - 1) + 1].to(DEVICE)
    sync = torch.cuda.synchronize if DEVICE.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        lm.model.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=1)
        sync()
        t = time.perf_counter()
        for _ in range(3):
            lm.model.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=1)
        sync()
    model_s = (time.perf_counter() - t) / 3 * BATCH / (len(tokens) * (windows.shape[1] - 1))
    cfg = TrainConfig(hook=HOOK, d_sae=D_SAE, k=K, batch_size=BATCH, tokens=TOKENS)
    sae = TopKTrainingSAE(sae_lens_config(cfg, d_in, "default", 128, DEVICE))
    step = SparseStep(SAETrainer(trainer_config(cfg, DEVICE), sae, data_provider=iter(())))
    x = torch.randn(BATCH, d_in, device=DEVICE)
    step(x)
    sync()
    t = time.perf_counter()
    for _ in range(5):
        step(x)
    sync()
    return {"model_pass_ms_per_batch": round(model_s * 1000, 1),
            "sae_step_ms_per_batch": round((time.perf_counter() - t) / 5 * 1000, 1)}


def _collectives(d_in: int, ranks: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                        str(Path(__file__).parent / "dist_comm.py"), str(d_in), str(D_SAE), str(BATCH)],
                       cwd=REPO, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])


def test_one_rank_against_two(tmp_path, report):
    one = _run(tmp_path, "one")
    two = _run(tmp_path, "two", "--distributed", "2")
    d_in: list = []
    parts = _parts(d_in)
    comm = _collectives(d_in[0], 2)
    report("distributed_train", {
        "settings": f"TopK d_sae {D_SAE}, k {K}, global batch {BATCH}, {TOKENS} tokens, default model, {HOOK}",
        "machine": f"{os.cpu_count()} cores, {DEVICE}, gloo",
        "one_process": one, "two_ranks": two,
        "speedup": round(two["tokens_per_s"] / one["tokens_per_s"], 2),
        **parts,
        **{f"collective_{k}": v for k, v in comm.items()},
    })


def test_two_saes_side_by_side_against_spread(tmp_path, report):
    """Two TopK SAEs (seeds 0 and 1): side by side in one process, against one per rank
    (`--spread`), each rank training on whole batches from the split model pass."""
    one = _run(tmp_path, "side", "--seed", "0", "--seed", "1")
    spread = _run(tmp_path, "spread", "--seed", "0", "--seed", "1", "--distributed", "2", "--spread")
    report("distributed_train_spread", {
        "settings": f"2 x TopK d_sae {D_SAE}, k {K}, batch {BATCH}, {TOKENS} tokens, default model, {HOOK}",
        "machine": f"{os.cpu_count()} cores, {DEVICE}, gloo",
        "one_process_sae_tokens_per_s": 2 * one["tokens_per_s"], "one_process_command_s": one["command_s"],
        "spread_sae_tokens_per_s": 2 * spread["tokens_per_s"], "spread_command_s": spread["command_s"],
        "speedup": round(spread["tokens_per_s"] / one["tokens_per_s"], 2),
    })
