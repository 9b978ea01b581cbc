"""The one way the engine reads text: the shipped corpus, a user's files, or a local dataset.

Every source becomes a `TokenCorpus`: a packed token stream in which each document
starts with the end-of-text token, plus the document table and the hash of the
tokenizer that made it. Windows for the model are `[BOS] + (context - 1)` stream
tokens, so analyses see text the way the model did.

`corpus_for(spec, lm)` is what every command calls: it gives the corpus in the
model's own tokens and refuses one made with another tokenizer.

Notes
- The shipped shard holds the default tokenizer's ids (uint16, vocab 4096). For any
  other tokenizer the same documents are decoded back to text (byte-level BPE is
  lossless) and tokenized again, once, into a cache folder keyed by the
  tokenizer's hash and the shard's identity; documents keep their held-out split.
- A tokenizer's hash covers what decides the ids (model, normalizer,
  pre-tokenizer, added tokens), not how a wrapper adds BOS or decodes.
- `default_context` bounds windows for long-context models: attention memory
  grows with the square of the window, and SAE work needs no more than a few
  hundred tokens of context.
- `windows()` is deterministic: the same split and n_ctx always give the same rows,
  which is what lets an index or an eval name the exact tokens it used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.paths import CORPUS_DIR, DEFAULT_MODEL_DIR


@dataclass
class Document:
    doc_id: str
    source: str
    split: str  # "train" or "held_out"
    start: int
    end: int


@dataclass
class TokenCorpus:
    """A packed token stream with its documents (`start`/`end` index `tokens`)."""

    name: str
    tokens: np.ndarray
    documents: list[Document]
    eos: int
    identity: str = field(default="")
    tokenizer_hash: str = field(default="")  # `tokenizer_hash()` of the tokenizer that made it

    def split(self, split: str | None) -> np.ndarray:
        """The packed stream of one split (`None`: everything)."""
        if split is None:
            return self.tokens.astype(np.int64)
        parts = [self.tokens[d.start:d.end] for d in self.documents if d.split == split]
        if not parts:
            raise UserError(f"corpus {self.name!r} has no {split!r} documents")
        return np.concatenate(parts).astype(np.int64)

    def windows(self, n_ctx: int, split: str | None = None, max_tokens: int | None = None):
        """`[BOS] + (n_ctx-1)`-token rows as a LongTensor, at most `max_tokens` tokens in all."""
        import torch

        if n_ctx < 2:
            raise UserError(f"a context of {n_ctx} tokens is too short: use at least 2")
        stream = self.split(split)
        body = n_ctx - 1
        n = len(stream) // body
        if max_tokens is not None:
            n = min(n, max(1, max_tokens // n_ctx))
        if n == 0:
            raise UserError(f"corpus {self.name!r} is empty or shorter than one {n_ctx}-token window")
        rows = torch.from_numpy(stream[: n * body].reshape(n, body).copy())
        return torch.cat([torch.full((n, 1), self.eos, dtype=torch.long), rows], dim=1)

    def __len__(self) -> int:
        return len(self.tokens)


DEFAULT_CONTEXT = 256  # the longest window used unless `--context` asks for more
_SHARD_STEM = "shard"


def tokenizer_sha1(path: Path = DEFAULT_MODEL_DIR / "tokenizer.json") -> str:
    """SHA-1 of a tokenizer.json file (what the shipped shard records)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """A hash of what decides a tokenizer's ids; accepts a Hugging Face tokenizer or a
    `tokenizers.Tokenizer`."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):  # a slow tokenizer: its vocabulary decides the ids
        return hashlib.sha1(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    spec = json.loads(backend.to_str())
    added = sorted((t["id"], t["content"]) for t in spec.get("added_tokens") or [])
    keep = {k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer")}
    return hashlib.sha1(json.dumps([keep, added], sort_keys=True).encode()).hexdigest()


def default_context(n_ctx: int, context: int | None = None) -> int:
    """The window length for a model with context `n_ctx`: `context`, checked, or
    `min(n_ctx, DEFAULT_CONTEXT)`."""
    if context is None or context == 0:
        return min(n_ctx, DEFAULT_CONTEXT)
    if context < 2:
        raise UserError(f"--context must be at least 2 tokens, got {context}")
    if context > n_ctx:
        raise UserError(f"--context {context} is longer than the model's context ({n_ctx} tokens)")
    return context


def check_tokenizer(corpus: TokenCorpus, lm) -> TokenCorpus:
    """`corpus` if it was made with `lm`'s tokenizer, else a `UserError`."""
    if corpus.tokenizer_hash and corpus.tokenizer_hash != tokenizer_hash(lm.tokenizer):
        raise UserError(f"corpus {corpus.name!r} was tokenized with another tokenizer than "
                        f"{lm.name}'s: its token ids would be meaningless to this model")
    return corpus


def load_shard(folder: Path = CORPUS_DIR, tokenizer_path: Path | None = None) -> TokenCorpus:
    """The shipped, tokenized corpus shard."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta_path, shard_path = folder / "documents.json", folder / "shard.safetensors"
    if not meta_path.exists() or not shard_path.exists():
        raise UserError(f"corpus shard missing in {folder}: run `saescope recipe default-model`")
    try:
        meta = json.loads(meta_path.read_text())
        tokens = load_file(str(shard_path))["tokens"]
    except (json.JSONDecodeError, SafetensorError, KeyError, OSError) as e:
        raise UserError(f"corpus shard in {folder} is corrupt ({e})") from None
    if tokenizer_path is not None and meta.get("tokenizer_sha1") != tokenizer_sha1(tokenizer_path):
        raise UserError(f"corpus shard in {folder} was made with another tokenizer")
    docs = [Document(d["id"], d["source"], d["split"], d["start"], d["end"]) for d in meta["documents"]]
    if "tokenizer_hash" in meta:  # a shard tokenized again for another model (see `retokenized_shard`)
        return TokenCorpus(_SHARD_STEM, tokens, docs, int(meta["eos"]), identity=meta["identity"],
                           tokenizer_hash=meta["tokenizer_hash"])
    return TokenCorpus(_SHARD_STEM, tokens, docs, int(meta["eos"]), identity=f"shard:{meta['tokenizer_sha1']}",
                       tokenizer_hash=_default_tokenizer_hash(folder, meta["tokenizer_sha1"]))


def _default_tokenizer_hash(folder: Path, sha1: str) -> str:
    """The `tokenizer_hash` of the tokenizer that made the shipped shard."""
    from tokenizers import Tokenizer

    path = DEFAULT_MODEL_DIR / "tokenizer.json"
    if not path.exists() or tokenizer_sha1(path) != sha1:
        raise UserError(f"the tokenizer that made the corpus shard in {folder} is missing "
                        f"(expected {path}): run `saescope recipe default-model`")
    return tokenizer_hash(Tokenizer.from_file(str(path)))


def shard_documents(folder: Path = CORPUS_DIR) -> list[tuple[Document, str]]:
    """The shipped shard's documents as text, decoded with the tokenizer that made them."""
    from tokenizers import Tokenizer

    shard = load_shard(folder)
    tok = Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json"))
    # each document starts with its end-of-text token, which is not part of the text
    texts = tok.decode_batch([shard.tokens[d.start + 1:d.end].tolist() for d in shard.documents],
                             skip_special_tokens=False)
    return list(zip(shard.documents, texts))


def document_separator(tokenizer) -> int:
    """The token that starts each document: `<|endoftext|>` where the vocabulary has it
    (the pretraining separator even of chat models), else EOS, else BOS."""
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # an unknown token maps to the unknown id, so check the id really is that token
    if isinstance(eot, int) and tokenizer.convert_ids_to_tokens(eot) == "<|endoftext|>":
        return eot
    for tid in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tid is not None:
            return tid
    raise UserError("the tokenizer has neither an end-of-text nor a BOS token to separate documents")


def retokenized_shard(tokenizer, folder: Path = CORPUS_DIR) -> TokenCorpus:
    """The shipped shard's documents in `tokenizer`'s ids, cached after the first call."""
    from safetensors.numpy import save_file

    from engine.atomic import atomic_write_text
    from engine.paths import cache_dir

    base = load_shard(folder)
    t_hash = tokenizer_hash(tokenizer)
    if t_hash == base.tokenizer_hash:
        return base
    shard_id = base.identity.split(":", 1)[1][:12]
    out = cache_dir() / "corpus" / f"{_SHARD_STEM}-{shard_id}-{t_hash[:16]}"
    if (out / "documents.json").exists():
        try:
            return load_shard(out)
        except UserError:
            pass  # a damaged cache: make it again
    docs = shard_documents(folder)
    sep = document_separator(tokenizer)
    encoded = tokenizer([text for _, text in docs], add_special_tokens=False)["input_ids"]
    parts, table, pos = [], [], 0
    for (d, _), ids in zip(docs, encoded):
        parts.append(np.array([sep] + ids, dtype=np.int64))
        table.append({"id": d.doc_id, "source": d.source, "split": d.split, "start": pos,
                      "end": pos + len(ids) + 1})
        pos += len(ids) + 1
    tokens = np.concatenate(parts)
    tokens = tokens.astype(np.uint16 if tokens.max() < 1 << 16 else np.uint32)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"shard.safetensors.{os.getpid()}.tmp"
    save_file({"tokens": tokens}, str(tmp))
    os.replace(tmp, out / "shard.safetensors")
    meta = {"source": base.identity, "tokenizer_hash": t_hash,
            "identity": f"shard:{shard_id}:{t_hash}", "tokens": int(len(tokens)), "eos": int(sep),
            "note": "the shipped shard's documents tokenized again; each starts with its separator",
            "documents": table}
    atomic_write_text(out / "documents.json", json.dumps(meta))  # written last: marks the cache complete
    return load_shard(out)


def from_texts(named_texts: list[tuple[str, str]], tokenizer, name: str) -> TokenCorpus:
    """Tokenize `(doc_id, text)` pairs with a Hugging Face tokenizer into a corpus."""
    eos = document_separator(tokenizer)
    parts, docs, pos = [], [], 0
    digest = hashlib.sha1()
    for doc_id, text in named_texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        parts.append(np.array([eos] + ids, dtype=np.int64))
        docs.append(Document(doc_id, name, "train", pos, pos + len(ids) + 1))
        pos += len(ids) + 1
        digest.update(text.encode("utf-8", errors="replace"))
    if not parts:
        raise UserError(f"corpus {name!r} is empty")
    t_hash = tokenizer_hash(tokenizer)
    return TokenCorpus(name, np.concatenate(parts), docs, eos, identity=f"{name}:{digest.hexdigest()}:{t_hash[:16]}",
                       tokenizer_hash=t_hash)


def from_text_files(paths: list[Path], tokenizer) -> TokenCorpus:
    """A user's own text files (folders are searched for *.txt, *.md and *.py)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".md", ".py"))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no such file or folder: {p}")
    return from_texts([(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files],
                      tokenizer, name="files")


def from_hf_dataset(path: Path, tokenizer, column: str = "text", limit: int | None = None) -> TokenCorpus:
    """A dataset saved with `datasets.save_to_disk` (needs the optional `datasets`)."""
    try:
        from datasets import load_from_disk
    except ImportError:
        raise UserError("reading a Hugging Face dataset needs `pip install datasets`") from None
    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{path} is not a dataset saved with save_to_disk ({e})") from None
    if hasattr(ds, "keys"):  # a DatasetDict: take the train split, else the first
        ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
    if column not in ds.column_names:
        raise UserError(f"{path} has no column {column!r} (columns: {', '.join(ds.column_names)})")
    rows = ds[column][:limit] if limit else ds[column]
    return from_texts([(f"{Path(path).name}/{i}", t) for i, t in enumerate(rows)], tokenizer,
                      name=Path(path).name)


def load_corpus(spec: str | None, tokenizer) -> TokenCorpus:
    """`None`/`shard`: the shipped corpus in `tokenizer`'s ids; a folder with
    `dataset_info.json` or `dataset_dict.json`: a local HF dataset; a folder with a
    `shard.safetensors`: a saved shard; any other path: text files."""
    if spec in (None, "shard", "default"):
        return retokenized_shard(tokenizer)
    p = Path(spec).expanduser()
    if p.is_dir() and (p / "shard.safetensors").exists():
        return load_shard(p)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        return from_hf_dataset(p, tokenizer)
    return from_text_files([p], tokenizer)


def corpus_for(spec: str | None, lm) -> TokenCorpus:
    """The corpus `spec` (see `load_corpus`) in `lm`'s tokens, checked."""
    return check_tokenizer(load_corpus(spec, lm.tokenizer), lm)
