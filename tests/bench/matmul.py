"""This machine's measured fp32 matmul throughput, the yardstick for every benchmark."""

import time

import torch


def matmul_gflops(m: int = 4096, k: int = 256, n: int = 2048, seconds: float = 2.0) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - t0) / 1e9
