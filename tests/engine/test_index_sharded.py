"""Sharded indexing (engine/index_distributed.py): shares of the windows indexed apart
and merged give exactly the index of one pass over them all, in process and under a
real torchrun on 2 ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from engine.index import (CONTEXT, _Merger, build_index, finish_index, index_pass, merge_partials, sample_keys,
                          top_keys)
from engine.index_distributed import rank_share
from engine.paths import WEIGHTS_DIR
from tests.conftest import REPO

SAE = WEIGHTS_DIR / "saes" / "mlp_out-topk"  # the shipped default (1024 features)
FLOAT_SUMS = ("act_sum", "act_sq_sum", "cooc_products")  # added in another order: equal to rounding


def assert_same_index(a: dict, b: dict, meta_a: dict, meta_b: dict) -> None:
    """Every field equal: exactly, but the float sums to float rounding."""
    assert meta_a == meta_b
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if name in FLOAT_SUMS:
            assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), name
        else:
            assert torch.equal(x, y), name


# ---- in process --------------------------------------------------------------------


@pytest.fixture(scope="module")
def view(default_model):
    from engine.inspect import SaeView

    return SaeView(default_model, SAE, index_tokens=56 * 128)  # nothing is saved: build_index only


@pytest.fixture(scope="module")
def windows(view):
    """56 corpus windows, then 8 of them again: duplicated text, so maxima tie exactly."""
    return torch.cat([view.windows, view.windows[:8]])


@pytest.fixture(scope="module")
def single(view, windows):
    return build_index(view.lm, view.sae, view.hook, windows, view.identity, batch=8)


@pytest.mark.parametrize("shares", [
    [rank_share(64, 8, r, 2) for r in range(2)],
    [rank_share(64, 8, r, 3) for r in reversed(range(3))],  # merged in another order
    [(40, 64), (0, 8), (8, 40)],  # unequal shares
])
def test_merged_shares_equal_one_pass(view, windows, single, shares):
    parts = [index_pass(view.lm, view.sae, view.hook, windows, batch=8, share=s) for s in shares]
    merged = finish_index(merge_partials(parts), view.lm, view.sae, view.hook, windows, view.identity)
    assert_same_index(merged.tensors(), single.tensors(), merged.meta, single.meta)


def test_exact_ties_go_to_the_earlier_window(single):
    """Windows 56..63 repeat 0..7: wherever both of a pair are in a top list, their
    maxima are equal and the earlier window comes first, right before the repeat."""
    ties = 0
    for f in range(single.top_windows.shape[0]):
        w = single.top_windows[f].tolist()
        for slot, window in enumerate(w):
            if window >= 56 and window - 56 in w:
                ties += 1
                assert w[slot - 1] == window - 56
                assert single.top_values[f, slot] == single.top_values[f, slot - 1]
    assert ties > 50  # the corpus's duplicates do tie (else this test shows nothing)


def _lists(acts: torch.Tensor, batches: list[tuple[int, int]], k: int = 5, seed: int = 0):
    """The top and sample lists over windows `acts` [N, t, S], merged batch by batch
    in `batches` (`(lo, hi)` each) as the pass merges them."""
    d_sae = acts.shape[2]
    top, sample = _Merger(d_sae, k, True, "cpu"), _Merger(d_sae, k, False, "cpu")
    for lo, hi in batches:
        a = acts[lo:hi]
        win_max, win_pos = a.max(1)
        ids = torch.arange(lo, hi).unsqueeze(1).expand(hi - lo, d_sae)
        top.merge(top_keys(win_max, ids).T, win_max.T, ids.T, (win_pos + 1).T, a)
        sample.merge(sample_keys(win_max, ids, seed).T, win_max.T, ids.T, (win_pos + 1).T, a)
    return top, sample


def test_lists_do_not_depend_on_batches_or_shares():
    """Activations from three values only (most windows tie): the lists of any batching,
    or of shares absorbed in any order, are the same, the top list by value and then
    window, as sorting all windows gives."""
    g = torch.Generator().manual_seed(0)
    acts = torch.randint(0, 3, (60, 9, 16), generator=g).float() * 0.5 * (torch.rand(60, 9, 16, generator=g) < 0.1)
    top, sample = _lists(acts, [(i, min(60, i + 7)) for i in range(0, 60, 7)])
    for batches in ([(0, 60)], [(i, i + 1) for i in range(60)]):
        t, s = _lists(acts, batches)
        for a, b in ((t, top), (s, sample)):
            assert all(torch.equal(x, y) for x, y in zip(a.state().values(), b.state().values()))
    halves = [_lists(acts, [(lo, hi)]) for lo, hi in ((30, 60), (0, 30))]
    for which, largest, whole in ((0, True, top), (1, False, sample)):
        merged = _Merger(16, 5, largest, "cpu")
        for h in halves:
            merged.absorb(h[which].state())
        assert all(torch.equal(x, y) for x, y in zip(merged.state().values(), whole.state().values()))
    win_max = acts.max(1).values
    _, windows, _, contexts = top.finish()
    for f in range(16):
        fired = [w for w in range(60) if win_max[w, f] > 0]
        expected = sorted(fired, key=lambda w: (-win_max[w, f].item(), w))[:5]
        assert windows[f].tolist() == expected + [-1] * (5 - len(expected))
        assert (contexts[f, len(expected):] == 0).all() and contexts.shape[-1] == CONTEXT


def test_sample_keys_are_a_function_of_window_and_feature():
    ids = torch.arange(100, 164).unsqueeze(1).expand(64, 32)
    fired = torch.ones(64, 32)
    whole = sample_keys(fired, ids, seed=3)
    assert torch.equal(torch.cat([sample_keys(fired[i:i + 5], ids[i:i + 5], seed=3) for i in range(0, 64, 5)]), whole)
    assert len(whole.unique()) == whole.numel()  # no two (window, feature) pairs share a key
    assert not torch.equal(sample_keys(fired, ids, seed=4), whole)
    hashes = (whole >> 31).double() / 2**32  # uniform on [0, 1): a rough check of the hash
    assert abs(hashes.mean().item() - 0.5) < 0.03 and hashes.min() < 0.01 and hashes.max() > 0.99


def test_rank_shares_tile_the_windows_in_whole_batches():
    for n, batch, world in ((64, 8, 2), (65, 8, 3), (10, 4, 5), (1, 32, 2)):
        shares = [rank_share(n, batch, r, world) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert all(lo % batch == 0 and lo <= hi for lo, hi in shares)


# ---- the command, under torchrun ---------------------------------------------------

TOKENS = 1 << 14


def _env(tmp_path) -> dict:
    # the same thread count on both sides: a float kernel may round differently with
    # another, which would not be the merge's doing
    return {**os.environ, "HF_HUB_OFFLINE": "1", "SAESCOPE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _sae_copy(tmp_path, name: str):
    dst = tmp_path / name
    shutil.copytree(SAE, dst, ignore=shutil.ignore_patterns("index", "metrics.jsonl"))
    return dst


def _saved(folder) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(str(folder / "index" / "shard.safetensors")), json.loads((folder / "index" / "shard.json").read_text())


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=240)


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process(tmp_path):
    """The index of one process (here, as `saescope index` builds and saves it), and
    of 2 ranks by `--distributed 2` (which runs `python -m torch.distributed.run
    --standalone --nproc-per-node=2 -m engine index ...`, the command a user would
    type under torchrun): the same saved files. All on the CPU, whatever
    `SAESCOPE_TEST_DEVICE` says: on a GPU, activations round differently from one
    device to the other, which would not be the merge's doing."""
    from engine.inspect import SaeView
    from engine.models import load_model

    env, args = _env(tmp_path), ["--tokens", str(TOKENS), "--device", "cpu", "--rebuild"]
    one, three = _sae_copy(tmp_path, "one"), _sae_copy(tmp_path, "three")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1)
    try:
        SaeView(load_model("default", device="cpu"), one, index_tokens=TOKENS).ensure_index(rebuild=True)
    finally:
        torch.set_num_threads(threads)
    t1, m1 = _saved(one)
    # with --json, stdout is rank 0's one result object (only rank 0 prints) and stderr
    # only JSON events
    r = _run([sys.executable, "-m", "engine", "index", str(three), *args, "--distributed", "2", "--json"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["tokens"] == m1["tokens"]
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert any("2 ranks" in e.get("message", "") for e in events)
    t3, m3 = _saved(three)
    assert_same_index(t3, t1, m3, m1)


def test_bad_rank_count_is_a_user_error(tmp_path):
    r = _run([sys.executable, "-m", "engine", "index", str(SAE), "--distributed", "1000"], _env(tmp_path))
    assert r.returncode == 2 and "--distributed must be between" in r.stderr and "Traceback" not in r.stderr
