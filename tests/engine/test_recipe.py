"""The default-model recipe's parts: reproducible training, honest baselines, sources."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from engine.mini_gelu import MiniGeluConfig
from engine.recipes.mini_gelu import ngram_baselines, train_model, windows
from engine.recipes.sources import _r_character_vector, is_held_out


def test_training_is_reproducible_from_the_seed():
    cfg = MiniGeluConfig(d_vocab=64, d_model=32, d_mlp=64, n_heads=2, n_ctx=16)
    stream = np.random.default_rng(0).integers(1, 64, 5000)
    data = windows(stream, cfg.n_ctx, bos=0)
    runs = [train_model(cfg, data, data, tokens=3000, seed=7, batch=8, lr=1e-3, log=lambda m: None)
            for _ in range(2)]
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)
    assert runs[0][1]["tokens_seen"] >= 3000


def test_ngram_baselines_match_a_direct_count():
    rng = np.random.default_rng(1)
    vocab, train = 7, rng.integers(0, 7, 400)
    held = torch.from_numpy(rng.integers(0, 7, (3, 9)))
    got = ngram_baselines(train, held, vocab, prior=10.0)
    uni = Counter(train.tolist())
    big = Counter(zip(train[:-1].tolist(), train[1:].tolist()))
    p_uni = {t: (uni[t] + 1) / (len(train) + vocab) for t in range(vocab)}
    nll_u, nll_b, n = 0.0, 0.0, 0
    for row in held.tolist():
        for a, b in zip(row[:-1], row[1:]):
            nll_u -= math.log(p_uni[b])
            count_a = sum(v for (x, _), v in big.items() if x == a)
            nll_b -= math.log((big[(a, b)] + 10.0 * p_uni[b]) / (count_a + 10.0))
            n += 1
    assert got["unigram"] == pytest.approx(nll_u / n, rel=1e-9)
    assert got["bigram"] == pytest.approx(nll_b / n, rel=1e-9)


def test_held_out_split_is_stable_and_about_one_in_twenty():
    ids = [f"doc/{i}" for i in range(4000)]
    held = [i for i in ids if is_held_out(i)]
    assert 140 < len(held) < 260
    assert held == [i for i in ids if is_held_out(i)]


def test_r_character_vector_decoder():
    import struct

    def chars(s):
        b = s.encode()
        return struct.pack(">Ii", 0x00040009, len(b)) + b

    blob = (b"X\n" + struct.pack(">III", 2, 0x040000, 0x020300) + struct.pack(">Ii", 16, 3)
            + chars("EMMA") + struct.pack(">Ii", 9, -1) + chars("By Jane Austen"))
    assert _r_character_vector(blob) == ["EMMA", "", "By Jane Austen"]
