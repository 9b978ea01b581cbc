"""`engine.runtime.keep_big_blocks`: big tensors allocated again and again (each model
pass's logits) reuse their memory instead of faulting it in afresh from the kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest

SNIPPET = """
import resource, sys, torch
from engine.runtime import keep_big_blocks
applied = keep_big_blocks() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    torch.empty(16 << 20, dtype=torch.float32).fill_(1.0)  # 64 MiB, freed at once
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_big_blocks_are_reused_not_faulted_in_again():
    def faults(mode: str, n: int) -> int:
        """Minor page faults of `n` allocations (after the process's own start-up)."""
        out = subprocess.run([sys.executable, "-c", SNIPPET, mode, str(n)], capture_output=True, text=True,
                             check=True)
        applied, count = out.stdout.split()
        assert applied == str(mode == "keep")
        return int(count)

    # 12 allocations more (after the heap has grown to its size): each faults its 16,384 pages in again, unless they are reused
    plain = faults("plain", 24) - faults("plain", 12)
    kept = faults("keep", 24) - faults("keep", 12)
    assert plain > 12 * 16_000
    assert kept < 3 * 16_384
