"""Recipe for the embedded default SAEs on `mini-gelu-1l` (under `weights/saes/`).

Run `saescope recipe default-saes` (or `python -m engine.recipes.default_saes`).
All the SAEs train side by side from one model pass, so the recipe costs about
one run's model time plus six SAEs' optimiser time.

The set:
- `resid_mid-topk`: `blocks.0.hook_resid_mid`, the upstream site of the reference
  circuit analysis;
- `mlp_out-{relu,jumprelu,topk,batchtopk}`: `blocks.0.hook_mlp_out`, the
  downstream site, in each architecture, for comparisons;
- `mlp_out-topk-s1`: a second seed of `mlp_out-topk`, for seed comparisons;
- `resid_pre-topk`, `attn_out-topk`: with `mlp_out-topk`, the circuit sites
  (`saescope circuit`): the embedding, attention's and the MLP's outputs, whose sum
  is the whole residual stream the unembedding reads. Twice as wide (d_sae 2048) for
  a smaller error term, since a feature-only circuit mean-ablates the error terms;
  trained on 3/8 of the tokens (1.5M by default) to keep the recipe's time.

Notes
- Each folder is a finished saescope run: sae_lens's `cfg.json` and
  `sae_weights.safetensors`, `eval.json`, the run's config and its metrics file.
- Settings come from short sweeps on this model: lr 1e-3 beat 4e-4 (400k tokens);
  ReLU's L1 coefficient and JumpReLU's penalty and initial threshold from
  `saescope recipe arch-sweep` (`weights/saes/SWEEP.md`); TopK and BatchTopK use
  k = 32. ReLU and JumpReLU train on 2x the tokens (ReLU's L0 keeps falling for
  millions of tokens; JumpReLU's threshold learns in log space at about lr per
  step), the two TopK seeds on 6x (24M by default), so that
  most of their features match one-to-one (`saescope emergence mlp_out-topk
  --against mlp_out-topk-s1` on the runs' snapshots; the curve is `weights/saes/SEEDS.md`).
- d_sae 1024 (4x d_model) keeps the recipe to about half an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from msgspec.structs import replace
from pathlib import Path

from engine.paths import WEIGHTS_DIR
from engine.train.config import TrainConfig

SAES_DIR = WEIGHTS_DIR / "saes"
MID, OUT = "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"
PRE, ATTN = "blocks.0.hook_resid_pre", "blocks.0.hook_attn_out"


def default_runs(tokens: int, d_sae: int) -> dict[str, TrainConfig]:
    base = TrainConfig(hook=OUT, d_sae=d_sae, tokens=tokens, k=32, lr=1e-3, checkpoint_every=200,
                       eval_tokens=131_072)
    return {
        "resid_mid-topk": replace(base, hook=MID, arch="topk"),
        # from `saescope recipe arch-sweep` (weights/saes/SWEEP.md, 8M tokens): the ReLU nearest
        # the bar (held out: EV 0.76 at L0 30; L1 1.5 reaches EV 0.796 only at L0 49)
        "mlp_out-relu": replace(base, arch="relu", l1=2.0, tokens=tokens * 2),
        # quadratic penalty around a target L0 of k; its threshold learns slowly (a higher start
        # leaves two thirds of the features dead, SWEEP.md), so it trains twice as long
        "mlp_out-jumprelu": replace(base, arch="jumprelu", l1=1.0, tokens=tokens * 2),
        # the two seeds train long enough to share most of their features (weights/saes/SEEDS.md)
        "mlp_out-topk": replace(base, arch="topk", tokens=tokens * 6, snapshot_every=150),
        "mlp_out-topk-s1": replace(base, arch="topk", seed=1, tokens=tokens * 6, snapshot_every=150),
        "mlp_out-batchtopk": replace(base, arch="batchtopk"),
        "resid_pre-topk": replace(base, hook=PRE, arch="topk", d_sae=2 * d_sae, tokens=tokens * 3 // 8),
        "attn_out-topk": replace(base, hook=ATTN, arch="topk", d_sae=2 * d_sae, tokens=tokens * 3 // 8),
    }


def main(argv: list[str] | None = None) -> None:
    from engine.train.runs import run_training_cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--out", type=Path, default=SAES_DIR)
    p.add_argument("--only", nargs="*", help="train only these names")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    runs = default_runs(a.tokens, a.d_sae)
    if a.only:
        runs = {k: v for k, v in runs.items() if k in a.only}
    results = run_training_cli(list(runs.values()), [a.out / name for name in runs], resume=a.resume,
                               as_json=False)
    for name, r in zip(runs, results):
        print(f"{name}: EV {r['explained_variance']:.3f} L0 {r['l0']:.1f} dead {r['dead_fraction']:.3f} "
              f"CE score {r['ce_loss_score']:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
