"""Run under torchrun by `test_bench_distributed_train.py`: the time of the two
collectives a data-parallel training step makes, at the sizes it makes them.

- the gradient all-reduce: every parameter of a TopK SAE (2 * d_in * d_sae + d_sae +
  d_in floats) plus the d_sae firing counts, once per step;
- the activation exchange: `all_to_all_single` of one step's rows, each rank
  sending (N-1)/N of the rows the others train on ([G/N rows, d_in] float32 each).

Prints one JSON line (rank 0): milliseconds per call (median of repeats) and bytes.
"""

import json
import statistics
import sys
import time

import torch
import torch.distributed as dist


def timed(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        dist.barrier()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main(d_in: int, d_sae: int, batch: int) -> None:
    dist.init_process_group("gloo")
    n, r = dist.get_world_size(), dist.get_rank()
    grads = torch.randn(2 * d_in * d_sae + d_sae + d_in + d_sae)
    local = batch // n
    rows = torch.randn(local, d_in)  # what this rank's block of windows produced for one step
    split = [local // n + (1 if q < local % n else 0) for q in range(n)]
    out = torch.empty_like(rows)
    figures = {
        "ranks": n,
        "allreduce_ms": timed(lambda: dist.all_reduce(grads)),
        "allreduce_bytes": grads.numel() * 4,
        "exchange_ms": timed(lambda: dist.all_to_all_single(out, rows, split, split)),
        "exchange_bytes_per_rank": (local - split[r]) * d_in * 4,  # what leaves this rank
    }
    if r == 0:
        print(json.dumps(figures), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
