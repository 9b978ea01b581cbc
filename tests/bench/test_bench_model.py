"""Default model forward throughput next to a bare matmul-bound estimate (issue: foundation)."""

import time

import torch

from tests.bench.matmul import matmul_gflops

import pytest

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take


def flops_per_token(cfg) -> float:
    """Matmul FLOPs of one token's forward pass (attention at the average causal length)."""
    d, m, v, n = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_ctx
    per_layer = 2 * (4 * d * d + 2 * d * m) + 2 * 2 * d * (n / 2)
    return cfg.n_layers * per_layer + 2 * d * v


def test_forward_throughput(report):
    from engine.models import load_model

    lm = load_model("default", device="cpu")
    cfg = lm.model.cfg
    tokens = torch.randint(0, cfg.d_vocab, (64, cfg.n_ctx))
    with torch.inference_mode():
        lm.model(tokens[:8])
        t0, runs = time.perf_counter(), 0
        while time.perf_counter() - t0 < 5:
            lm.model(tokens)
            runs += 1
    tok_s = runs * tokens.numel() / (time.perf_counter() - t0)
    peak = matmul_gflops(m=8192, k=256, n=1024)
    bound = peak * 1e9 / flops_per_token(cfg)
    report("model_forward", {
        "threads": torch.get_num_threads(),
        "forward_tokens_per_s": round(tok_s),
        "matmul_gflops_fp32": round(peak, 1),
        "flops_per_token": round(flops_per_token(cfg)),
        "matmul_bound_tokens_per_s": round(bound),
        "fraction_of_bound": round(tok_s / bound, 3),
    })
