"""Recipe for the embedded default: corpus, tokenizer, `mini-gelu-1l`, corpus shard.

Run `saescope recipe default-model` (or `python -m engine.recipes.mini_gelu`). It is
offline and deterministic from `--seed`: rerun it and the model card's losses
come out the same on the same machine type.

Notes
- Training windows are `[BOS] + 127 tokens` of the packed train stream, where each
  document is preceded by `<|endoftext|>`; this is exactly what the engine feeds
  the model later (TransformerLens prepends BOS to prompts).
- Baselines are fitted on the train split and scored on the same held-out windows
  as the model, so the three numbers on the card are comparable.
- The bigram baseline is Dirichlet-smoothed towards the unigram (prior weight 10);
  the unigram is add-one smoothed. Neither is tuned on held-out text.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from engine.atomic import atomic_dir
from engine.mini_gelu import MiniGelu, MiniGeluConfig
from engine.paths import WEIGHTS_DIR
from engine.recipes import sources

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def pack(docs: list[np.ndarray], eos: int) -> np.ndarray:
    """Concatenate documents, each preceded by the end-of-text token."""
    parts = []
    for d in docs:
        parts += [np.array([eos], dtype=np.int64), d]
    return np.concatenate(parts)


def windows(stream: np.ndarray, n_ctx: int, bos: int) -> torch.Tensor:
    """Non-overlapping `[BOS] + (n_ctx-1)` windows of a packed stream."""
    body = n_ctx - 1
    n = len(stream) // body
    w = torch.from_numpy(stream[: n * body].reshape(n, body).copy())
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), w], dim=1)


def ngram_baselines(train: np.ndarray, held: torch.Tensor, vocab: int, prior: float = 10.0) -> dict:
    """Cross-entropy (nats/token) of unigram and bigram models on held-out windows."""
    t = torch.from_numpy(train)
    uni = torch.bincount(t, minlength=vocab).double() + 1.0
    p_uni = uni / uni.sum()
    big = torch.bincount(t[:-1] * vocab + t[1:], minlength=vocab * vocab).double().view(vocab, vocab)
    prev, nxt = held[:, :-1].reshape(-1), held[:, 1:].reshape(-1)
    uni_ce = -p_uni[nxt].log().mean().item()
    p_big = (big[prev, nxt] + prior * p_uni[nxt]) / (big.sum(1)[prev] + prior)
    return {"unigram": uni_ce, "bigram": -p_big.log().mean().item()}


@torch.no_grad()
def mean_loss(model: MiniGelu, data: torch.Tensor, batch: int = 64) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch):
        x = data[i:i + batch]
        logits = model(x[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += x[:, 1:].numel()
    model.train()
    return total / count


def train_model(cfg: MiniGeluConfig, train: torch.Tensor, held: torch.Tensor, tokens: int,
                seed: int, batch: int, lr: float, log=print) -> tuple[MiniGelu, dict]:
    torch.manual_seed(seed)
    model = MiniGelu(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    tokens_per_step = batch * (cfg.n_ctx - 1)
    steps = math.ceil(tokens / tokens_per_step)
    warmup = max(1, steps // 50)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)
    cursor, seen, start, recent = 0, 0, time.time(), []
    for step in range(steps):
        if cursor + batch > len(order):  # next epoch, new shuffle
            order, cursor = torch.randperm(len(train), generator=gen), 0
        x = train[order[cursor:cursor + batch]]
        cursor += batch
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.d_vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += tokens_per_step
        recent = (recent + [loss.item()])[-100:]
        if step % 100 == 0 or step == steps - 1:
            rate = seen / (time.time() - start)
            log(f"step {step}/{steps} tokens {seen} loss {sum(recent)/len(recent):.4f} "
                f"lr {lr_at(step):.2e} {rate:.0f} tok/s")
    stats = {"steps": steps, "tokens_seen": seen, "batch_tokens": tokens_per_step,
             "train_loss_last100": sum(recent) / len(recent),
             "seconds": round(time.time() - start, 1)}
    return model, stats


def build(out_dir: Path, corpus_dir: Path, tokens: int, seed: int, vocab: int = 4096,
          batch: int = 64, lr: float = 2e-3, shard_tokens: int = 2_100_000, log=print) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    docs = sources.python_stdlib_documents() + sources.austen_documents()
    held_docs = [d for d in docs if sources.is_held_out(d.doc_id)]
    train_docs = [d for d in docs if not sources.is_held_out(d.doc_id)]
    log(f"{len(docs)} documents ({len(held_docs)} held out), "
        f"{sum(len(d.text) for d in docs) / 1e6:.1f}M characters")

    tok = train_tokenizer([d.text for d in train_docs], vocab)
    eos = tok.token_to_id(EOS)
    encode = lambda ds: [np.array(e.ids, dtype=np.int64) for e in tok.encode_batch([d.text for d in ds])]
    train_ids, held_ids = encode(train_docs), encode(held_docs)
    cfg = MiniGeluConfig(d_vocab=tok.get_vocab_size())
    train_stream, held_stream = pack(train_ids, eos), pack(held_ids, eos)
    train_w = windows(train_stream, cfg.n_ctx, eos)
    held_w = windows(held_stream, cfg.n_ctx, eos)
    log(f"train stream {len(train_stream)} tokens, held-out {len(held_stream)} tokens")
    baselines = ngram_baselines(train_stream, held_w, cfg.d_vocab)
    log(f"baselines {baselines}")

    model, stats = train_model(cfg, train_w, held_w, tokens, seed, batch, lr, log)
    gen = torch.Generator().manual_seed(seed + 1)
    train_probe = train_w[torch.randperm(len(train_w), generator=gen)[: len(held_w)]]
    card = {
        "name": "mini-gelu-1l",
        "architecture": cfg.to_dict() | {"act_fn": "gelu", "normalization": "LayerNorm",
                                         "positions": "learned", "tied_embeddings": False},
        "seed": seed,
        "training": stats | {"optimizer": "AdamW(0.9, 0.95), wd 0.1", "peak_lr": lr,
                             "schedule": "linear warmup 2%, cosine to 10%"},
        "tokens_seen": stats["tokens_seen"],
        "loss_nats_per_token": {
            "train": mean_loss(model, train_probe),
            "held_out": mean_loss(model, held_w),
            "unigram_baseline_held_out": baselines["unigram"],
            "bigram_baseline_held_out": baselines["bigram"],
        },
        "corpus": {"documents": len(docs), "held_out_documents": len(held_docs),
                   "train_tokens": int(len(train_stream)), "held_out_tokens": int(len(held_stream)),
                   "sources": sources.provenance()},
        "tokenizer": {"type": "byte-level BPE", "vocab_size": cfg.d_vocab, "bos_eos": EOS},
        "licence": "weights: MIT (this project); training text: see corpus.sources",
    }
    log(json.dumps(card["loss_nats_per_token"]))

    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card_readme(card))
    write_shard(corpus_dir, held_docs, held_ids, train_docs, train_ids, eos, shard_tokens, seed,
                out_dir / "tokenizer.json")
    return card


def write_shard(corpus_dir: Path, held_docs, held_ids, train_docs, train_ids, eos: int,
                shard_tokens: int, seed: int, tokenizer_path: Path) -> None:
    """All held-out documents, then shuffled train documents up to `shard_tokens`."""
    rng = random.Random(seed)
    picks = list(zip(held_docs, held_ids, ["held_out"] * len(held_docs)))
    train = list(zip(train_docs, train_ids, ["train"] * len(train_docs)))
    rng.shuffle(train)
    total = sum(len(i) + 1 for _, i, _ in picks)
    for item in train:
        if total >= shard_tokens:
            break
        picks.append(item)
        total += len(item[1]) + 1
    tokens, index, pos = [], [], 0
    for doc, ids, split in picks:
        tokens += [np.array([eos], dtype=np.int64), ids]
        index.append({"id": doc.doc_id, "source": doc.source, "split": split,
                      "start": pos, "end": pos + len(ids) + 1})
        pos += len(ids) + 1
    arr = np.concatenate(tokens).astype(np.uint16)

    meta = {"tokenizer_sha1": hashlib.sha1(tokenizer_path.read_bytes()).hexdigest(),
            "tokens": int(len(arr)), "eos": eos, "documents": index,
            "note": "each document starts with its <|endoftext|> token; start/end index `tokens`"}
    with atomic_dir(corpus_dir) as tmp:
        save_numpy({"tokens": arr}, str(tmp / "shard.safetensors"))
        (tmp / "documents.json").write_text(json.dumps(meta) + "\n")


def model_card_readme(card: dict) -> str:
    loss = card["loss_nats_per_token"]
    return f"""# mini-gelu-1l

A 1-layer GELU transformer (d_model {card['architecture']['d_model']}, d_mlp
{card['architecture']['d_mlp']}, {card['architecture']['n_heads']} heads, context
{card['architecture']['n_ctx']}, LayerNorm, learned positions) with a
{card['tokenizer']['vocab_size']}-token byte-level BPE tokenizer, trained on
{card['tokens_seen']:,} tokens of Python standard-library source and Jane Austen's
novels. It is saescope's embedded default model, built by
`saescope recipe default-model --seed {card['seed']}`.

| loss (nats/token)           | value |
|-----------------------------|-------|
| train (sample)              | {loss['train']:.4f} |
| held-out                    | {loss['held_out']:.4f} |
| unigram baseline, held-out  | {loss['unigram_baseline_held_out']:.4f} |
| bigram baseline, held-out   | {loss['bigram_baseline_held_out']:.4f} |

Corpus: {card['corpus']['documents']} documents ({card['corpus']['held_out_documents']} held
out by a hash of their id). Sources and licences: `model_card.json`, `corpus.sources`.
Training text licences: Python source under the PSF licence; the novels are in the
public domain. Weights: MIT.
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=20_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR / "mini-gelu-1l")
    p.add_argument("--corpus-out", type=Path, default=WEIGHTS_DIR / "corpus")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    build(a.out, a.corpus_out, a.tokens, a.seed, log=lambda m: print(m, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
