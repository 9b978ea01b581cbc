"""This machine's measured fp32 matmul throughput, the yardstick for every benchmark.

The product is written into one output buffer: a fresh [m, n] result of 32 MiB or more
is a new mapping from the system each time, whose page faults would be counted as
matmul time and understate the machine."""

import time

import torch


def matmul_gflops(m: int = 4096, k: int = 256, n: int = 2048, seconds: float = 2.0) -> float:
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - t0) / 1e9
