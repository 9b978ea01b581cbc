"""The corpus module: the shipped shard and a user's own text files."""

from __future__ import annotations

import numpy as np
import pytest

from engine.corpus import from_text_files, load_shard, tokenizer_sha1
from engine.errors import UserError
from engine.paths import DEFAULT_MODEL_DIR


def test_shard_has_documents_held_out_split_and_enough_tokens():
    c = load_shard(tokenizer_path=DEFAULT_MODEL_DIR / "tokenizer.json")
    assert len(c) >= 2_000_000
    assert {d.split for d in c.documents} == {"train", "held_out"}
    assert {d.source for d in c.documents} == {"python-stdlib", "jane-austen"}
    starts = np.array([d.start for d in c.documents])
    assert (c.tokens[starts] == c.eos).all()  # every document opens with end-of-text
    assert c.documents[-1].end == len(c)
    assert c.identity == f"shard:{tokenizer_sha1()}"


def test_windows_start_with_bos_and_are_deterministic():
    c = load_shard()
    w = c.windows(128, split="held_out", max_tokens=128 * 50)
    assert w.shape == (50, 128) and (w[:, 0] == c.eos).all()
    held = c.split("held_out")
    assert w[0, 1:].tolist() == held[:127].tolist()
    assert w[1, 1:].tolist() == held[127:254].tolist()
    assert (c.windows(128, split="held_out", max_tokens=128 * 50) == w).all()


def test_text_files_and_empty_input(tmp_path, default_model):
    (tmp_path / "a.txt").write_text("Hello there. " * 50)
    (tmp_path / "b.py").write_text("def f(x):\n    return x\n" * 20)
    c = from_text_files([tmp_path], default_model.tokenizer)
    assert [d.doc_id.rsplit("/", 1)[1] for d in c.documents] == ["a.txt", "b.py"]
    assert c.windows(32).shape[1] == 32
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        from_text_files([tmp_path / "empty"], default_model.tokenizer)
    with pytest.raises(UserError, match="no such file"):
        from_text_files([tmp_path / "missing"], default_model.tokenizer)
