"""The one way the engine reads text: the shipped shard, a user's files, or a local dataset.

Every source becomes a `TokenCorpus`: a packed token stream in which each document
starts with the end-of-text token, plus the document table. Windows for the model
are `[BOS] + (n_ctx - 1)` stream tokens, the same shape the default model was
trained on, so analyses see text the way the model did.

Notes
- The shard is stored as uint16 (vocab 4096) and records the SHA-1 of the tokenizer
  that made it; loading it with another tokenizer is refused rather than showing
  garbage text.
- `windows()` is deterministic: the same split and n_ctx always give the same rows,
  which is what lets an index or an eval name the exact tokens it used.
"""

from __future__ import annotations

import hashlib
import json
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


def tokenizer_sha1(path: Path = DEFAULT_MODEL_DIR / "tokenizer.json") -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


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
    if tokenizer_path is not None and meta["tokenizer_sha1"] != tokenizer_sha1(tokenizer_path):
        raise UserError(f"corpus shard in {folder} was made with another tokenizer")
    docs = [Document(d["id"], d["source"], d["split"], d["start"], d["end"]) for d in meta["documents"]]
    return TokenCorpus("shard", tokens, docs, int(meta["eos"]), identity=f"shard:{meta['tokenizer_sha1']}")


def from_texts(named_texts: list[tuple[str, str]], tokenizer, name: str) -> TokenCorpus:
    """Tokenize `(doc_id, text)` pairs with a Hugging Face tokenizer into a corpus."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if eos is None:
        raise UserError("the tokenizer has neither an end-of-text nor a BOS token to separate documents")
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
    return TokenCorpus(name, np.concatenate(parts), docs, eos, identity=f"{name}:{digest.hexdigest()}")


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
    """`None`/`shard`: the shipped shard; a folder with `dataset_info.json` or
    `dataset_dict.json`: a local HF dataset; any other path: text files."""
    if spec in (None, "shard", "default"):
        return load_shard()
    p = Path(spec).expanduser()
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        return from_hf_dataset(p, tokenizer)
    return from_text_files([p], tokenizer)
