"""Recipe: the sparsity sweep behind the default ReLU and JumpReLU SAEs' settings.

Run `saescope recipe arch-sweep` (or `python -m engine.recipes.arch_sweep`). It trains
ReLU SAEs over L1 coefficients and JumpReLU SAEs over L0-penalty coefficients on
`blocks.0.hook_mlp_out` of the default model (JumpReLU also over its initial threshold),
all side by side from one model pass,
evaluates each (explained variance, L0, CE score, dead fraction on held-out tokens),
and writes the table to `weights/saes/SWEEP.md` and `weights/saes/sweep.json`. For each
architecture it picks the setting that meets the quality bar (explained variance
>= 0.8 at L0 < 40, under 10% dead) with the highest explained variance, else the one
nearest it, and says which; `engine/recipes/default_saes.py` trains with those.

Notes
- Same width, learning rate, batch and schedule as the default SAEs; shorter runs
  (1M tokens by default), so the chosen setting is confirmed by the full-length run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from msgspec.structs import replace

from engine.paths import WEIGHTS_DIR
from engine.recipes.default_saes import OUT
from engine.train.config import TrainConfig

# (architecture, sparsity coefficient, initial JumpReLU threshold)
# (JumpReLU at an initial threshold of 0.1 was swept over coefficients 3, 10 and 30 first:
# its L0 stayed above 350, since the threshold learns in log space at about lr per step.)
SWEEP = [("relu", 0.5, 0.1), ("relu", 1.0, 0.1), ("relu", 2.0, 0.1), ("relu", 4.0, 0.1),
         ("jumprelu", 1.0, 0.5), ("jumprelu", 1.0, 1.5), ("jumprelu", 10.0, 0.5)]
ARCHS = ("relu", "jumprelu")
BAR = {"explained_variance": 0.8, "l0": 40, "dead_fraction": 0.1}


def meets_bar(r: dict) -> bool:
    return (r["explained_variance"] >= BAR["explained_variance"] and r["l0"] < BAR["l0"]
            and r["dead_fraction"] < BAR["dead_fraction"])


def shortfall(r: dict) -> float:
    """How far a row is from the bar, each criterion relative to its bound (0: meets it)."""
    return (max(0.0, BAR["explained_variance"] - r["explained_variance"]) / BAR["explained_variance"]
            + max(0.0, r["l0"] - BAR["l0"]) / BAR["l0"]
            + max(0.0, r["dead_fraction"] - BAR["dead_fraction"]) / BAR["dead_fraction"])


def choose(rows: list[dict]) -> dict:
    """The best row of one architecture: meeting the bar with the highest EV, else the
    one nearest the bar (`shortfall`)."""
    good = [r for r in rows if meets_bar(r)]
    if good:
        return max(good, key=lambda r: r["explained_variance"])
    return min(rows, key=shortfall)


def _merge(path: Path, new: list[dict]) -> list[dict]:
    """The rows already in `sweep.json`, with this sweep's rows replacing any of the
    same settings: sweeps add up (one architecture at a time, say)."""
    key = lambda r: (r["arch"], r["coefficient"], r.get("threshold_init", 0.1), r["tokens"])  # noqa: E731
    try:
        old = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        old = []
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def main(argv: list[str] | None = None) -> None:
    from engine.train.runs import run_training_cli

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR / "saes", help="where SWEEP.md and sweep.json go")
    p.add_argument("--only", choices=ARCHS, help="sweep one architecture (its rows are added to sweep.json)")
    p.add_argument("--coefficients", type=float, nargs="+", metavar="C",
                   help="with --only: sweep these coefficients (initial threshold 0.1) instead of the table's")
    p.add_argument("--report-only", action="store_true", help="only rewrite SWEEP.md from sweep.json")
    a = p.parse_args(argv)
    if a.coefficients and not a.only:
        p.error("--coefficients needs --only (the coefficient means something else in each architecture)")
    if a.report_only:
        return write_report(a.out, json.loads((a.out / "sweep.json").read_text())["rows"], a.d_sae)
    base = TrainConfig(hook=OUT, d_sae=a.d_sae, tokens=a.tokens, k=32, lr=1e-3, checkpoint_every=0,
                       eval_tokens=131_072, snapshot_every=-1)
    sweep = [(a.only, c, 0.1) for c in a.coefficients] if a.coefficients else SWEEP
    cfgs = [replace(base, arch=arch, l1=c, threshold_init=t) for arch, c, t in sweep if a.only in (None, arch)]
    with tempfile.TemporaryDirectory(prefix="saescope-sweep-") as tmp:
        dirs = [Path(tmp) / f"{c.arch}-{c.l1:g}-{c.threshold_init:g}" for c in cfgs]
        results = run_training_cli(cfgs, dirs, resume=False, as_json=False)
    rows = [{"arch": c.arch, "coefficient": c.l1, "threshold_init": c.threshold_init, "tokens": c.tokens,
             **{k: r[k] for k in ("explained_variance", "l0", "dead_fraction", "ce_loss_score")}}
            for c, r in zip(cfgs, results)]
    write_report(a.out, _merge(a.out / "sweep.json", rows), a.d_sae)


def write_report(out: Path, rows: list[dict], d_sae: int) -> None:
    """`SWEEP.md` (the table and the choice) and `sweep.json` (the rows) in `out`."""
    tokens = sorted({r["tokens"] for r in rows})
    chosen = {arch: choose([r for r in rows if r["arch"] == arch]) for arch in ARCHS if any(r["arch"] == arch for r in rows)}
    lines = ["# Sparsity sweep of the default ReLU and JumpReLU SAEs", "",
             f"`saescope recipe arch-sweep` ({', '.join(f'{t:,}' for t in tokens)} tokens): `{OUT}`, d_sae {d_sae}, lr 1e-3, "
             f"batch 4096. ReLU: L1 coefficient; JumpReLU: coefficient of the quadratic L0 penalty "
             f"around a target L0 of 32, from an initial threshold. Bar: EV >= 0.8 at L0 < 40, under 10% "
             f"dead. Chosen: meeting the bar with the highest EV, else the nearest to it.", "",
             "| arch | coefficient | initial threshold | tokens | EV | L0 | dead | CE score | meets bar |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['coefficient']:g} | {r.get('threshold_init', 0.1):g} | {r['tokens']:,} | "
                     f"{r['explained_variance']:.3f} | {r['l0']:.1f} | "
                     f"{r['dead_fraction']:.3f} | {r['ce_loss_score']:.3f} | {'yes' if meets_bar(r) else 'no'} |")
    lines += ["", "Chosen: " + ", ".join(f"{arch} {r['coefficient']:g} (threshold {r.get('threshold_init', 0.1):g})"
                                         + ("" if meets_bar(r) else " (misses the bar)")
                                         for arch, r in chosen.items()), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "SWEEP.md").write_text("\n".join(lines))
    (out / "sweep.json").write_text(json.dumps({"rows": rows, "chosen": chosen}, indent=2) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
