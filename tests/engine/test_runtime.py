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
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(24):
    if i == 12:  # the heap has grown to its size by now
        before = faults()
    torch.empty(16 << 20, dtype=torch.float32).fill_(1.0)  # 64 MiB, freed at once
print(applied, faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_big_blocks_are_reused_not_faulted_in_again():
    def faults(mode: str) -> int:
        """Minor page faults of the last 12 of 24 allocations of 64 MiB."""
        out = subprocess.run([sys.executable, "-c", SNIPPET, mode], capture_output=True, text=True, check=True)
        applied, count = out.stdout.split()
        assert applied == str(mode == "keep")
        return int(count)

    assert faults("plain") > 12 * 16_000  # each faults its 16,384 pages in again
    assert faults("keep") < 3 * 16_384  # reused
