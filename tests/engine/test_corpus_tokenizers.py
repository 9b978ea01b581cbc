"""One corpus per tokenizer: the shipped documents in any tokenizer's ids, cached, and
a clear refusal of a corpus made with another tokenizer than the model's."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from engine.corpus import (check_tokenizer, default_context, load_corpus, load_shard, retokenized_shard,
                           tokenizer_hash)
from engine.errors import UserError
from engine.paths import CORPUS_DIR
from tests.conftest import run_saescope


@pytest.fixture(scope="module")
def other_tokenizer():
    """A small byte-level BPE, trained here on a little of the corpus: not the default's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = "def __init__(self, name):\n    return self.name\nIt is a truth universally acknowledged.\n"
    tok.train_from_iterator([text] * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so the corpus is tokenized again only where a test asks."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAESCOPE_CACHE", str(folder))
        yield folder


def test_the_default_tokenizer_gets_the_shipped_shard(default_model):
    shard = load_shard()
    assert shard.tokenizer_hash == tokenizer_hash(default_model.tokenizer)
    assert retokenized_shard(default_model.tokenizer).identity == shard.identity


def test_another_tokenizer_gets_the_same_documents_in_its_ids(other_tokenizer, default_model, cache):
    shard = load_shard()
    c = retokenized_shard(other_tokenizer)
    assert c.tokenizer_hash == tokenizer_hash(other_tokenizer) != shard.tokenizer_hash
    assert c.identity != shard.identity and c.name == shard.name
    # same documents, same held-out split, each opening with the separator
    assert [(d.doc_id, d.split) for d in c.documents] == [(d.doc_id, d.split) for d in shard.documents]
    assert (c.tokens[[d.start for d in c.documents]] == c.eos).all()
    # the same text: decode a document both ways (with each tokenizer) and compare
    for i in (0, 7, len(shard.documents) - 1):
        a, b = shard.documents[i], c.documents[i]
        text_default = default_model.tokenizer.decode(shard.tokens[a.start + 1:a.end].tolist())
        text_other = other_tokenizer.decode(c.tokens[b.start + 1:b.end].tolist())
        assert text_other == text_default and len(text_default) > 100
    assert c.windows(64, split="held_out", max_tokens=64 * 4).shape == (4, 64)


def test_the_retokenized_corpus_is_cached_and_a_damaged_cache_is_rebuilt(other_tokenizer, cache):
    first = retokenized_shard(other_tokenizer)
    folder = next((cache / "corpus").iterdir())
    t0 = time.perf_counter()
    again = retokenized_shard(other_tokenizer)
    assert time.perf_counter() - t0 < 2.0  # read, not tokenized again
    assert (again.tokens == first.tokens).all() and again.identity == first.identity
    (folder / "shard.safetensors").write_bytes(b"not a safetensors file")
    rebuilt = retokenized_shard(other_tokenizer)
    assert (rebuilt.tokens == first.tokens).all()


def test_a_corpus_from_another_tokenizer_is_refused(other_tokenizer, default_model, cache):
    lm = SimpleNamespace(tokenizer=other_tokenizer, name="other")
    with pytest.raises(UserError, match="another tokenizer"):
        check_tokenizer(load_shard(), lm)
    with pytest.raises(UserError, match="another tokenizer"):  # a saved shard folder passed as --corpus
        check_tokenizer(load_corpus(str(CORPUS_DIR), other_tokenizer), lm)
    assert check_tokenizer(load_corpus(None, other_tokenizer), lm).tokenizer_hash == tokenizer_hash(other_tokenizer)


def test_train_refuses_a_corpus_of_another_tokenizer(other_tokenizer, default_model, tmp_path, cache):
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    other = retokenized_shard(other_tokenizer)
    cfg = TrainConfig(hook="blocks.0.hook_mlp_out", d_sae=64, tokens=4096, batch_size=1024)
    with pytest.raises(UserError, match="another tokenizer"):
        train([cfg], [tmp_path / "run"], lm=default_model, corpus=other)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_context_defaults_and_bounds():
    assert default_context(128) == 128
    assert default_context(8192) == 256
    assert default_context(8192, 1024) == 1024
    with pytest.raises(UserError, match="longer than the model's context"):
        default_context(128, 129)
    with pytest.raises(UserError, match="at least 2"):
        default_context(128, 1)


def test_cli_context_longer_than_the_model_is_one_clear_line():
    r = run_saescope("eval", "weights/saes/mlp_out-topk", "--context", "4096", "--tokens", "1024")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "longer than the model's context" in r.stderr


def test_cli_corpus_of_another_tokenizer_is_one_clear_line(tmp_path, other_tokenizer, cache):
    """A shard folder made with another tokenizer, passed to a default-model command."""
    retokenized_shard(other_tokenizer)
    folder = next((cache / "corpus").iterdir())
    r = run_saescope("eval", "weights/saes/mlp_out-topk", "--corpus", str(folder), "--tokens", "1024")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "another tokenizer" in r.stderr
