"""SAE training throughput: 1, 2 and 4 SAEs fed from one model pass, against sae_lens's
own `LanguageModelSAETrainingRunner` on the same model, hook, SAE and token count
(run in this process, one after the other), and the fraction of this machine's
measured matmul throughput that the SAE steps reach (issue: SAE training).
"""

import json
import os
import time
from msgspec.structs import replace

import torch

from tests.bench.matmul import matmul_gflops

import pytest

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

HOOK = "blocks.0.hook_mlp_out"
TOKENS = int(os.environ.get("BENCH_TRAIN_TOKENS", 4096 * 30))
D_SAE, K, BATCH = 2048, 32, 4096


def _saescope_rate(lm, corpus, n_saes: int, tmp_path) -> float:
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    base = TrainConfig(hook=HOOK, arch="topk", d_sae=D_SAE, k=K, tokens=TOKENS, batch_size=BATCH,
                       checkpoint_every=0, eval_tokens=128 * 8)
    cfgs = [replace(base, seed=i) for i in range(n_saes)]
    dirs = [tmp_path / f"n{n_saes}" / f"s{i}" for i in range(n_saes)]
    train(cfgs, dirs, lm=lm, corpus=corpus)
    last = [json.loads(l) for l in (dirs[0] / "metrics.jsonl").read_text().splitlines()][-1]
    return last["tokens_per_s"]


def _sae_lens_rate(lm, corpus, tmp_path) -> float:
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig

    windows = corpus.windows(lm.model.cfg.n_ctx, split="train", max_tokens=TOKENS * 3)
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=lm.model.cfg.d_model, d_sae=D_SAE, k=K,
                                  normalize_activations="expected_average_only_in"),
        model_name="mini-gelu-1l", hook_name=HOOK, dataset_path="unused", is_dataset_tokenized=True,
        streaming=False, context_size=lm.model.cfg.n_ctx, training_tokens=TOKENS,
        train_batch_size_tokens=BATCH, n_batches_in_buffer=64, store_batch_size_prompts=64,
        n_batches_for_norm_estimate=8, device="cpu", logger=LoggingConfig(log_to_wandb=False),
        output_path=str(tmp_path / "sae_lens_out"), checkpoint_path=str(tmp_path / "sae_lens_ckpt"),
        verbose=False, exclude_special_tokens=[lm.tokenizer.bos_token_id],
    )
    dataset = Dataset.from_dict({"input_ids": windows.tolist()})
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=lm.model)
    t0 = time.perf_counter()
    runner.run()
    return TOKENS / (time.perf_counter() - t0)


def _sae_step_fraction(lm) -> dict:
    """Time sae_lens TopK training steps alone on ready batches; FLOPs as 3x the forward's two matmuls."""
    from sae_lens.training.sae_trainer import SAETrainer

    from engine.train.config import TrainConfig, trainer_config
    from engine.train.loop import _training_sae

    cfg = TrainConfig(hook=HOOK, arch="topk", d_sae=D_SAE, k=K, tokens=TOKENS, batch_size=BATCH)
    sae = _training_sae(cfg, lm.model.cfg.d_model, "mini-gelu-1l", 128)
    trainer = SAETrainer(trainer_config(cfg), sae, data_provider=iter(()))
    batch = torch.randn(BATCH, lm.model.cfg.d_model)
    for _ in range(2):
        trainer.step(batch)
    steps, t0 = 20, time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    dt = time.perf_counter() - t0
    flops = 12 * BATCH * lm.model.cfg.d_model * D_SAE * steps
    return {"sae_step_gflops": round(flops / dt / 1e9, 1), "sae_steps_tokens_per_s": round(steps * BATCH / dt)}


def test_training_throughput(report, tmp_path):
    from engine.corpus import load_shard
    from engine.models import load_model

    lm, corpus = load_model("default", device="cpu"), load_shard()
    figures = {"tokens_per_run": TOKENS, "d_sae": D_SAE, "k": K, "batch": BATCH, "threads": torch.get_num_threads()}
    for n in (1, 2, 4):
        rate = _saescope_rate(lm, corpus, n, tmp_path)
        figures[f"saescope_{n}_saes_tokens_per_s"] = round(rate)
        figures[f"saescope_{n}_saes_sae_tokens_per_s"] = round(rate * n)
    figures["sae_lens_runner_1_sae_tokens_per_s"] = round(_sae_lens_rate(lm, corpus, tmp_path))
    peak = matmul_gflops(m=BATCH, k=lm.model.cfg.d_model, n=D_SAE)
    step = _sae_step_fraction(lm)
    figures.update(step)
    figures["matmul_gflops_fp32"] = round(peak, 1)
    figures["sae_step_fraction_of_matmul"] = round(step["sae_step_gflops"] / peak, 3)
    report("train_throughput", figures)
