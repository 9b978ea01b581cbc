"""Recipe: how long two seeds must train before they learn the same features.

`saescope recipe seed-curve RUN_A RUN_B` (or `python -m engine.recipes.seed_curve`)
matches two runs' decoder snapshots one-to-one at every step both have (the Hungarian
assignment of `engine.train.emergence.shared_curve`) and writes the fraction of
features they share above a cosine threshold, against training tokens, to
`weights/saes/SEEDS.md` and `weights/saes/seeds.json`. The runs are the recipe's two
TopK seeds (`engine/recipes/default_saes.py`), trained with snapshots; the snapshots
themselves are not shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from engine.paths import WEIGHTS_DIR
from engine.protocol import SHARED_COSINE


def main(argv: list[str] | None = None) -> None:
    from engine.train.config import TrainConfig
    from engine.train.emergence import shared_curve

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--threshold", type=float, default=SHARED_COSINE)
    p.add_argument("--target", type=float, default=0.4, help="the shared fraction whose crossing is reported")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR / "saes")
    a = p.parse_args(argv)
    cfg = TrainConfig.load(a.run_a)
    curve = shared_curve(a.run_a, a.run_b, a.threshold)
    crossing = next((q.tokens for q in curve if q.shared >= a.target), None)
    lines = ["# Features two seeds share, against training tokens", "",
             f"`saescope recipe seed-curve` on two TopK runs differing only in seed (`{cfg.hook}`, d_sae "
             f"{cfg.d_sae}, k {cfg.k}, lr {cfg.lr:g}, {cfg.tokens:,} tokens, the last "
             f"{cfg.decay_fraction:.0%} with the learning rate decaying): at each decoder snapshot, the two "
             f"decoders matched one-to-one (Hungarian, by cosine); shared = matched at cosine >= "
             f"{a.threshold:g}.", "",
             f"Shared fraction first at or above {a.target:.0%}: "
             + (f"after {crossing:,} tokens." if crossing is not None else "not reached."), "",
             "| tokens | shared | mean matched cosine |", "|---|---|---|"]
    lines += [f"| {q.tokens:,} | {q.shared:.3f} | {q.mean_cosine:.3f} |" for q in curve]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "SEEDS.md").write_text("\n".join(lines) + "\n")
    (a.out / "seeds.json").write_text(json.dumps({"threshold": a.threshold, "target": a.target,
                                                  "crossing_tokens": crossing,
                                                  "curve": msgspec.to_builtins(curve)}, indent=2) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
